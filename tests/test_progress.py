"""Progress the user can see (kdnb.progress and the runner): in the terminal, never in the executed notebook.

ipykernel forwards everything a kernel writes to its file descriptors 1 and 2 into the notebook, except when
``PYTEST_CURRENT_TEST`` is set (pytest's own capture). The kernels started here run without that variable, as
they do under ``python -m kdnb run``, so a progress report written to the kernel's stderr would be caught.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kdnb import book_layout, notebooks, progress

ROOT = book_layout.ROOT
METRICS = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.75, "test_acc": 0.5, "train_time_s": 1.0}
EPOCH_LINE = re.compile(r"^\[((?:ce|kd):\S+ seed=\d+)\] epoch (\d+)/(\d+) loss=\S+ train_acc=\S+ test_acc=\S+ ",
                        re.MULTILINE)


def notebook_text(path: Path) -> tuple[str, str]:
    """(every output of every cell as JSON, the notebook's widget state as JSON)."""
    nb = nbformat.read(path, as_version=4)
    outputs = json.dumps([o for cell in nb.cells for o in cell.get("outputs", [])])
    return outputs, json.dumps(nb.metadata.get("widgets", {}))


# ----------------------------------------------------------------------------------------- in this process

def test_modes(monkeypatch):
    monkeypatch.delenv(progress.FILE_VARIABLE, raising=False)
    for mode in ("bar", "log", "off"):
        monkeypatch.setenv("KDNB_PROGRESS", mode.upper())
        assert progress.progress_mode() == mode
    monkeypatch.setenv("KDNB_PROGRESS", "auto")
    assert progress.progress_mode() == "log"  # pytest captures stderr: not a terminal, not a notebook
    monkeypatch.delenv("KDNB_PROGRESS")
    assert progress.progress_mode() == "log"  # auto is the default
    monkeypatch.setenv("KDNB_PROGRESS", "loud")
    with pytest.raises(ValueError, match="auto, bar, log, off"):
        progress.progress_mode()


def test_progress_file_receives_lines_and_text_bars(tmp_path, monkeypatch, capsys):
    """With KDNB_PROGRESS_FILE set (the runner's kernels), progress goes there and not to stderr, and the bar is
    tqdm's text bar, never a widget."""
    relay = tmp_path / "progress.txt"
    monkeypatch.setenv(progress.FILE_VARIABLE, str(relay))
    monkeypatch.setenv("KDNB_PROGRESS", "log")
    progress.log_epoch("kd:resnet8 seed=0", METRICS, 4)
    monkeypatch.setenv("KDNB_PROGRESS", "bar")
    bar = progress.progress_bar(6, "ce:resnet20 seed=1")
    assert type(bar).__module__ == "tqdm.std"
    bar.update(6)
    bar.set_postfix(epoch=2)
    bar.close()
    monkeypatch.setenv("KDNB_PROGRESS", "auto")
    assert progress.progress_mode() == "log"
    monkeypatch.setenv("KDNB_PROGRESS", "off")
    progress.log_epoch("silent", METRICS, 4)
    progress.progress_bar(1, "silent").close()
    written = relay.read_text(encoding="utf-8")
    assert "[kd:resnet8 seed=0] epoch 1/4 loss=0.5000 train_acc=0.7500 test_acc=0.5000 (1.0 s)\n" in written
    assert "ce:resnet20 seed=1" in written and "6/6" in written and "epoch=2" in written
    assert "silent" not in written
    assert capsys.readouterr().err == ""


def test_log_mode_writes_to_stderr_without_a_progress_file(monkeypatch, capsys):
    monkeypatch.delenv(progress.FILE_VARIABLE, raising=False)
    monkeypatch.setenv("KDNB_PROGRESS", "log")
    progress.log_epoch("ce:mlp seed=2", dict(METRICS, epoch=3), 3)
    assert capsys.readouterr().err.startswith("[ce:mlp seed=2] epoch 3/3 ")


# ------------------------------------------------------------------------------------------------ in a kernel

KERNEL_CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

```{code-cell} ipython3
:tags: [parameters]
PROFILE = None
```

```{code-cell} ipython3
import os
from kdnb import progress

metrics = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.75, "train_time_s": 1.0}
for mode in ("bar", "log", "auto", "off"):
    os.environ["KDNB_PROGRESS"] = mode
    bar = progress.progress_bar(3, f"run-{mode}")
    bar.update(3)
    bar.set_postfix(epoch=1)
    bar.close()
    progress.log_epoch(f"run-{mode}", metrics, 1)
print("cell done")
```
"""


@pytest.mark.timeout(300)
def test_kernel_progress_reaches_the_runner_not_the_notebook(tmp_path, monkeypatch, capfd):
    """Every mode, inside a kernel started by the runner: the progress arrives through the relay and the
    notebook holds none of it; the kernel does not warn about unencrypted TCP."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # let ipykernel capture fd 2, as in real runs
    chapter = tmp_path / "progress_chapter.md"
    chapter.write_text(KERNEL_CHAPTER, encoding="utf-8")
    out = tmp_path / "executed.ipynb"
    monkeypatch.setattr(book_layout, "executed_path", lambda chapter: out)
    relayed: list[str] = []
    outcome = notebooks.execute(chapter, None, progress=relayed.append, timeout=240)
    assert outcome.error is None, outcome.error
    text = "".join(relayed)
    assert "run-bar" in text and "3/3" in text  # the bar, as text
    assert "[run-log] epoch 1/1 " in text and "[run-auto] epoch 1/1 " in text  # auto: lines through a file
    assert "run-off" not in text
    outputs, widgets = notebook_text(out)
    assert "cell done" in outputs
    for needle in ("run-", "epoch 1/1", "3/3", "it/s"):
        assert needle not in outputs, f"progress ({needle!r}) landed in the notebook"
    assert "FloatProgress" not in widgets and "FloatProgress" not in outputs, "a tqdm widget is in the notebook"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err


# --------------------------------------------------------------------------------------------- the CLI

@pytest.mark.timeout(900)
def test_kdnb_run_shows_each_epoch_of_each_run_in_the_terminal(tmp_path):
    """``python -m kdnb run`` on Chapter 0 (smoke): one line per epoch naming the run between the chapter's
    line and its result, no TCP warning, and none of it in the executed notebook."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KDNB_PROGRESS", progress.FILE_VARIABLE, "PYTEST_CURRENT_TEST")}
    env.update(KDNB_RUNS=str(tmp_path / "runs"), KDNB_EXECUTED=str(tmp_path / "executed"))
    result = subprocess.run([sys.executable, "-m", "kdnb", "run", "--profile", "smoke", "distillation"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=840)
    printed = result.stdout
    assert result.returncode == 0, printed
    lines = printed.splitlines()
    chapter = "book/part0/distillation.md"
    assert lines[1] == f"[1/1] {chapter} ...", printed  # the chapter's line, before any training
    assert re.fullmatch(rf"\[1/1\] {re.escape(chapter)} \.\.\. ok \(\d+ s\)", lines[-1]), printed
    epochs: dict[str, list[int]] = {}
    for run, epoch, total in EPOCH_LINE.findall(printed):
        epochs.setdefault(run, []).append(int(epoch))
    assert {"ce:resnet8 seed=0", "kd:resnet8 seed=0"} <= set(epochs), printed
    for run, seen in epochs.items():
        assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 2, (run, seen)
    assert "without encryption" not in printed, printed
    executed = tmp_path / "executed" / "book" / "part0" / "distillation.ipynb"
    assert executed.exists(), f"KDNB_EXECUTED was not honoured; {printed}"
    outputs, widgets = notebook_text(executed)
    for run in epochs:
        assert run not in outputs, f"progress of {run} landed in the notebook"
    assert not EPOCH_LINE.search(outputs) and "it/s" not in outputs
    assert "FloatProgress" not in widgets and "FloatProgress" not in outputs, "a tqdm widget is in the notebook"


def test_epoch_line_of_a_part_run_without_training_accuracy():
    """A part run (the IE-KD auto-encoder) classifies nothing: its epoch metrics have no train_acc."""
    from kdnb.progress import epoch_line

    line = epoch_line("ae", {"epoch": 1, "train_loss": 0.5, "train_time_s": 1.0}, 2)
    assert line == "[ae] epoch 1/2 loss=0.5000 (1.0 s)"
    full = epoch_line("s", {"epoch": 2, "train_loss": 0.5, "train_acc": 0.25, "test_acc": 0.5,
                            "train_time_s": 1.0}, 2)
    assert full == "[s] epoch 2/2 loss=0.5000 train_acc=0.2500 test_acc=0.5000 (1.0 s)"
