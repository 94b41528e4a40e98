"""Tests for kdnb.runs (RunSpec hashing, the run cache, corruption handling, teachers) and kdnb.storage."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdnb import runs, storage
from kdnb.runs import RunSpec
from kdnb.train import Schedule

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("train_time_s",)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_spec(**changes) -> RunSpec:
    schedule = changes.pop("schedule", None) or Schedule(epochs=2, batch_size=16, lr=0.05, checkpoints=(0, 1))
    return RunSpec("fashion_mnist", changes.pop("model", "resnet8"), schedule, train_per_class=8,
                   test_per_class=4, **changes)


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name].cpu(), b[name].cpu()), name


# ---------------------------------------------------------------------------------------------- RunSpec
def test_key_is_stable_across_processes():
    spec = tiny_spec(method="kd", method_args={"temperature": 4.0, "alpha": 0.9}, teacher=tiny_spec(seed=3))
    code = ("import json, sys\nfrom kdnb.runs import RunSpec\n"
            "print(RunSpec.from_dict(json.loads(sys.argv[1])).key())")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec.to_dict())], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == spec.key()
    assert len(spec.key()) == 16 and int(spec.key(), 16) >= 0


def test_key_ignores_method_args_order():
    a = tiny_spec(method="kd", method_args={"temperature": 4.0, "alpha": 0.9})
    b = tiny_spec(method="kd", method_args={"alpha": 0.9, "temperature": 4.0})
    c = tiny_spec(method="kd", method_args=(("alpha", 0.9), ("temperature", 4.0)))
    assert a.key() == b.key() == c.key()
    assert a == b == c and hash(a) == hash(b)


@pytest.mark.parametrize("change", [
    dict(seed=1),
    dict(method_args={"temperature": 2.0}),
    dict(teacher=tiny_spec(model="cnn6")),
    dict(train_per_class=9),
    dict(subset_seed=1),
    dict(augment=None),
    dict(probes=("path_length:classifier",)),
    dict(schedule=Schedule(epochs=2, batch_size=16, lr=0.1, checkpoints=(0, 1))),
    dict(schedule=Schedule(epochs=2, batch_size=16, lr=0.05, checkpoints=(0,))),
    dict(model="cnn6"),
])
def test_key_changes_with_every_field(change):
    base = tiny_spec(method="kd", method_args={"temperature": 4.0}, teacher=tiny_spec(seed=7))
    assert base.replace(**change).key() != base.key()


def test_teacher_change_changes_key():
    a = tiny_spec(method="kd", teacher=tiny_spec(seed=0))
    b = tiny_spec(method="kd", teacher=tiny_spec(seed=1))
    assert a.key() != b.key()
    assert tiny_spec(method="kd").key() != a.key()


def test_to_dict_from_dict_round_trip():
    spec = tiny_spec(method="kd", method_args={"temperature": 4.0, "alpha": 0.5},
                     teacher=tiny_spec(seed=2, probes=("path_length:stem",)), probes=("path_length:classifier",))
    through_json = json.loads(json.dumps(spec.to_dict()))
    back = RunSpec.from_dict(through_json)
    assert back == spec
    assert back.key() == spec.key()
    assert isinstance(back.teacher, RunSpec) and back.teacher == spec.teacher
    assert back.schedule.checkpoints == (0, 1) and back.schedule.milestones == (0.5, 0.75)


@pytest.mark.parametrize("value", [{"a": 1}, torch.tensor(1.0), object(), [1, {"a": 1}]])
def test_unhashable_hyper_parameter(value):
    with pytest.raises(TypeError, match="temperature"):
        tiny_spec(method="kd", method_args={"temperature": value})


def test_teacher_on_another_dataset():
    teacher = RunSpec("mnist", "resnet8", Schedule(epochs=1))
    with pytest.raises(ValueError, match="mnist"):
        tiny_spec(method="kd", teacher=teacher)


# ------------------------------------------------------------------------------------------- run cache
@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """One trained tiny run, shared by the cache tests (they only read it or copy it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    spec = tiny_spec()
    run = runs.train_or_load(spec, root=root, device="cpu")
    yield spec, root, run
    torch.set_num_threads(before)


def test_layout_of_a_finished_run(cached):
    spec, root, run = cached
    assert run.path == root / spec.key()
    for name in ("spec.json", "final.pt", "metrics.json", "ckpt/step_00000000.pt", "ckpt/step_00000005.pt"):
        assert storage.exists(run.path / name), name
    assert not (run.path / "state.pt").exists()
    assert RunSpec.from_dict(storage.load_json(run.path / "spec.json")) == spec
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert run.final == {k: v for k, v in run.history[-1].items()
                         if k not in ("epoch", "stage", "lr", "train_time_s")}
    assert {"test_acc", "test_loss", "train_acc", "train_loss"} <= set(run.final)
    assert run.metrics["train_images"] == 80


def test_second_call_loads_without_training(cached, count_trainers):
    spec, root, run = cached
    again = runs.train_or_load(spec, root=root, device="cpu")
    assert count_trainers == []
    assert again.metrics == run.metrics
    assert again.path == run.path


def test_model_loads_final_weights(cached):
    spec, root, run = cached
    net = run.model(device="cpu")
    assert not net.training
    assert_same_state(net.state_dict(), storage.load_torch(run.path / "final.pt")["student"])
    # ... which are the trained weights, not the initialisation.
    init = runs.build_model(spec).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in net.state_dict().items())


