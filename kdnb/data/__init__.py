"""Data for the book: loaders, static facts, deterministic subsets, and fast in-memory batches.

A leaf package: it uses torch, torchvision, numpy and the standard library only.

Typical use::

    train = kdnb.data.dataset("fashion_mnist", "train")
    images, labels = kdnb.data.as_tensors(train, kdnb.data.stratified_subset(train.targets, 500, seed=0))
    facts = kdnb.data.info("fashion_mnist")
    batches = kdnb.data.TensorBatches(images, labels, 128, facts.mean, facts.std, shuffle=True,
                                      augment=kdnb.data.default_augment("fashion_mnist"))
    for x, y in batches.batches(epoch=0, seed=0): ...

Part I's ``cluttered_fashion_mnist`` (generated, with foreground masks)::

    ds = kdnb.data.dataset("cluttered_fashion_mnist", "test")
    fg = ds.masks(indices, kind="box", grid=16)   # (n, 16, 16) bool, on the estimator's grid

Part I's ``paper`` profile: ``cub200``, CUB-200-2011 put in place by hand (never downloaded; see
:mod:`kdnb.data.cub`), bounding-box crops with box and silhouette masks::

    birds = kdnb.data.CUB200(split="test", crop="bbox", size=224)
    fg = birds.masks(indices, kind="silhouette", grid=16)
"""
from __future__ import annotations

from . import cluttered, cub
from .batches import EpochPlan, TensorBatches, epoch_generator
from .cluttered import ClutteredFashionMNIST, ClutterSpec, downsample_mask
from .cub import CUB200
from .errors import DatasetDamaged, DatasetNotFound
from .loaders import dataset
from .registry import ALL_NAMES, EXTERNAL, GENERATED, NAMES, SPLITS, DatasetInfo, default_augment, info
from .subsets import stratified_subset
from .tensors import as_tensors

__all__ = [
    "ALL_NAMES", "CUB200", "EXTERNAL", "GENERATED", "NAMES", "SPLITS", "ClutterSpec", "ClutteredFashionMNIST",
    "DatasetDamaged", "DatasetInfo", "DatasetNotFound", "EpochPlan", "TensorBatches",
    "as_tensors", "cluttered", "cub", "dataset", "default_augment", "downsample_mask", "epoch_generator", "info",
    "stratified_subset",
]
