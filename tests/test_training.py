"""Tests for kdnb.train: schedules, determinism, NaN stops, stages, resume after interruption, probes."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdnb import distill, probes, progress, runs, storage, train
from kdnb.distill import Stage
from kdnb.runs import RunSpec
from kdnb.train import NonFiniteLoss, Schedule, Trainer

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("train_time_s",)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_spec(epochs: int = 2, per_class: int = 8, **changes) -> RunSpec:
    schedule = changes.pop("schedule", None) or Schedule(epochs=epochs, batch_size=16, lr=0.05)
    return RunSpec("fashion_mnist", "resnet8", schedule, train_per_class=per_class, test_per_class=4, **changes)


def make_trainer(spec: RunSpec, method_cls=distill.CE, **kwargs) -> Trainer:
    method = method_cls(runs.build_model(spec))
    return Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=spec.seed,
                   evaluation=runs.batches(spec, "test", "cpu"), device="cpu", **kwargs)


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------------------------------------- schedule
def test_multistep_schedule_closed_form():
    s = Schedule(epochs=8, lr=0.1, lr_schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    for progress, expected in [(0.0, 0.1), (0.25, 0.1), (0.4999, 0.1), (0.5, 0.01), (0.6, 0.01),
                               (0.75, 0.001), (0.99, 0.001)]:
        assert s.lr_at(progress) == pytest.approx(expected, rel=1e-12), progress


def test_cosine_schedule_closed_form():
    s = Schedule(epochs=8, lr=0.2, lr_schedule="cosine")
    assert s.lr_at(0.0) == pytest.approx(0.2)
    assert s.lr_at(0.5) == pytest.approx(0.1)
    assert s.lr_at(0.25) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert s.lr_at(0.999) == pytest.approx(0.0, abs=1e-5)
    values = [s.lr_at(p / 20) for p in range(20)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing


def test_constant_schedule():
    s = Schedule(epochs=3, lr=0.03, lr_schedule="constant")
    assert {s.lr_at(p) for p in (0.0, 0.5, 0.9)} == {0.03}


def test_invalid_lr_schedule_lists_choices():
    with pytest.raises(ValueError) as error:
        Schedule(epochs=3, lr_schedule="linear")
    for choice in ("multistep", "cosine", "constant"):
        assert choice in str(error.value)


@pytest.mark.parametrize("bad", [-1, 4])
def test_checkpoint_outside_range(bad):
    with pytest.raises(ValueError, match=r"0\.\.3"):
        Schedule(epochs=3, checkpoints=(0, bad))
    assert Schedule(epochs=3, checkpoints=(3, 0, 0)).checkpoints == (0, 3)


def test_invalid_epochs_and_batch_size():
    with pytest.raises(ValueError):
        Schedule(epochs=0)
    with pytest.raises(ValueError):
        Schedule(epochs=1, batch_size=0)


def test_lr_follows_schedule_within_a_run():
    spec = tiny_spec(schedule=Schedule(epochs=4, batch_size=16, lr=0.1, milestones=(0.5, 0.75)))
    history = make_trainer(spec).fit()
    # 5 steps per epoch; the last step of epoch e has progress (5e - 1) / 20: 0.2, 0.45, 0.7, 0.95.
    # "x0.1 at 0.5 and 0.75" means epoch 3 runs at 0.01 and epoch 4 ends at 0.001.
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_run_different_seed_different_run():
    spec = tiny_spec()
    a, b = make_trainer(spec), make_trainer(spec)
    ha, hb = a.fit(), b.fit()
    assert len(ha) == 2
    assert without_timings(ha) == without_timings(hb)
    assert_same_state(a.method.state_dict(), b.method.state_dict())

    c = make_trainer(spec.replace(seed=1))
    hc = c.fit()
    assert without_timings(hc) != without_timings(ha)
    assert any(not torch.equal(x, y) for x, y in zip(a.method.state_dict().values(),
                                                     c.method.state_dict().values()))


def test_trainer_seed_alone_changes_batch_order():
    # Same initialisation, different data order: the trainer's seed must reach the batches.
    spec = tiny_spec(epochs=1)
    a = make_trainer(spec)
    method = distill.CE(runs.build_model(spec))
    b = Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, seed=5, device="cpu")
    a.fit(), b.fit()
    assert any(not torch.equal(x, y) for x, y in zip(a.method.state_dict().values(),
                                                     b.method.state_dict().values()))


# ------------------------------------------------------------------------------------------ NaN losses
class NaNAtStep3(distill.CE):
    def __init__(self, student):
        super().__init__(student)
        self.calls = 0

    def forward(self, x, y, context=None):
        logits, terms = super().forward(x, y, context)
        self.calls += 1
        aux = logits.abs().mean() * 0.0
        if self.calls == 3:
            aux = aux + float("nan")
        return logits, {**terms, "aux": aux}


def test_non_finite_loss_names_epoch_step_and_terms():
    spec = tiny_spec()
    trainer = make_trainer(spec, method_cls=NaNAtStep3)
    with pytest.raises(NonFiniteLoss) as error:
        trainer.fit()
    message = str(error.value)
    assert "epoch 1" in message and "step 3" in message
    assert "aux=nan" in message
    ce_value = re_value(message, "ce")
    assert math.isfinite(ce_value) and ce_value > 0
    assert isinstance(error.value, FloatingPointError)


def re_value(message: str, name: str) -> float:
    import re

    match = re.search(rf"\b{name}=([^,\s)]+)", message)
    assert match, f"{name}= missing from {message!r}"
    return float(match.group(1))


def test_non_finite_loss_later_epoch():
    class NaNInEpoch2(distill.CE):
        calls = 0

        def forward(self, x, y, context=None):
            logits, terms = super().forward(x, y, context)
            NaNInEpoch2.calls += 1
            if NaNInEpoch2.calls == 7:  # 5 steps per epoch -> epoch 2, step 2
                terms["ce"] = terms["ce"] * float("inf")
            return logits, terms

    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 2.*ce=inf"):
        make_trainer(tiny_spec(), method_cls=NaNInEpoch2).fit()


# ----------------------------------------------------------------------------------------------- stages
class TwoStages(distill.CE):
    """Stage 1 trains the CE term with the stem frozen; stage 2 trains everything (CE + an aux term)."""

    def forward(self, x, y, context=None):
        logits, terms = super().forward(x, y, context)
        return logits, {**terms, "aux": 0.01 * logits.pow(2).mean()}

    def stages(self, epochs):
        return [Stage("warmup", 1, terms=("ce",), frozen=("student.stem",)), Stage("all")]


def stem_params(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("stem.") and not _is_buffer(k)}


def _is_buffer(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_stages_freeze_and_select_terms(tmp_path):
    spec = tiny_spec(schedule=Schedule(epochs=3, batch_size=16, lr=0.05, checkpoints=(0, 1, 3)))
    trainer = make_trainer(spec, method_cls=TwoStages, run_dir=tmp_path)
    history = trainer.fit()
    assert [row["stage"] for row in history] == ["warmup", "all", "all"]
    assert "train_aux" not in history[0] and "train_aux" in history[1]
    assert history[0]["train_loss"] == pytest.approx(history[0]["train_ce"])
    assert history[1]["train_loss"] == pytest.approx(history[1]["train_ce"] + history[1]["train_aux"])

    at = {e: storage.load_torch(trainer.checkpoint_path(e))["student"] for e in (0, 1, 3)}
    assert stem_params(at[0]), "resnet8 should have parameters under 'stem'"
    for name, value in stem_params(at[0]).items():
        assert torch.equal(value, at[1][name]), f"frozen {name} moved during stage 1"
    assert any(not torch.equal(value, at[3][name]) for name, value in stem_params(at[1]).items()), \
        "stem did not train in stage 2"
    others = [k for k in at[0] if not k.startswith("stem.") and not _is_buffer(k)]
    assert any(not torch.equal(at[0][k], at[1][k]) for k in others), "unfrozen parameters did not train"


@pytest.mark.parametrize("stages", [
    [Stage("a", 1), Stage("b", 1)],          # sums to 2, not 3
    [Stage("a", 4), Stage("b")],             # more than the schedule
    [Stage("a"), Stage("b")],                # two open-ended stages
])
def test_stage_epochs_must_fit_schedule(stages):
    class Staged(distill.CE):
        def stages(self, epochs):
            return stages

    spec = tiny_spec(epochs=3)
    with pytest.raises(ValueError, match="3-epoch"):
        make_trainer(spec, method_cls=Staged)


def test_stage_freezing_everything_is_an_error():
    class AllFrozen(distill.CE):
        def stages(self, epochs):
            return [Stage("nothing", frozen=("student",))]

    with pytest.raises(ValueError, match="no parameter"):
        make_trainer(tiny_spec(epochs=1), method_cls=AllFrozen).fit()


# ----------------------------------------------------------------------------------------------- resume
def interrupt_after(epoch: int):
    def callback(metrics: dict) -> None:
        if metrics["epoch"] == epoch:
            raise KeyboardInterrupt

    return callback


class DropoutCE(distill.CE):
    """Draws from the global torch RNG every step: resume must restore that stream too."""

    def forward(self, x, y, context=None):
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(F.dropout(logits, 0.5, training=self.training), y)}


@pytest.mark.parametrize("method_cls", [distill.CE, DropoutCE])
def test_resume_after_keyboard_interrupt_equals_uninterrupted(tmp_path, method_cls):
    spec = tiny_spec(schedule=Schedule(epochs=4, batch_size=16, lr=0.05, checkpoints=(0, 2, 4)))

    def kwargs():  # a probe is stateful: one per trainer
        return dict(probes=[probes.create("path_length:classifier")])

    reference = make_trainer(spec, method_cls, run_dir=tmp_path / "b", **kwargs())
    expected = reference.fit()

    interrupted = make_trainer(spec, method_cls, run_dir=tmp_path / "a", on_epoch_end=interrupt_after(2),
                               **kwargs())
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert storage.load_torch(tmp_path / "a" / "state.pt")["epoch"] == 2

    resumed = make_trainer(spec, method_cls, run_dir=tmp_path / "a", **kwargs())
    trained = []
    resumed.on_epoch_end = lambda m: trained.append(m["epoch"])
    history = resumed.fit()
    assert trained == [3, 4], "the resumed trainer should only train the missing epochs"
    assert without_timings(history) == without_timings(expected)
    assert_same_state(resumed.method.state_dict(), reference.method.state_dict())
    for epoch in (0, 2, 4):
        assert_same_state(storage.load_torch(resumed.checkpoint_path(epoch))["student"],
                          storage.load_torch(reference.checkpoint_path(epoch))["student"])


def test_resume_at_stage_boundary_equals_uninterrupted(tmp_path):
    spec = tiny_spec(schedule=Schedule(epochs=3, batch_size=16, lr=0.05))
    reference = make_trainer(spec, method_cls=TwoStages, run_dir=tmp_path / "b")
    expected = reference.fit()

    interrupted = make_trainer(spec, method_cls=TwoStages, run_dir=tmp_path / "a",
                               on_epoch_end=interrupt_after(1))  # epoch 1 ends stage "warmup"
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make_trainer(spec, method_cls=TwoStages, run_dir=tmp_path / "a")
    history = resumed.fit()
    assert without_timings(history) == without_timings(expected)
    assert_same_state(resumed.method.state_dict(), reference.method.state_dict())


def test_corrupt_state_restarts_from_scratch(tmp_path):
    spec = tiny_spec(epochs=2)
    reference = make_trainer(spec).fit()
    interrupted = make_trainer(spec, run_dir=tmp_path, on_epoch_end=interrupt_after(1))
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    state = tmp_path / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    trained = []
    resumed = make_trainer(spec, run_dir=tmp_path, on_epoch_end=lambda m: trained.append(m["epoch"]))
    assert without_timings(resumed.fit()) == without_timings(reference)
    assert trained == [1, 2]


_CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from kdnb import runs
spec = runs.RunSpec.from_dict(json.loads(sys.argv[1]))
runs.train_or_load(spec, root=sys.argv[2], device="cpu")
"""