def test_model_at_checkpoint_epochs(cached):
    spec, root, run = cached
    at0 = run.model(epoch=0, device="cpu")
    assert_same_state(at0.state_dict(), runs.build_model(spec).state_dict())
    at1 = run.model(epoch=1, device="cpu")
    assert_same_state(at1.state_dict(), storage.load_torch(run.path / "ckpt" / "step_00000005.pt")["student"])
    assert any(not torch.equal(a, b) for a, b in zip(at0.state_dict().values(), at1.state_dict().values()))
    for epoch in (2, 5, -1):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            run.model(epoch=epoch)


def test_model_evaluates_to_recorded_accuracy(cached):
    spec, root, run = cached
    from kdnb.train import evaluate

    result = evaluate(run.model(device="cpu"), runs.batches(spec, "test", "cpu").batches(0, 0))
    assert result["acc"] == run.final["test_acc"]
    assert result["loss"] == pytest.approx(run.final["test_loss"], rel=1e-6)


def test_force_retrains(cached, count_trainers, tmp_path):
    spec, root, run = cached
    again = runs.train_or_load(spec, root=tmp_path, device="cpu")
    assert len(count_trainers) == 1
    forced = runs.train_or_load(spec, root=tmp_path, device="cpu", force=True)
    assert len(count_trainers) == 2
    assert without_timings(forced.history) == without_timings(again.history) == without_timings(run.history)


# ------------------------------------------------------------------------------------------ corruption
def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize("target, damage", [
    ("final.pt", _flip_byte),
    ("metrics.json", _truncate),
    ("ckpt/step_00000005.pt", _flip_byte),
    ("final.pt.sha256", lambda p: p.unlink()),
    ("ckpt/step_00000000.pt", lambda p: p.unlink()),
])
def test_damaged_run_is_redone(cached, count_trainers, tmp_path, target, damage):
    import shutil

    spec, root, run = cached
    shutil.copytree(run.path, tmp_path / spec.key())
    damage(tmp_path / spec.key() / target)
    redone = runs.train_or_load(spec, root=tmp_path, device="cpu")
    assert len(count_trainers) == 1, "a damaged run must be trained again"
    assert without_timings(redone.history) == without_timings(run.history)
    assert redone.final == run.final
    assert_same_state(storage.load_torch(redone.path / "final.pt")["student"],
                      storage.load_torch(run.path / "final.pt")["student"])
    storage.read_bytes(redone.path / target.removesuffix(".sha256"))  # repaired


def test_checkpoints_load_with_weights_only(cached):
    spec, root, run = cached
    for name in ("final.pt", "ckpt/step_00000000.pt", "ckpt/step_00000005.pt"):
        loaded = torch.load(run.path / name, map_location="cpu", weights_only=True)
        assert set(loaded) >= {"student"}


class Payload:
    """An arbitrary (non-tensor) object: weights_only unpickling must refuse it."""

    def __init__(self):
        self.value = 42


def test_load_torch_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    storage.save_torch({"student": Payload()}, path)
    storage.read_bytes(path)  # the checksum is fine...
    with pytest.raises(storage.UnreadableFile, match="cannot be loaded"):
        storage.load_torch(path)  # ... but weights_only refuses the object


def test_load_torch_round_trip(tmp_path):
    obj = {"epoch": 3, "student": {"w": torch.arange(6.0).reshape(2, 3)}, "history": [{"a": 1.5}]}
    storage.save_torch(obj, tmp_path / "x.pt")
    back = storage.load_torch(tmp_path / "x.pt")
    assert back["epoch"] == 3 and back["history"] == [{"a": 1.5}]
    assert torch.equal(back["student"]["w"], obj["student"]["w"])


# -------------------------------------------------------------------------------------------- teachers
def test_kd_run_trains_its_teacher_first(tmp_path, count_trainers):
    teacher = tiny_spec(schedule=Schedule(epochs=1, batch_size=16, lr=0.05))
    spec = tiny_spec(model="cnn6", method="kd", method_args={"temperature": 4.0, "alpha": 0.9},
                     teacher=teacher, schedule=Schedule(epochs=1, batch_size=16, lr=0.05))
    run = runs.train_or_load(spec, root=tmp_path, device="cpu")
    assert count_trainers == [teacher.label, spec.label]
    assert storage.exists(tmp_path / teacher.key() / "metrics.json")
    assert storage.exists(tmp_path / spec.key() / "metrics.json")
    assert {"train_ce", "train_kd"} <= set(run.final)
    assert run.final["train_loss"] == pytest.approx(run.final["train_ce"] + run.final["train_kd"])
    # The student's checkpoints hold the student only (cnn6 keys, no teacher keys).
    keys = set(storage.load_torch(run.path / "final.pt")["student"])
    assert keys == set(runs.build_model(spec).state_dict())

    count_trainers.clear()
    runs.train_or_load(spec, root=tmp_path, device="cpu")
    assert count_trainers == []  # both cached


