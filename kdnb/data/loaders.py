"""``dataset(name, split)``: one entry point for every data set the book uses."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from . import cluttered, cub, downloadable, fashion_mnist
from .registry import check_name, check_split


def dataset(name: str, split: str = "train", root: str | Path | None = None, download: bool = False,
            transform: Callable | None = None) -> Dataset:
    """torchvision's dataset object for ``name`` (``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``), or
    the generated ``cluttered_fashion_mnist``.

    * ``fashion_mnist`` is embedded in the repository (``data/fashion-mnist/``, or ``root``: a folder with the
      four ``.gz`` files and ``SHA256SUMS``); it is checked, decompressed once into the cache
      (``data/.cache`` or ``$KDNB_CACHE``) and needs no download (``download`` is ignored).
    * ``mnist``/``cifar10``/``cifar100`` are read from ``root`` (default ``data/downloads``) in torchvision's
      layout. They are downloaded only with ``download=True``; missing files raise
      :class:`~kdnb.data.DatasetNotFound` naming the folder.

    * ``cluttered_fashion_mnist`` is generated from the embedded Fashion-MNIST (``root`` as for it) once per
      process: :class:`kdnb.data.cluttered.ClutteredFashionMNIST`, whose ``masks()`` give the foreground.
    * ``cub200`` (CUB-200-2011, Part I's ``paper`` profile) is never downloaded (``download`` is ignored): put
      ``CUB_200_2011/`` (and ``segmentations/``) in ``root`` (default ``data/downloads``); bounding-box crops at
      224², :class:`kdnb.data.CUB200`, whose ``masks()`` give the box or the silhouette.

    ``$KDNB_DATA`` replaces the repository's ``data/`` folder. ``split`` is ``"train"`` or ``"test"``;
    unknown names or splits raise ``ValueError`` listing the choices. ``transform`` is passed to torchvision
    (use :func:`~kdnb.data.as_tensors` plus :class:`~kdnb.data.TensorBatches` for fast training instead).
    """
    check_name(name)
    check_split(split)
    root = Path(root).expanduser() if root is not None else None
    if name == "fashion_mnist":
        return fashion_mnist.load(split, folder=root, transform=transform)
    if name == cluttered.NAME:
        return cluttered.load(split, folder=root, transform=transform)
    if name == cub.NAME:
        return cub.load(split, folder=root, transform=transform)
    return downloadable.load(name, split, root=root, download=download, transform=transform)
