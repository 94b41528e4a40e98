"""MNIST and CIFAR-10/100 through torchvision, downloaded only when asked.

torchvision's own errors ("Dataset not found or corrupted") do not say where the files should be; here a missing
file raises :class:`DatasetNotFound` naming the exact folder torchvision reads and the two ways to fill it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100, MNIST

from . import files, locations
from .errors import DatasetDamaged, DatasetNotFound

_CLASSES = {"mnist": MNIST, "cifar10": CIFAR10, "cifar100": CIFAR100}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def expected_location(name: str, root: Path) -> tuple[Path, tuple[str, ...]]:
    """The folder torchvision reads for ``name`` under ``root``, and the file names it needs (both splits)."""
    cls = _CLASSES[name]
    if cls is MNIST:
        return root / "MNIST" / "raw", _MNIST_FILES
    names = [file for file, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return root / cls.base_folder, tuple(names)


def _decompress_copied_gz(folder: Path, names: tuple[str, ...]) -> None:
    # Someone who copies MNIST by hand usually copies the .gz files; torchvision only reads decompressed ones.
    for name in names:
        gz, target = folder / f"{name}.gz", folder / name
        if gz.is_file() and not target.is_file():
            files.decompress_atomically(gz, target)


def load(name: str, split: str, root: Path | None = None, download: bool = False,
         transform: Callable | None = None) -> Dataset:
    """torchvision's dataset ``name`` (``mnist``, ``cifar10``, ``cifar100``) for ``split``.

    ``root`` defaults to ``<data>/downloads`` (see :mod:`kdnb.data.locations`). Nothing is downloaded unless
    ``download=True``.
    """
    root = Path(root) if root is not None else locations.downloads_dir()
    folder, needed = expected_location(name, root)
    if name == "mnist":
        _decompress_copied_gz(folder, needed)
    missing = [file for file in needed if not (folder / file).is_file()]
    if missing and not download:
        raise DatasetNotFound(
            f"{name}: files not found in {folder}/ (missing: {', '.join(missing)}). Either run "
            f"`kdnb.data.dataset({name!r}, download=True)` on a machine with internet access (it downloads into "
            f"{root}/), or copy the files into {folder}/ (torchvision's layout). "
            f"Pass root=... or set $KDNB_DATA to use another folder."
        )
    cls = _CLASSES[name]
    try:
        return cls(root=root, train=split == "train", transform=transform, download=download)
    except RuntimeError as err:
        if download:
            raise
        # The files exist (checked above), so torchvision's checksum test is what failed.
        raise DatasetDamaged(
            f"{name}: the files in {folder}/ fail torchvision's checksums ({err}). Delete the folder and run "
            f"`kdnb.data.dataset({name!r}, download=True)`, or copy intact files there."
        ) from err
