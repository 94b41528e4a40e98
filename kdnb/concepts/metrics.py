"""Concept metrics of Cheng et al. (CVPR 2020, Eqs. 3–5), as the authors' released code computes them
(``shared/notes/estimator.md`` §3–§5).

Entropy maps are ``(N, grid, grid)`` (one map per image) or ``(N, *batch, grid, grid)`` — e.g.
``(images, checkpoints, grid, grid)`` — and a foreground mask is boolean ``(N, grid, grid)`` or ``(grid, grid)``
(the same for every image), broadcast over the batch dimensions. Images come first everywhere.

- :func:`background_baseline` — H̄, a *dataset-level* value (one per checkpoint), not one per image.
- :func:`concept_map` / :func:`count_concepts` — a concept is a cell with ``H̄ − H_g > b`` (strictly).
- :func:`lambda_ratio` — λ = E[N_fg / (N_fg + N_bg)], an image without concepts counting 0.
- :func:`learning_speed` — D_mean and D_var (the released code's "D_std" is ``np.var``: a variance) of the
  weight distance at m̂, the *first* checkpoint where N_fg is largest; the std is given beside it.
- :func:`weight_distance` — the cumulative Σ‖w_t − w_{t−1}‖/‖w_0‖ at checkpoint steps from a per-step series.
- :func:`stability` — ρ = |S_last| / |∪_k S_k| per image, averaged over images.
- :func:`effect_images` — the released code's image filter ("effect" images), an option with a selection bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["background_baseline", "concept_map", "count_concepts", "lambda_ratio", "learning_speed",
           "LearningSpeed", "weight_distance", "stability", "effect_images"]


def _mask_like(fg_mask: Tensor, entropy: Tensor) -> Tensor:
    """``fg_mask`` as a boolean tensor broadcastable to ``entropy`` (N, *batch, g, g)."""
    mask = torch.as_tensor(fg_mask).to(torch.bool)
    if mask.dim() == 2:
        mask = mask.expand(entropy.shape[0], *mask.shape)
    if mask.dim() != 3 or mask.shape[0] != entropy.shape[0] or mask.shape[1:] != entropy.shape[-2:]:
        raise ValueError(f"fg_mask of shape {tuple(fg_mask.shape)} does not fit entropy maps of shape "
                         f"{tuple(entropy.shape)} (want (N, g, g) or (g, g))")
    return mask.reshape(mask.shape[0], *([1] * (entropy.dim() - 3)), *mask.shape[1:])


def background_baseline(entropy: Tensor, fg_mask: Tensor) -> Tensor:
    """H̄: the mean over images of each image's mean background entropy (``find_total_background``).

    ``entropy`` ``(N, *batch, g, g)`` → a tensor of shape ``batch`` (0-d for plain ``(N, g, g)`` maps; one value
    per checkpoint for ``(N, K, g, g)``). Images with no background cell, and invalid images (NaN maps), do
    not take part; NaN if none does.
    """
    entropy = torch.as_tensor(entropy, dtype=torch.float64)
    bg = ~_mask_like(fg_mask, entropy)
    cells = bg.expand_as(entropy)
    count = cells.sum(dim=(-2, -1))
    per_image = torch.where(cells, entropy, 0.0).sum(dim=(-2, -1)) / count.clamp(min=1)
    use = (count > 0) & torch.isfinite(per_image)
    used = use.sum(dim=0)
    total = torch.where(use, per_image, 0.0).sum(dim=0)
    return torch.where(used > 0, total / used.clamp(min=1), torch.full_like(total, math.nan)).float()


def concept_map(entropy: Tensor, baseline: Tensor | float, b: float = 0.2) -> Tensor:
    """Boolean concept cells, ``H̄ − H_g > b``; ``baseline`` is a scalar or one value per batch index
    (shape ``batch``, as :func:`background_baseline` returns). NaN entropies are never concepts."""
    entropy = torch.as_tensor(entropy, dtype=torch.float64)
    base = torch.as_tensor(baseline, dtype=torch.float64)
    base = base.reshape(*base.shape, 1, 1)
    return (base - entropy) > b


def count_concepts(entropy: Tensor, fg_mask: Tensor, baseline: Tensor | float, b: float = 0.2
                   ) -> tuple[Tensor, Tensor]:
    """``(n_fg, n_bg)``: per image (and batch index) the number of concept cells inside and outside the
    foreground mask, each a long tensor of shape ``(N, *batch)``. ``b = 0.2`` (0.25 for the AlexNet-style net)."""
    concepts = concept_map(entropy, baseline, b)
    fg = _mask_like(fg_mask, concepts)
    n_fg = (concepts & fg).sum(dim=(-2, -1))
    n_bg = (concepts & ~fg).sum(dim=(-2, -1))
    return n_fg, n_bg


def lambda_ratio(n_fg: Tensor, n_bg: Tensor) -> Tensor:
    """λ = E_images[N_fg / (N_fg + N_bg)], an image without any concept counting 0 (the released code's
    ``find_peak``); reduces the first (image) dimension."""
    n_fg, n_bg = torch.as_tensor(n_fg, dtype=torch.float64), torch.as_tensor(n_bg, dtype=torch.float64)
    total = n_fg + n_bg
    ratio = torch.where(total > 0, n_fg / total.clamp(min=1), 0.0)
    return ratio.mean(dim=0).float()


@dataclass(frozen=True)
class LearningSpeed:
    """D_mean and D_var (unpacks as ``d_mean, d_var = learning_speed(...)``); ``std`` = √var; ``m_hat``: each
    image's first checkpoint index of maximal N_fg; ``distance``: each image's weight distance there."""

    mean: float
    var: float
    std: float
    m_hat: Tensor
    distance: Tensor

    def __iter__(self) -> Iterator[float]:
        return iter((self.mean, self.var))


def learning_speed(n_fg: Tensor, distance: Tensor | Sequence[float]) -> LearningSpeed:
    """Hypothesis 2's D_mean and D_var (Eq. 4 as the released code computes it).

    ``n_fg``: ``(images, checkpoints)`` foreground concept counts; ``distance``: ``(checkpoints,)`` the
    cumulative weight distance at each checkpoint (:func:`weight_distance`), or ``(images, checkpoints)``.
    m̂ is the **first** checkpoint where an image's N_fg is largest (``np.argmax``); D is the distance there;
    ``var`` is the population variance over images (``np.var``, which the paper and code call D_std).
    """
    n_fg = torch.as_tensor(n_fg)
    if n_fg.dim() != 2:
        raise ValueError(f"n_fg must be (images, checkpoints); got shape {tuple(n_fg.shape)}")
    distance = torch.as_tensor(distance, dtype=torch.float64)
    images, checkpoints = n_fg.shape
    if distance.shape[-1] != checkpoints:
        raise ValueError(f"distance has {distance.shape[-1]} checkpoints, n_fg has {checkpoints}")
    distance = distance.expand(images, checkpoints)
    is_max = n_fg == n_fg.max(dim=1, keepdim=True).values
    index = torch.arange(checkpoints).expand(images, checkpoints)
    m_hat = torch.where(is_max, index, checkpoints).min(dim=1).values
    d = distance.gather(1, m_hat[:, None])[:, 0]
    var = float(d.var(unbiased=False)) if images else math.nan
    return LearningSpeed(mean=float(d.mean()) if images else math.nan, var=var, std=math.sqrt(var),
                         m_hat=m_hat, distance=d.float())


def weight_distance(step_distances: Tensor | Sequence[float], init_norm: float,
                    checkpoint_steps: Sequence[int]) -> Tensor:
    """The cumulative weight distance Σ_{t ≤ s} ‖w_t − w_{t−1}‖ / ‖w_0‖ at each checkpoint step ``s`` (step 0,
    before any update, is 0), from a run's per-step series (``Run.series()["path_length:<prefix>/step"]``)
    and ``init_norm`` (the ``init_norm:<prefix>`` metric). The released code sums per iteration as well."""
    steps = torch.as_tensor(step_distances, dtype=torch.float64).flatten()
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
    index = torch.as_tensor(list(checkpoint_steps), dtype=torch.long)
    if len(index) and (int(index.min()) < 0 or int(index.max()) > len(steps)):
        raise ValueError(f"checkpoint steps {list(checkpoint_steps)} outside 0..{len(steps)}")
    return (cumulative[index] / init_norm).float()


def stability(concepts: Tensor, mask: Tensor | None = None, per_image: bool = False) -> Tensor:
    """Hypothesis 3's ρ (Eq. 5): per image, |S_last| / |∪_k S_k| for boolean concept maps ``(images,
    checkpoints, g, g)`` (``S_k`` the concept cells at checkpoint k; the last checkpoint is the final network),
    averaged over images. ``mask`` (``(images, g, g)`` or ``(g, g)``) restricts the sets, e.g. to the
    foreground. An image that has no concept at any checkpoint has no ρ (0/0) and is left out of the mean;
    NaN if every image is. ``per_image=True`` returns the ``(images,)`` values (NaN where undefined).
    """
    concepts = torch.as_tensor(concepts).to(torch.bool)
    if concepts.dim() != 4:
        raise ValueError(f"concepts must be (images, checkpoints, g, g); got shape {tuple(concepts.shape)}")
    if mask is not None:
        concepts = concepts & _mask_like(mask, concepts)
    last = concepts[:, -1].sum(dim=(-2, -1)).double()
    union = concepts.any(dim=1).sum(dim=(-2, -1)).double()
    rho = torch.where(union > 0, last / union.clamp(min=1), math.nan)
    if per_image:
        return rho.float()
    defined = ~torch.isnan(rho)
    return (rho[defined].mean() if bool(defined.any()) else torch.tensor(math.nan)).float()


def effect_images(entropy: Tensor, fg_mask: Tensor, valid: Tensor | None = None,
                  checkpoints: Sequence[int] | None = None, limit: int | None = None) -> Tensor:
    """The released code's image filter: an image is an "effect" image iff it is valid (``s_f ≠ 0``) and, at every
    checked checkpoint, its mean background entropy is at least its mean foreground entropy (and nothing is NaN).

    ``entropy``: ``(images, checkpoints, g, g)`` (or ``(images, g, g)`` for one checkpoint); ``checkpoints``:
    the indices checked (the code checks those at epoch ≥ 40; default all); ``limit``: keep only the first
    ``limit`` effect images in order (the code stops at 50). Returns a boolean ``(images,)`` mask. The code
    compares two networks on the intersection of their masks (``a & b``). This keeps images on which the
    estimator "looks right" — a selection bias; report results with and without it.
    """
    entropy = torch.as_tensor(entropy, dtype=torch.float64)
    if entropy.dim() == 3:
        entropy = entropy[:, None]
    if checkpoints is not None:
        entropy = entropy[:, list(checkpoints)]
    fg = _mask_like(fg_mask, entropy).expand_as(entropy)
    n_fg, n_bg = fg.sum(dim=(-2, -1)), (~fg).sum(dim=(-2, -1))
    mean_fg = torch.where(fg, entropy, 0.0).sum(dim=(-2, -1)) / n_fg.clamp(min=1)
    mean_bg = torch.where(~fg, entropy, 0.0).sum(dim=(-2, -1)) / n_bg.clamp(min=1)
    finite = torch.isfinite(entropy).all(dim=-1).all(dim=-1)
    ok = ((mean_bg - mean_fg) >= 0) & finite & (n_fg > 0) & (n_bg > 0)
    keep = ok.all(dim=1)
    if valid is not None:
        keep = keep & torch.as_tensor(valid).to(torch.bool)
    if limit is not None:
        keep = keep & (keep.long().cumsum(0) <= limit)
    return keep
