"""Sharpness of a converged minimum (Huang et al. 2021, §4.7 "Generalization" and Fig. 4c): the training loss as
Gaussian noise of growing scale is added to the model's parameters.

The paper: "As we increase the scale of Gaussian noise added to model parameters, the training loss of the
independent model increases faster than that of the IE-KD model", read as the IE-KD model sitting in a flatter
minimum (following Keskar et al. 2017 and Chaudhari et al. 2019, its refs. [14] and [3]). It gives no further
detail, so :func:`noisy_loss` follows its words:

* every parameter (weights, biases, BatchNorm affine parameters; not the BatchNorm running statistics, which are
  buffers) receives independent noise :math:`\\theta \\leftarrow \\theta + \\sigma z`, :math:`z \\sim
  \\mathcal{N}(0, I)`: an absolute scale σ, the same for all tensors. ``relative=True`` scales the noise of each
  tensor by its root mean square instead, :math:`\\theta_t \\leftarrow \\theta_t + \\sigma\\,\\mathrm{rms}(\\theta_t)\\, z`
  (a common alternative that makes σ comparable across layers of different magnitude; not the paper's wording);
* the loss is the mean cross-entropy over the given training examples (the paper's "training loss"), in eval
  mode: BatchNorm normalises with its running statistics, fixed while the weights are perturbed, and dropout is
  off;
* each σ is averaged over ``draws`` noise draws. The draws are common random numbers: draw i uses the same
  standard-normal z at every σ (its generator is seeded from ``seed`` and i only), so the curve is smooth in σ and
  two models of one architecture see the same noise directions. Noise is drawn on the CPU and moved to the
  model's device, so a seed gives the same numbers on any device;
* the clean parameters are restored exactly afterwards (copied back from a clone, also on error): the state dict
  is bit-identical after the call, buffers included (tested), and the model's train/eval mode is restored.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SharpnessCurve", "noisy_loss", "noise_generator"]


class SharpnessCurve(TypedDict):
    """Result of :func:`noisy_loss` (a plain dict, so :func:`kdnb.cache.cached` can store it)."""

    sigmas: Tensor      # (S,) noise scales, float64
    losses: Tensor      # (S, draws) mean training loss per scale and draw
    mean: Tensor        # (S,) mean over draws
    std: Tensor         # (S,) standard deviation over draws (0 with one draw)
    clean: float        # loss of the unperturbed model
    relative: bool
    draws: int
    seed: int


def noise_generator(seed: int, draw: int) -> torch.Generator:
    """The CPU generator of noise draw ``draw`` (hashed from ``seed`` and ``draw``, so nearby seeds give unrelated
    streams)."""
    digest = hashlib.sha256(f"kdnb.sharpness:{seed}:{draw}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _mean_loss(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]],
               loss_fn: Callable[[Tensor, Tensor], Tensor]) -> float:
    total, count = 0.0, 0
    for x, y in batches:
        total += float(loss_fn(model(x), y)) * len(x)
        count += len(x)
    if count == 0:
        raise ValueError("no examples to compute the training loss on")
    return total / count


def noisy_loss(model: nn.Module, data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
               sigmas: Sequence[float], draws: int = 5, seed: int = 0, relative: bool = False,
               loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
               batch_size: int = 256) -> SharpnessCurve:
    """Mean training loss of ``model`` with Gaussian noise of each scale in ``sigmas`` added to its parameters
    (module docstring; Huang et al. 2021, Fig. 4c).

    Args:
        model: the trained network; left bit-identical (parameters, buffers, mode).
        data: ``(images, labels)`` tensors or a re-iterable of batches (e.g. a non-shuffling
            :class:`kdnb.data.TensorBatches`), on the model's device: the training examples.
        sigmas: noise scales (0 gives the clean loss).
        draws: noise draws per scale, averaged.
        seed: seeds the draws.
        relative: noise of each tensor scaled by its RMS (default: absolute σ, the paper's wording).
        loss_fn: ``loss_fn(logits, labels)`` -> mean loss of a batch (default cross-entropy).
        batch_size: for tensor ``data``.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1; got {draws}")
    if any(s < 0 for s in sigmas):
        raise ValueError(f"noise scales must be >= 0; got {list(sigmas)}")
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        images, labels = data
        batches = [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    else:
        batches = list(data)
    params = [p for p in model.parameters()]
    clean = [p.detach().clone() for p in params]
    scales = [float(c.pow(2).mean().sqrt()) if relative else 1.0 for c in clean]
    training = model.training
    losses = torch.zeros(len(sigmas), draws, dtype=torch.float64)
    model.eval()
    try:
        with torch.no_grad():
            clean_loss = _mean_loss(model, batches, loss_fn)
            for d in range(draws):
                generator = noise_generator(seed, d)
                directions = [torch.randn(c.shape, generator=generator, dtype=c.dtype).to(c.device) for c in clean]
                for i, sigma in enumerate(sigmas):
                    for p, c, z, scale in zip(params, clean, directions, scales):
                        p.copy_(c + (sigma * scale) * z)
                    losses[i, d] = _mean_loss(model, batches, loss_fn)
    finally:
        with torch.no_grad():
            for p, c in zip(params, clean):
                p.copy_(c)
        model.train(training)
    return {
        "sigmas": torch.tensor([float(s) for s in sigmas], dtype=torch.float64),
        "losses": losses,
        "mean": losses.mean(dim=1),
        "std": losses.std(dim=1) if draws > 1 else torch.zeros(len(sigmas), dtype=torch.float64),
        "clean": clean_loss,
        "relative": relative,
        "draws": draws,
        "seed": seed,
    }
