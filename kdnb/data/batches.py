"""In-memory, deterministic mini-batches for the trainer.

All images live on the device as one normalised float32 tensor, built once; an epoch is a permutation plus
per-sample augmentation parameters drawn from a generator seeded by ``(seed, epoch)`` alone. So epoch *k* yields
the same batches whether training started at epoch 0 or resumed at *k*, and nothing depends on the global RNG.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .transforms import (black_value, channel_stats, check_augment, crop_flip, default_padding, normalize_uint8,
                         sample_crop_flip)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch)``.

    The pair is hashed (rather than e.g. ``seed + epoch``) so that nearby seeds and epochs give unrelated
    streams. CPU, so that CPU and GPU runs draw the same numbers.
    """
    digest = hashlib.sha256(f"kdnb.batches:{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch does: sample order, and for the sample at each position its crop offsets and flip."""

    order: Tensor                 # (N,) int64 indices into the data
    tops: Tensor | None = None    # (N,) int64 crop offsets in padded coordinates, or None without augmentation
    lefts: Tensor | None = None
    flips: Tensor | None = None   # (N,) bool


class TensorBatches:
    """Deterministic mini-batches of normalised images from uint8 tensors held in memory.

    Args:
        images_uint8: (N, C, H, W) uint8 pixels (see :func:`kdnb.data.as_tensors`).
        labels: (N,) class indices.
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        mean, std: per-channel normalisation statistics in [0, 1] units (e.g. ``info(name).mean``).
        shuffle: a fresh permutation each epoch (else the stored order).
        augment: ``None``, ``"crop"`` (random crop with zero padding) or ``"crop_flip"`` (crop plus random
            horizontal flip); see :mod:`kdnb.data.transforms`.
        drop_last: drop the last incomplete batch.
        device: where images and batches live.
        padding: crop padding in pixels; default 4 for 32×32 images, 2 for 28×28.
    """

    def __init__(self, images_uint8: Tensor, labels: Tensor | Sequence[int], batch_size: int,
                 mean: Sequence[float] | float, std: Sequence[float] | float, shuffle: bool,
                 augment: str | None = None, drop_last: bool = False, device: torch.device | str = "cpu",
                 padding: int | None = None) -> None:
        if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
            raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images_uint8.dtype} "
                             f"{tuple(images_uint8.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (images_uint8.shape[0],):
            raise ValueError(f"{images_uint8.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.augment = check_augment(augment)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = torch.device(device)
        channels, height = images_uint8.shape[1], images_uint8.shape[2]
        self.padding = default_padding(height) if padding is None else padding
        self.mean = channel_stats(mean, channels, self.device)
        self.std = channel_stats(std, channels, self.device)
        # Normalised once: per-batch uint8 -> float conversion would be repeated work every epoch.
        self.images = normalize_uint8(images_uint8.to(self.device), self.mean, self.std)
        self.labels = labels.to(self.device)
        self.fill = black_value(self.mean, self.std)

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def plan(self, epoch: int, seed: int) -> EpochPlan:
        """The sample order and augmentation parameters of ``epoch`` (drawn on the CPU, deterministic)."""
        generator = epoch_generator(seed, epoch)
        n = self.num_samples
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.augment is None:
            return EpochPlan(order)
        tops, lefts, flips = sample_crop_flip(n, self.padding, self.augment == "crop_flip", generator)
        return EpochPlan(order, tops, lefts, flips)

    def batches(self, epoch: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(images, labels)``: float32 (B, C, H, W) normalised images and int64 (B,) labels."""
        plan = self.plan(epoch, seed)
        # One host-to-device copy per epoch, not per batch.
        order = plan.order.to(self.device)
        if self.augment is not None:
            tops, lefts, flips = (t.to(self.device) for t in (plan.tops, plan.lefts, plan.flips))
        for batch in range(len(self)):
            window = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            indices = order[window]
            images = self.images[indices]
            if self.augment is not None:
                images = crop_flip(images, tops[window], lefts[window], flips[window], self.padding, self.fill)
            yield images, self.labels[indices]
