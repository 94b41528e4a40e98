"""Batched image transforms on tensors: normalisation and random crop + horizontal flip without per-sample Python.

Images are normalised once, when a :class:`~kdnb.data.TensorBatches` is built; augmentation then works on
normalised tensors. Padding uses the *normalised value of black*, ``(0 - mean) / std`` per channel, so a crop of
the padded normalised image equals normalising a crop of the zero-padded pixel image (torchvision's
``RandomCrop(size, padding=p)`` with its default ``fill=0``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

AUGMENTATIONS: tuple[str | None, ...] = (None, "crop", "crop_flip")


def check_augment(augment: str | None) -> str | None:
    """Return ``augment`` if known (``None``, ``"crop"``, ``"crop_flip"``), else raise ``ValueError``."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}")
    return augment


def default_padding(image_size: int) -> int:
    """Crop padding used with augmentation: 4 pixels for 32×32 images (the CIFAR standard), 2 for 28×28."""
    return 4 if image_size >= 32 else 2


def channel_stats(values: Sequence[float] | float, channels: int, device: torch.device | str = "cpu") -> Tensor:
    """Per-channel statistics as a float32 tensor of shape (C,); a single value is repeated."""
    stats = torch.as_tensor(values, dtype=torch.float32, device=device).flatten()
    if stats.numel() == 1:
        stats = stats.expand(channels)
    if stats.numel() != channels:
        raise ValueError(f"expected 1 or {channels} values, got {stats.numel()}")
    return stats.contiguous()


def normalize_uint8(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 images (N, C, H, W) -> float32 ``(x / 255 - mean) / std``."""
    shape = (1, -1, 1, 1)
    return images.to(torch.float32).div_(255.0).sub_(mean.view(shape)).div_(std.view(shape))


def black_value(mean: Tensor, std: Tensor) -> Tensor:
    """The normalised value of a black pixel per channel, ``(0 - mean) / std`` (same arithmetic as above)."""
    return torch.zeros_like(mean).div_(255.0).sub_(mean).div_(std)


def sample_crop_flip(n: int, padding: int, flip: bool, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random crop offsets ``top, left`` in ``[0, 2 * padding]`` (in padded coordinates) and flip flags.

    Drawn in this order from ``generator``: tops, lefts, then (only if ``flip``) the flips; without ``flip``
    the flags are all ``False``.
    """
    tops = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    lefts = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return tops, lefts, flips


def crop_flip(images: Tensor, tops: Tensor, lefts: Tensor, flips: Tensor, padding: int, fill: Tensor) -> Tensor:
    """Pad a batch by ``padding`` with ``fill`` (per channel), crop it back to H×W at (``tops``, ``lefts``),
    and mirror the samples whose ``flips`` flag is set — all samples at once.

    Equivalent per sample to ``hflip(crop(pad(x, padding, fill), top, left, H, W))`` if flipped.
    Two ``gather``\\ s (rows, then columns; the flip is folded into the column index) cost well under 1 % of a
    ResNet-8 training step.
    """
    n, channels, height, width = images.shape
    padded = fill.view(1, channels, 1, 1).expand(n, channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, :, padding:padding + height, padding:padding + width] = images
    device = images.device
    rows = tops.to(device)[:, None] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    columns = torch.where(flips.to(device)[:, None], width - 1 - columns, columns) + lefts.to(device)[:, None]
    picked_rows = torch.gather(padded, 2, rows[:, None, :, None].expand(n, channels, height, padded.shape[3]))
    return torch.gather(picked_rows, 3, columns[:, None, None, :].expand(n, channels, height, width))
