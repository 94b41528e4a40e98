"""Per-image tables and comparisons of entropy maps (Cheng et al., CVPR 2020, Eq. 3), for any network.

- :func:`concept_table` — N_fg, N_bg and the per-image ratio N_fg / (N_fg + N_bg) of every probe image (Eq. 3),
  with the dataset-level background baseline H̄ of that network and layer.
- :func:`mode_agreement` — how well one estimator mode reproduces another on the same images: Spearman's rank
  correlation of the H maps and the IoU of the concept sets, per image.
- :func:`mean_std` — "mean ± std" of a column, the spread shown beside every mean.
- :func:`passes_per_image` — the network forward+backward passes an estimate cost per image (the proxy's
  speed-up over the Monte-Carlo modes, counted rather than timed).
- :func:`paired_over_images` — a network-vs-network difference paired over probe images (Hypothesis 1).
- :func:`foreground_contrast` — per image, mean background H minus mean foreground H.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from ..analysis import PairedComparison, paired
from .estimator import EntropyResult
from .metrics import background_baseline, concept_map, count_concepts

__all__ = ["concept_table", "mode_agreement", "mean_std", "passes_per_image", "paired_over_images",
           "foreground_contrast", "summary_row"]


def concept_table(result: EntropyResult, fg: Tensor, b: float, baseline: float | None = None) -> pd.DataFrame:
    """One row per probe image: ``n_fg``, ``n_bg``, ``ratio`` (N_fg / (N_fg + N_bg), 0 without concepts, so that
    the mean of ``ratio`` is Eq. 3's λ), ``valid``; H̄ is the dataset-level background mean over these images
    (``background_baseline``) unless ``baseline`` is given. ``attrs["baseline"]`` keeps H̄."""
    h_bar = float(background_baseline(result.entropy, fg)) if baseline is None else float(baseline)
    n_fg, n_bg = count_concepts(result.entropy, fg, h_bar, b)
    total = (n_fg + n_bg).double()
    ratio = torch.where(total > 0, n_fg.double() / total.clamp(min=1), 0.0)
    table = pd.DataFrame({"image": range(len(result)), "n_fg": n_fg.numpy(), "n_bg": n_bg.numpy(),
                          "ratio": ratio.numpy(), "valid": result.valid.numpy()})
    table.attrs["baseline"] = h_bar
    return table


def _iou(a: Tensor, b: Tensor) -> float:
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else math.nan


def mode_agreement(reference: EntropyResult, other: EntropyResult, fg: Tensor, b: float) -> pd.DataFrame:
    """Per image: ``spearman`` — the rank correlation of the two H maps over cells; ``iou`` — |A ∩ B| / |A ∪ B|
    of the concept sets (each with its own dataset-level H̄ over these images; NaN when neither has a concept);
    ``concepts_reference`` / ``concepts_other`` — the set sizes."""
    if reference.entropy.shape != other.entropy.shape:
        raise ValueError(f"entropy maps differ in shape: {tuple(reference.entropy.shape)} vs "
                         f"{tuple(other.entropy.shape)}")
    a = concept_map(reference.entropy, background_baseline(reference.entropy, fg), b)
    c = concept_map(other.entropy, background_baseline(other.entropy, fg), b)
    rows = []
    for i in range(len(reference)):
        x, y = reference.entropy[i].flatten().numpy(), other.entropy[i].flatten().numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        rho = float(stats.spearmanr(x[ok], y[ok]).statistic) if ok.sum() > 2 else math.nan
        rows.append({"image": i, "spearman": rho, "iou": _iou(a[i], c[i]),
                     "concepts_reference": int(a[i].sum()), "concepts_other": int(c[i].sum())})
    return pd.DataFrame(rows)


def mean_std(values: Any, std: float | None = None, digits: int = 2) -> str:
    """``"0.83 ± 0.07"``: the mean and sample standard deviation of the finite ``values`` (or ``std`` when given,
    for a mean already taken); the mean alone when there is no spread to show; ``"—"`` if there is no value."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return "—"
    spread = float(x.std(ddof=1)) if std is None and len(x) > 1 else std
    if spread is None or not math.isfinite(spread):
        return f"{x.mean():.{digits}f}"
    return f"{x.mean():.{digits}f} ± {spread:.{digits}f}"


def passes_per_image(result: EntropyResult) -> float:
    """Mean forward+backward passes of the network per image that ``result`` cost: faithful, ``samples`` per
    SGD step actually run plus ``sf_samples`` for s_f (forward only, counted as passes); converged,
    ``samples × converged_steps + sf_samples + converged_directions`` (the control variate's vector–Jacobian
    products at the clean image); linearised, ``vjps``."""
    s = result.settings
    if result.mode == "linearised":
        return float(s["vjps"])
    if result.mode == "converged":
        return float(s["samples"] * s["converged_steps"] + s["sf_samples"] + s.get("converged_directions", 0))
    steps = torch.isfinite(result.history).sum(dim=1).double().mean().item()  # the steps each image ran
    return float(s["samples"] * steps + s["sf_samples"])


def paired_over_images(a: pd.DataFrame, b: pd.DataFrame, column: str, valid_only: bool = True) -> PairedComparison:
    """``a[column] − b[column]`` paired over the probe images both tables hold (by ``image``), e.g. student minus
    baseline N_fg; images invalid in either (s_f = 0) are left out when ``valid_only``."""
    merged = a.merge(b, on="image", suffixes=("_a", "_b"))
    if valid_only:
        merged = merged[merged["valid_a"] & merged["valid_b"]]
    return paired(merged[f"{column}_a"].to_numpy(float), merged[f"{column}_b"].to_numpy(float))


def foreground_contrast(result: EntropyResult, fg: Tensor) -> np.ndarray:
    """Per image, mean H over background cells minus mean H over foreground cells (positive: the network
    discards more of the background than of the item). NaN for invalid images."""
    entropy = result.entropy.double()
    mask = torch.as_tensor(fg).bool().expand_as(entropy)
    fg_mean = torch.where(mask, entropy, 0.0).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)
    bg_mean = torch.where(~mask, entropy, 0.0).sum(dim=(1, 2)) / (~mask).sum(dim=(1, 2)).clamp(min=1)
    return (bg_mean - fg_mean).numpy()


def summary_row(table: pd.DataFrame, **labels: Any) -> dict:
    """Mean and per-image std of N_fg, N_bg and the ratio (λ = its mean) over the valid images of a
    :func:`concept_table`, with ``labels`` (network, layer, …) in front."""
    t = table[table["valid"]]
    row = dict(labels)
    for column in ("n_fg", "n_bg", "ratio"):
        row[column] = float(t[column].mean()) if len(t) else math.nan
        row[f"{column}_std"] = float(t[column].std(ddof=1)) if len(t) > 1 else math.nan
    row["images"] = int(len(t))
    row["baseline_H"] = table.attrs.get("baseline", math.nan)
    return row
