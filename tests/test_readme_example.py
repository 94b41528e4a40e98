"""The README's worked example of a two-stage method runs as written, and does what it says."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from kdnb import distill, modules, runs
from kdnb.train import Schedule

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def example_source() -> str:
    match = re.search(r"<!-- example: mimic-then-freeze -->\n```python\n(.*?)```\n<!-- /example -->",
                      README.read_text(), re.S)
    assert match, "the README lost its worked example"
    return match.group(1)


def test_readme_two_stage_example(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KDNB_RUNS", str(tmp_path))
    monkeypatch.setitem(distill.METHODS, "mimic_then_freeze", None)  # restored after the test
    namespace: dict = {}
    exec(compile(example_source(), "README.md example", "exec"), namespace)
    run = namespace["run"]
    assert [row["stage"] for row in run.history] == ["mimic", "classify"]
    assert set(k for k in run.history[0] if k.startswith("train_")) >= {"train_hint", "train_loss"}
    assert "train_hint" not in run.history[1] and "train_ce" in run.history[1]
    assert "mimic" in capsys.readouterr().out

    # The frozen part (everything computing stage2, and the connector) is unchanged in "classify", buffers too.
    spec = run.spec.replace(schedule=Schedule(epochs=2, batch_size=32, checkpoints=(1, 2)))
    staged = runs.train_or_load(spec)
    after_mimic, final = staged.model(epoch=1, device="cpu"), staged.model(device="cpu")
    frozen = final.prefixes_up_to("stage2")
    assert "stage2" in frozen and "stage3" not in frozen
    changed = {k for k, v in final.state_dict().items() if not torch.equal(v, after_mimic.state_dict()[k])}
    assert changed, "the classify stage trained nothing"
    assert all(not modules.under_any(k, frozen) for k in changed), sorted(changed)
    assert any(k.startswith("stage3.") for k in changed) and any(k.startswith("classifier.") for k in changed)