def test_kd_without_teacher(tmp_path):
    with pytest.raises(ValueError, match="teacher"):
        runs.train_or_load(tiny_spec(method="kd"), root=tmp_path, device="cpu")


def test_unknown_method_lists_choices(tmp_path):
    with pytest.raises(ValueError) as error:
        runs.train_or_load(tiny_spec(method="fitnets_v9"), root=tmp_path, device="cpu")
    assert "fitnets_v9" in str(error.value)
    assert "ce" in str(error.value) and "kd" in str(error.value)


def test_runs_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KDNB_RUNS", str(tmp_path / "elsewhere"))
    assert runs.runs_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("KDNB_RUNS")
    assert runs.runs_root() == ROOT / "runs"


# --------------------------------------------------------------------------------------------- storage
def test_write_read_round_trip(tmp_path):
    path = tmp_path / "sub" / "blob.bin"
    storage.write_bytes(path, b"\x00hello\xff")
    assert storage.read_bytes(path) == b"\x00hello\xff"
    assert storage.exists(path)
    storage.save_json({"b": [1, 2], "a": 0.5}, tmp_path / "m.json")
    assert storage.load_json(tmp_path / "m.json") == {"a": 0.5, "b": [1, 2]}


def test_missing_sidecar_or_file(tmp_path):
    path = tmp_path / "blob.bin"
    storage.write_bytes(path, b"data")
    path.with_name("blob.bin.sha256").unlink()
    assert not storage.exists(path)
    with pytest.raises(storage.CorruptFile, match="missing"):
        storage.read_bytes(path)
    with pytest.raises(storage.CorruptFile):
        storage.read_bytes(tmp_path / "never-written.bin")


def test_checksum_mismatch(tmp_path):
    path = tmp_path / "blob.bin"
    storage.write_bytes(path, b"data" * 100)
    path.write_bytes(b"data" * 99 + b"dat!")
    with pytest.raises(storage.CorruptFile, match="checksum"):
        storage.read_bytes(path)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    for i in range(3):
        storage.write_bytes(tmp_path / "blob.bin", bytes([i]) * 1000)
        storage.save_torch({"w": torch.ones(3) * i}, tmp_path / "x.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "blob.bin.sha256", "x.pt", "x.pt.sha256"]
    assert storage.read_bytes(tmp_path / "blob.bin") == bytes([2]) * 1000


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "blob.bin"
    storage.write_bytes(path, b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(path, b"new")
    monkeypatch.undo()
    # The old content is intact and still vouched for; no temporary file is left behind.
    assert storage.read_bytes(path) == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "blob.bin.sha256"]


def test_remove(tmp_path):
    path = tmp_path / "blob.bin"
    storage.write_bytes(path, b"x")
    storage.remove(path)
    assert list(tmp_path.iterdir()) == []
    storage.remove(path)  # idempotent


def test_a_write_killed_midway_leaves_the_previous_content_valid(tmp_path, monkeypatch):
    """Whatever step of a rewrite is interrupted, the file reads back as the old or the new content."""
    path = tmp_path / "state.pt"
    storage.save_torch({"epoch": 1}, path)
    real = storage._atomic_write_bytes
    for failing_call in (1, 2, 3):  # sidecar (both digests), data, sidecar (new digest)
        storage.save_torch({"epoch": 1}, path)
        calls = []

        def flaky(target, data, calls=calls, failing_call=failing_call):
            calls.append(target)
            if len(calls) == failing_call:
                raise KeyboardInterrupt  # the process dies here
            real(target, data)

        monkeypatch.setattr(storage, "_atomic_write_bytes", flaky)
        with pytest.raises(KeyboardInterrupt):
            storage.save_torch({"epoch": 2}, path)
        monkeypatch.setattr(storage, "_atomic_write_bytes", real)
        assert storage.load_torch(path)["epoch"] == (1 if failing_call <= 2 else 2)
    # And a plain torch.load reads the file (no header of ours inside).
    assert torch.load(path, weights_only=True)["epoch"] == 2


def test_chain_links_each_run_to_the_previous_one(tmp_path):
    teacher = tiny_spec(model="resnet14", schedule=Schedule(epochs=1, batch_size=16, lr=0.05))
    assistant = tiny_spec(model="resnet8", method="kd", schedule=Schedule(epochs=1, batch_size=16, lr=0.05))
    student = assistant.replace(seed=1)
    linked = runs.chain(teacher, assistant, student)
    assert linked[0] == teacher and linked[1].teacher == teacher and linked[2].teacher == linked[1]
    assert len({s.key() for s in linked}) == 3
    final = runs.train_or_load(linked[-1], root=tmp_path, device="cpu")
    # Training the last link trained (and cached) every earlier one.
    assert all((tmp_path / s.key() / "metrics.json").exists() for s in linked)
    assert final.spec.teacher.teacher == teacher
