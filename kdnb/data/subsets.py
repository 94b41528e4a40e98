"""Deterministic, class-balanced subsets (the book trains on reduced data at the ``smoke``/``book`` profiles)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def stratified_subset(targets: Tensor | np.ndarray | Sequence[int], per_class: int | None, seed: int) -> Tensor:
    """Indices of ``per_class`` examples of every class present in ``targets``, chosen at random with ``seed``.

    Returns a sorted int64 tensor; ``per_class=None`` returns all indices. The same ``(targets, per_class,
    seed)`` always gives the same indices (a private generator; the global RNG is neither used nor changed).
    Raises ``ValueError`` if a class has fewer than ``per_class`` examples.
    """
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.long).flatten()
    if per_class is None:
        return torch.arange(labels.numel())
    if per_class < 1:
        raise ValueError(f"per_class must be a positive integer or None, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
        members = torch.nonzero(labels == cls).flatten()
        if members.numel() < per_class:
            raise ValueError(f"class {cls} has only {members.numel()} examples; {per_class} per class requested")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values
