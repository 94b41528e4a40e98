"""How training reports progress: a tqdm bar in notebooks and terminals, one line per epoch in logs."""
from __future__ import annotations

import os
import sys


PROGRESS_MODES = ("auto", "bar", "log", "off")


def progress_mode() -> str:
    """How training reports progress, from ``KDNB_PROGRESS``: ``bar`` (tqdm: a widget in notebooks, text in
    terminals), ``log`` (one plain line per epoch, for log files), ``off``; ``auto`` (default) picks ``bar``
    in notebooks and terminals and ``log`` when stderr is redirected."""
    mode = os.environ.get("KDNB_PROGRESS", "auto").lower()
    if mode not in PROGRESS_MODES:
        raise ValueError(f"KDNB_PROGRESS={mode!r}; choose one of: {', '.join(PROGRESS_MODES)}")
    if mode == "auto":
        mode = "bar" if _in_notebook() or sys.stderr.isatty() else "log"
    return mode


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=progress_mode() != "bar", mininterval=1.0, leave=False)


def log_epoch(desc: str, metrics: dict, epochs: int) -> None:
    if progress_mode() == "log":
        test = f" test_acc={metrics['test_acc']:.4f}" if "test_acc" in metrics else ""
        print(f"[{desc}] epoch {metrics['epoch']}/{epochs} loss={metrics['train_loss']:.4f} "
              f"train_acc={metrics['train_acc']:.4f}{test} ({metrics['train_time_s']:.1f} s)",
              file=sys.stderr, flush=True)
