"""Data for the book: loaders, static facts, deterministic subsets, and fast in-memory batches.

A leaf package: it uses torch, torchvision, numpy and the standard library only.

Typical use::

    train = kdnb.data.dataset("fashion_mnist", "train")
    images, labels = kdnb.data.as_tensors(train, kdnb.data.stratified_subset(train.targets, 500, seed=0))
    facts = kdnb.data.info("fashion_mnist")
    batches = kdnb.data.TensorBatches(images, labels, 128, facts.mean, facts.std, shuffle=True,
                                      augment=kdnb.data.default_augment("fashion_mnist"))
    for x, y in batches.batches(epoch=0, seed=0): ...
"""
from __future__ import annotations

from .batches import EpochPlan, TensorBatches, epoch_generator
from .errors import DatasetDamaged, DatasetNotFound
from .loaders import dataset
from .registry import NAMES, SPLITS, DatasetInfo, default_augment, info
from .subsets import stratified_subset
from .tensors import as_tensors

__all__ = [
    "NAMES", "SPLITS", "DatasetDamaged", "DatasetInfo", "DatasetNotFound", "EpochPlan", "TensorBatches",
    "as_tensors", "dataset", "default_augment", "epoch_generator", "info", "stratified_subset",
]
