"""How training reports progress, and where the report goes.

Two environment variables decide it:

``KDNB_PROGRESS`` = ``auto`` (default) | ``bar`` | ``log`` | ``off``: how.
    ``bar``: a tqdm bar per run (a widget in a notebook, text in a terminal); ``log``: one plain line per epoch,
    ``[<run>] epoch i/N loss=… train_acc=… test_acc=… (s)``; ``off``: nothing. ``auto`` is ``bar`` in
    notebooks and terminals and ``log`` when stderr is redirected (a log file, a pipe).

``KDNB_PROGRESS_FILE``: where, when set: a file that progress is appended to instead of stderr.
    ``python -m kdnb run`` sets it for the kernels it starts and copies the file to its own terminal as it
    grows, so the terminal shows which run is training and how far it is, while the executed notebook (and
    the site page built from it) holds no progress at all. Writing to the kernel's stderr would not do:
    ipykernel forwards everything written to file descriptor 2 into the notebook as well. The runner resolves
    ``auto`` itself (a bar when its stderr is a terminal, else one line per epoch) and passes ``off`` through.
    With this file set the bar is always tqdm's text bar, never a notebook widget.
"""
from __future__ import annotations

import os
import sys
from typing import TextIO

PROGRESS_MODES = ("auto", "bar", "log", "off")
MODE_VARIABLE = "KDNB_PROGRESS"
FILE_VARIABLE = "KDNB_PROGRESS_FILE"

_relay: tuple[str, TextIO] | None = None  # (path, stream) of the open progress file


def progress_mode() -> str:
    """How training reports progress, from ``KDNB_PROGRESS`` (see the module docstring): ``bar``, ``log`` or
    ``off``; ``auto`` is resolved here. An unknown value raises ``ValueError`` listing the choices."""
    mode = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"{MODE_VARIABLE}={mode!r}; choose one of: {', '.join(PROGRESS_MODES)}")
    if mode == "auto":
        if relay_file() is not None:
            mode = "log"  # a file has no width or cursor: lines (the runner normally decides before this)
        else:
            mode = "bar" if _in_notebook() or _isatty(sys.stderr) else "log"
    return mode


def relay_file() -> str | None:
    """The file progress goes to (``KDNB_PROGRESS_FILE``), or ``None`` for stderr."""
    return os.environ.get(FILE_VARIABLE) or None


def stream() -> TextIO:
    """Where progress is written: the relay file when one is set, else the current ``sys.stderr``."""
    global _relay
    path = relay_file()
    if path is None:
        return sys.stderr
    if _relay is None or _relay[0] != path or _relay[1].closed:
        # Appended, line-buffered, UTF-8 (tqdm's bar characters); the runner reads it as it grows.
        _relay = (path, open(path, "a", encoding="utf-8", buffering=1))
    return _relay[1]


def _isatty(handle) -> bool:
    try:
        return bool(handle is not None and handle.isatty())
    except (AttributeError, ValueError):
        return False


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(total: int, desc: str):
    """A tqdm bar over ``total`` steps labelled ``desc`` (the run); disabled unless the mode is ``bar``.

    The trainer calls ``update(1)`` per step, ``set_postfix(epoch=…, …)`` per epoch and ``close()``.
    """
    mode = progress_mode()
    if relay_file() is not None:
        from tqdm.std import tqdm  # text, never a widget: the file is read by the runner, not a browser

        # leave=True: each finished run keeps one line in the runner's terminal.
        return tqdm(total=total, desc=desc, file=stream(), disable=mode != "bar", mininterval=1.0,
                    leave=True, dynamic_ncols=False)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=mode != "bar", mininterval=1.0, leave=False)


def epoch_line(desc: str, metrics: dict, epochs: int) -> str:
    """``[<run>] epoch i/N loss=… train_acc=… test_acc=… (s)`` for one finished epoch."""
    test = f" test_acc={metrics['test_acc']:.4f}" if "test_acc" in metrics else ""
    train = f" train_acc={metrics['train_acc']:.4f}" if "train_acc" in metrics else ""  # a part classifies nothing
    return (f"[{desc}] epoch {metrics['epoch']}/{epochs} loss={metrics['train_loss']:.4f}"
            f"{train}{test} ({metrics['train_time_s']:.1f} s)")


def log_epoch(desc: str, metrics: dict, epochs: int) -> None:
    """One line per finished epoch in ``log`` mode (``metrics`` holds ``epoch`` counted from 1,
    ``train_loss``, ``train_acc``, ``train_time_s`` and optionally ``test_acc``)."""
    if progress_mode() == "log":
        print(epoch_line(desc, metrics, epochs), file=stream(), flush=True)
