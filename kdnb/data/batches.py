"""In-memory, deterministic mini-batches for the trainer.

All images live on the device as one normalised float32 tensor, built once; an epoch is a permutation plus
per-sample augmentation parameters drawn from a generator seeded by ``(seed, epoch)`` alone. So epoch *k* yields
the same batches whether training started at epoch 0 or resumed at *k*, and nothing depends on the global RNG.

One run trained by several processes (:mod:`kdnb.distributed`) shards every *global* batch, not the epoch: each
process builds the same plan, and :meth:`TensorBatches.shard` gives process ``r`` of ``n`` its contiguous share of
each batch of the single-process order (sizes differ by at most one). So a step of the ``n`` processes together sees
exactly the images, crops and flips of the single-process step, and the run keeps the single-process run's identity.
(``torch.utils.data.DistributedSampler`` shards the epoch's permutation by stride and draws its own permutation:
its step ``k`` would not hold the images of the single-process step ``k``.)
"""
from __future__ import annotations

import copy
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
        self.rank, self.shards = 0, 1  # this process's share of every batch (see shard)

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

    def shard(self, rank: int, shards: int) -> "TensorBatches":
        """These batches as process ``rank`` of ``shards`` sees them: its contiguous share of every global batch
        (same plan, same number of steps; the images are shared, not copied)."""
        if not 0 <= rank < shards:
            raise ValueError(f"rank {rank} is not one of {shards} shards")
        smallest = self.num_samples - (len(self) - 1) * self.batch_size if len(self) else 0
        if shards > 1 and min(self.batch_size, smallest) < shards:
            raise ValueError(f"a batch of {min(self.batch_size, smallest)} samples cannot be shared by {shards} "
                             "processes (each needs at least one); use a larger batch or fewer processes")
        view = copy.copy(self)
        view.rank, view.shards = rank, shards
        return view

    def _window(self, batch: int) -> slice:
        """Positions in the epoch's order of this process's share of global batch ``batch``."""
        start = batch * self.batch_size
        stop = min(start + self.batch_size, self.num_samples)
        if self.shards == 1:
            return slice(start, stop)
        quotient, remainder = divmod(stop - start, self.shards)  # contiguous shares, as torch.tensor_split
        first = start + self.rank * quotient + min(self.rank, remainder)
        return slice(first, first + quotient + (self.rank < remainder))

    def sample_indices(self, epoch: int, seed: int) -> Iterator[Tensor]:
        """Each batch's sample indices in the data (on the device), in the order :meth:`batches` yields them."""
        order = self.plan(epoch, seed).order.to(self.device)  # one host-to-device copy per epoch
        for batch in range(len(self)):
            yield order[self._window(batch)]

    def batches(self, epoch: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(images, labels)``: float32 (B, C, H, W) normalised images and int64 (B,) labels."""
        plan = self.plan(epoch, seed)
        # One host-to-device copy per epoch, not per batch.
        order = plan.order.to(self.device)
        if self.augment is not None:
            tops, lefts, flips = (t.to(self.device) for t in (plan.tops, plan.lefts, plan.flips))
        for batch in range(len(self)):
            window = self._window(batch)
            indices = order[window]
            images = self.images[indices]
            if self.augment is not None:
                images = crop_flip(images, tops[window], lefts[window], flips[window], self.padding, self.fill)
            yield images, self.labels[indices]
