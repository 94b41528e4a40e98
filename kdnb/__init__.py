"""kdnb — *Knowledge Distillation, Explained*: the library behind the book's chapters.

Chapters start with ``profile = kdnb.setup(PROFILE, seed=SEED)`` and then call the public modules:
``kdnb.data``, ``kdnb.models``, ``kdnb.runs``, ``kdnb.distill``, ``kdnb.analysis``, ``kdnb.plots``,
``kdnb.widgets``.
"""
from __future__ import annotations

import importlib
import os
import random
from typing import TYPE_CHECKING

from . import profiles
from .profiles import Profile

if TYPE_CHECKING:
    import torch

__all__ = ["setup", "device", "seed_everything", "Profile", "profiles"]
__version__ = "0.1.0"

_SUBMODULES = {"analysis", "bench", "cache", "concepts", "data", "distill", "distributed", "explain", "glue", "jobs",
               "models", "modules", "notebooks", "plan", "plots", "probes", "progress", "recipes", "runs", "storage",
               "train", "widgets"}


def __getattr__(name: str):
    # Submodules load on first use so that `import kdnb` stays cheap (papermill starts many kernels).
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'kdnb' has no attribute {name!r}")


def device() -> "torch.device":
    """CUDA when present, else CPU; ``KDNB_DEVICE`` overrides (e.g. ``cpu`` on a GPU box)."""
    import torch

    wanted = os.environ.get("KDNB_DEVICE")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(profile: str | Profile | None = None, seed: int = 0) -> Profile:
    """Prepare a chapter: resolve the profile, seed everything, pick threads and device, set the plot theme.

    ``profile=None`` reads ``$KDNB_PROFILE`` and falls back to ``book``; an unknown name raises ``ValueError``
    listing the choices.
    """
    import torch

    chosen = profiles.get(profile)
    seed_everything(seed)
    threads = os.environ.get("KDNB_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    # cuDNN autotuning picks kernels by timing, which breaks run-to-run equality on GPUs.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        import seaborn as sns

        sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    except ImportError:  # plotting is optional for library users
        pass
    return chosen
