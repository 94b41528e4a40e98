"""The embedded Fashion-MNIST: verify the repository's ``.gz`` files, decompress them once, load with torchvision.

torchvision's ``FashionMNIST`` reads *uncompressed* IDX files from ``<root>/FashionMNIST/raw/``. We keep only
the original ``.gz`` files in git (``data/fashion-mnist/``), check them against ``SHA256SUMS``, and decompress
them into the cache folder, which is a re-creatable copy: a damaged decompressed file is noticed (its size and
CRC-32 no longer match the gzip trailer) and decompressed again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torchvision.datasets import FashionMNIST

from . import files, locations
from .errors import DatasetDamaged, DatasetNotFound

GZ_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Files already checked in this process, keyed by path and (size, mtime): hashing 30 MB on every call to
# `dataset()` would cost a noticeable fraction of a second in each chapter.
_checked: dict[Path, tuple[int, int]] = {}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _restore_hint(folder: Path) -> str:
    return (
        f"Restore the files: in the repository run `git checkout -- data/fashion-mnist`, or "
        f"`apt-get install dataset-fashion-mnist` and copy /usr/share/datasets/fashion-mnist/*.gz into {folder}/ "
        f"(see {folder}/LICENSE.md)."
    )


def verify_embedded(folder: Path | None = None) -> Path:
    """Check the four ``.gz`` files in ``folder`` against its ``SHA256SUMS``; return the folder.

    Raises :class:`DatasetNotFound` if a file is missing and :class:`DatasetDamaged` if a checksum differs.
    """
    folder = Path(folder) if folder is not None else locations.embedded_fashion_mnist_dir()
    sums_path = folder / "SHA256SUMS"
    missing = [name for name in ("SHA256SUMS", *GZ_FILES) if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFound(
            f"Fashion-MNIST: {', '.join(missing)} not found in {folder}/. {_restore_hint(folder)}"
        )
    sums = files.read_sha256sums(sums_path)
    for name in GZ_FILES:
        path = folder / name
        if _checked.get(path) == _stamp(path):
            continue
        if name not in sums or files.sha256_of(path) != sums[name]:
            raise DatasetDamaged(
                f"Fashion-MNIST file {path} is damaged: its SHA-256 does not match {sums_path}. "
                f"{_restore_hint(folder)}"
            )
        _checked[path] = _stamp(path)
    return folder


def prepare(folder: Path | None = None, cache: Path | None = None) -> Path:
    """Verify the embedded files and make sure their decompressed copies are in the cache.

    Returns the torchvision root (the cache folder): the IDX files are in ``<root>/FashionMNIST/raw/``.
    """
    folder = verify_embedded(folder)
    root = Path(cache) if cache is not None else locations.cache_dir()
    raw = root / "FashionMNIST" / "raw"
    for name in GZ_FILES:
        gz, target = folder / name, raw / name.removesuffix(".gz")
        if target.is_file() and _checked.get(target) == _stamp(target):
            continue
        if not files.matches_gzip(target, gz):  # missing, truncated or damaged: derive it again
            files.decompress_atomically(gz, target)
        _checked[target] = _stamp(target)
    return root


def load(split: str, folder: Path | None = None, cache: Path | None = None,
         transform: Callable | None = None) -> FashionMNIST:
    """torchvision's ``FashionMNIST`` for ``split`` (``train``/``test``) built from the embedded files."""
    root = prepare(folder, cache)
    return FashionMNIST(root=root, train=split == "train", transform=transform, download=False)
