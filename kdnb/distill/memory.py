"""A per-sample memory of a frozen network's outputs (:meth:`kdnb.distill.base.Method.remembered`).

Without augmentation a training image is the same tensor every epoch, and a frozen network in eval mode (the
teacher, a pre-trained auto-encoder) maps it to the same output every epoch: running it once per image instead
of once per image per epoch gives the same numbers for a fraction of the cost. The memory holds those outputs,
indexed by the sample's position in the training set (:attr:`~kdnb.distill.base.Context.indices`).

*Exactly* the same numbers, because a network in eval mode computes each sample independently of which other
images share its batch. Not always of the batch's *size*: a large linear layer (MobileNet's classifier on 256+
features, VGG's) is computed by kernels whose rounding changes with the number of rows (a batch of 40 is not
rounded as one of 64). So a memory is tied to one batch size, that of the first batch it stores (a full batch):
a batch of that size reads back what a batch of that size computed; a batch of any other size (the epoch's last,
partial one) runs the network as before. ``tests/test_memory.py`` checks both properties bit for bit on the
book's networks, and that a run trained with the memory equals one trained without it, weights and BatchNorm
statistics included. The trainer only says the inputs are fixed (:attr:`~kdnb.distill.base.Context.fixed_inputs`)
when its batches have no augmentation; a method only remembers what a frozen network computes without gradient.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

#: The most a memory may hold (bytes): above it the network runs every epoch as before (e.g. many intermediate
#: feature maps of a large training set).
LIMIT_BYTES = 1 << 30

Value = Any  # a Tensor, or a tuple / list / dict of Tensors (or None), batch first


def _leaves(value: Value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    if value is None:
        return []
    raise TypeError(f"a remembered value holds tensors (in tuples, lists or dicts), not {type(value).__name__}")


def _rebuild(value: Value, leaves: list[Tensor]) -> Value:
    """``value``'s structure with its tensors replaced, in order, by ``leaves`` (consumed)."""
    if isinstance(value, Tensor):
        return leaves.pop(0)
    if isinstance(value, dict):
        return {k: _rebuild(v, leaves) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_rebuild(v, leaves) for v in value)
    return None


class SampleMemory:
    """One output per training sample, filled as the samples come, for batches of ``batch_size`` samples (the
    size of ``example``'s batch): :meth:`read` a batch when every sample of it is stored, else compute and
    :meth:`write` it."""

    def __init__(self, example: Value, num_samples: int) -> None:
        leaves = _leaves(example)  # at least one: an output without tensors is never kept (fits)
        self.template = example
        self.batch_size = leaves[0].shape[0]
        self.stores = [torch.empty((num_samples, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in leaves]
        self.filled = torch.zeros(num_samples, dtype=torch.bool, device=leaves[0].device)

    @staticmethod
    def fits(example: Value, batch: int, num_samples: int) -> bool:
        """Whether one ``example`` output of ``batch`` samples, kept for ``num_samples``, fits :data:`LIMIT_BYTES`."""
        leaves = _leaves(example)
        per_sample = sum(t.element_size() * t.numel() for t in leaves) / max(batch, 1)
        return bool(leaves) and per_sample * num_samples <= LIMIT_BYTES

    def holds(self, indices: Tensor) -> bool:
        return bool(self.filled[indices].all())

    def read(self, indices: Tensor) -> Value:
        return _rebuild(self.template, [store[indices] for store in self.stores])

    def write(self, indices: Tensor, value: Value) -> None:
        for store, tensor in zip(self.stores, _leaves(value)):
            store[indices] = tensor
        self.filled[indices] = True


def remembered(memories: dict[str, SampleMemory | None], name: str, x: Tensor, indices: Tensor | None,
               num_samples: int | None, compute: Callable[[Tensor], Value]) -> Value:
    """``compute(x)`` for the batch whose training-set positions are ``indices``, from ``memories[name]`` when
    it holds every one of them and the batch has the memory's size; ``indices=None`` (inputs not fixed, or no
    trainer): computed every time. A memory that would exceed :data:`LIMIT_BYTES` is not kept
    (``memories[name] = None``)."""
    if indices is None or num_samples is None or (name in memories and memories[name] is None):
        return compute(x)
    memory = memories.get(name)
    if memory is not None and x.shape[0] != memory.batch_size:  # rounding may differ at another batch size
        return compute(x)
    if memory is not None and memory.holds(indices):
        return memory.read(indices)
    value = compute(x)
    if memory is None:
        if not SampleMemory.fits(value, x.shape[0], num_samples):
            memories[name] = None
            return value
        memory = memories[name] = SampleMemory(value, num_samples)
    memory.write(indices, value)
    return value