def _child_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", KDNB_DEVICE="cpu", KDNB_PROGRESS="off")
    env.pop("KDNB_THREADS", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, monkeypatch):
    # 6 epochs of 25 steps: long enough that the child is killed mid-run even on an idle machine.
    epochs = 6
    spec = tiny_spec(per_class=40, schedule=Schedule(epochs=epochs, batch_size=16, lr=0.05, checkpoints=(0, 3, 6)))
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    run_dir = root_a / spec.key()

    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(spec.to_dict()), str(root_a)],
                             cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    saved_epoch = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and child.poll() is None:
            if (run_dir / "metrics.json").exists():
                break
            try:
                saved_epoch = storage.load_torch(run_dir / "state.pt")["epoch"]
            except (storage.CorruptFile, FileNotFoundError, KeyError):
                saved_epoch = None
            if saved_epoch is not None and saved_epoch >= 1:
                break
            time.sleep(0.01)
        assert not (run_dir / "metrics.json").exists(), "the child finished before it could be killed"
        assert child.poll() is None, child.communicate()[0].decode(errors="replace")[-2000:]
        assert saved_epoch is not None and 1 <= saved_epoch < epochs
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "final.pt").exists()

    # Where the run will resume from: the last state written, intact even if the kill hit a rewrite of it.
    resume_from = storage.load_torch(run_dir / "state.pt")["epoch"]
    assert saved_epoch <= resume_from < epochs
    print(f"killed after epoch {saved_epoch}; resuming from {resume_from}")
    trained = []
    original = Trainer._train_epoch

    def counting(self, epoch, *args, **kwargs):
        trained.append(epoch)
        return original(self, epoch, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", counting)
    resumed = runs.train_or_load(spec, root=root_a, device="cpu")
    assert trained == list(range(resume_from, epochs))
    assert not (run_dir / "state.pt").exists()

    trained.clear()
    fresh = runs.train_or_load(spec, root=root_b, device="cpu")
    assert trained == list(range(epochs))

    assert without_timings(resumed.history) == without_timings(fresh.history)
    assert resumed.final == fresh.final
    assert_same_state(storage.load_torch(run_dir / "final.pt")["student"],
                      storage.load_torch(root_b / spec.key() / "final.pt")["student"])
    for epoch in spec.schedule.checkpoints:
        assert_same_state(storage.load_torch(resumed.checkpoint_path(epoch))["student"],
                          storage.load_torch(fresh.checkpoint_path(epoch))["student"])


# ------------------------------------------------------------------------------------------------ probes
def flat(state: dict, prefix: str) -> torch.Tensor:
    return torch.cat([v.flatten() for k, v in state.items() if k.startswith(prefix + ".") and not _is_buffer(k)])


def test_path_length_at_least_displacement(tmp_path):
    spec = tiny_spec(schedule=Schedule(epochs=2, batch_size=16, lr=0.05, checkpoints=(0,)),
                     probes=("path_length:classifier", "path_length:stage3"))
    run = runs.train_or_load(spec, root=tmp_path, device="cpu")
    w0 = storage.load_torch(run.checkpoint_path(0))["student"]
    wT = storage.load_torch(run.path / "final.pt")["student"]
    for prefix in ("classifier", "stage3"):
        length = run.final[f"path_length:{prefix}"]
        displacement = (flat(wT, prefix) - flat(w0, prefix)).norm().item()
        assert displacement > 0
        assert length >= displacement * (1 - 1e-6)
        # Path length accumulates: non-decreasing over epochs.
        per_epoch = [row[f"path_length:{prefix}"] for row in run.history]
        assert per_epoch[0] > 0 and per_epoch[1] >= per_epoch[0]


def test_path_length_of_one_step_is_the_step_norm():
    spec = tiny_spec(schedule=Schedule(epochs=1, batch_size=200, lr=0.05))  # 80 images: one step
    probe = probes.create("path_length:classifier")
    trainer = make_trainer(spec, probes=[probe])
    before = flat(trainer.method.student.state_dict(), "classifier").clone()
    history = trainer.fit()
    after = flat(trainer.method.student.state_dict(), "classifier")
    assert history[0]["path_length:classifier"] == pytest.approx((after - before).norm().item(), rel=1e-5)


def test_unknown_probe_lists_choices():
    with pytest.raises(ValueError, match="path_length"):
        probes.create("curvature:classifier")


def test_probe_prefix_matching_nothing_lists_modules():
    with pytest.raises(ValueError) as error:
        make_trainer(tiny_spec(epochs=1), probes=[probes.create("path_length:nonexistent")])
    message = str(error.value)
    assert "nonexistent" in message
    for module in ("classifier", "stem"):
        assert module in message


# ----------------------------------------------------------------------------------------- progress modes

def test_log_mode_prints_one_line_per_epoch(monkeypatch, capsys):
    monkeypatch.setenv("KDNB_PROGRESS", "log")
    make_trainer(tiny_spec(epochs=2), desc="tiny").fit()
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("[tiny]")]
    assert [l.split()[2] for l in lines] == ["1/2", "2/2"]
    assert all("test_acc=" in l and "loss=" in l for l in lines)


def test_off_mode_is_silent_and_auto_logs_when_redirected(monkeypatch, capsys):
    monkeypatch.setenv("KDNB_PROGRESS", "off")
    make_trainer(tiny_spec(epochs=1), desc="tiny").fit()
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("KDNB_PROGRESS", "auto")
    assert progress.progress_mode() == "log"  # pytest captures stderr: not a terminal, not a notebook
    monkeypatch.setenv("KDNB_PROGRESS", "loud")
    with pytest.raises(ValueError, match="auto, bar, log, off"):
        progress.progress_mode()
