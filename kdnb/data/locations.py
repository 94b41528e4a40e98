"""Where data lives on disk.

* ``<data>`` is the repository's ``data/`` folder (found from this file), or ``$KDNB_DATA`` when set.
  It holds the embedded Fashion-MNIST files in ``<data>/fashion-mnist/`` and, by default, torchvision's
  downloads (MNIST, CIFAR) in ``<data>/downloads/``.
* ``<cache>`` is ``<data>/.cache`` (git-ignored), or ``$KDNB_CACHE`` when set: derived files such as the
  decompressed Fashion-MNIST IDX files that torchvision reads.
"""
from __future__ import annotations

import os
from pathlib import Path

# kdnb/data/locations.py -> parents[2] is the repository root.
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def data_dir() -> Path:
    """The data folder: ``$KDNB_DATA`` if set, else ``<repo>/data``."""
    override = os.environ.get("KDNB_DATA")
    return Path(override).expanduser() if override else REPO_DATA_DIR


def embedded_fashion_mnist_dir() -> Path:
    """Folder with the four Fashion-MNIST ``.gz`` files, ``SHA256SUMS`` and ``LICENSE.md``."""
    return data_dir() / "fashion-mnist"


def downloads_dir() -> Path:
    """Default torchvision root for data sets that are downloaded on request (MNIST, CIFAR)."""
    return data_dir() / "downloads"


def cache_dir() -> Path:
    """Folder for derived, re-creatable files: ``$KDNB_CACHE`` if set, else ``<data>/.cache``."""
    override = os.environ.get("KDNB_CACHE")
    return Path(override).expanduser() if override else data_dir() / ".cache"
