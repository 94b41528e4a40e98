"""One run on several processes (``torchrun --nproc_per_node=N -m kdnb train SPEC``, :mod:`kdnb.distributed`).

Two processes on the CPU (gloo) against one, on tiny runs. What is checked and why it can fail:

- every global batch is split across the processes without losing, repeating or reordering a sample, and one
  shard is the unsharded batches (the single-process path is untouched);
- a run trained by 2 processes has the single-process run's key and, for networks without BatchNorm or dropout,
  its weights and metrics within rounding; one batch of each epoch splits unevenly (13 + 12 samples), so a
  gradient average that ignored the shares' sizes would fail;
- KD (a frozen teacher) and DML (two networks, two optimisers per batch) likewise;
- with BatchNorm, the running mean recorded at the first step equals the single-process one (the weighted
  average of the shares' means is the batch mean);
- process 0 killed right after it wrote the resume point of epoch 1: a relaunch trains epochs 2 and 3 only and
  ends where the single-process run ends.

Tolerance (weights and losses, ``ATOL``): both sides compute the gradient of the same batch-mean loss, summed in
a different order (two shares, then a weighted all-reduce), so each step differs by a few float32 roundings
(relative ~1e-7 of values of order 0.1-1). Over these 8-12 small steps (lr 0.05, a one-hidden-layer MLP) the
growth is mild: on a 3-epoch run of this MLP we measured 6e-8 on the weights and 2e-7 on the losses. ``ATOL = 1e-5`` leaves a 50x
margin and is still ~100x below what the bugs above produce (an unweighted average of the 13/12 shares moves
the weights by ~1e-3 over the run). A test-set accuracy may flip only for an image whose logit margin is below
~1e-6: at most one image (1/80) is allowed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdnb import data, runs, storage
from kdnb.runs import RunSpec
from kdnb.train import Schedule

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5  # see the module docstring
PER_CLASS = 8  # 80 training and 80 test images

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(**changes) -> RunSpec:
    schedule = changes.pop("schedule", None) or Schedule(epochs=2, batch_size=25, lr=0.05, checkpoints=(0, 1))
    changes.setdefault("model_args", {"hidden": (32,)})
    return RunSpec("fashion_mnist", "mlp", schedule, train_per_class=PER_CLASS, test_per_class=PER_CLASS, **changes)


TEACHER = _mlp(model_args={"hidden": (48,)})
KD = _mlp(method="kd", teacher=TEACHER)
DML = _mlp(method="dml")
BATCHNORM = RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=20, lr=0.05, checkpoints=(0.25,)),
                    train_per_class=PER_CLASS, test_per_class=PER_CLASS)  # 10 + 10 per step; ckpt after step 1
VICTIM = _mlp(schedule=Schedule(epochs=3, batch_size=25, lr=0.05, checkpoints=(0, 1, 3)), seed=1)

# Run as a torchrun script: kdnb's own `train` command, except that process 0 dies (no clean-up, like a kill)
# right after it has written the resume point of the victim's first epoch (the only 3-epoch run).
DYING = """
import os, sys
from kdnb import train
from kdnb.__main__ import main

saved = train.Trainer._save_state

def save_then_die(self, epoch, optimizers):
    saved(self, epoch, optimizers)
    if self.schedule.epochs == 3 and epoch == 1 and self.replicas.rank == 0:
        os._exit(9)

train.Trainer._save_state = save_then_die
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _torchrun(args: list[str], env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    """Every spec above trained by 2 processes in a fresh cache: one launch that dies inside the victim run,
    then a relaunch that finishes it. Returns the folders and the relaunch's output."""
    folder = tmp_path_factory.mktemp("distributed")
    root = folder / "runs"
    specs = []
    for name, spec in [("kd", KD), ("dml", DML), ("batchnorm", BATCHNORM), ("victim", VICTIM)]:
        (folder / f"{name}.json").write_text(json.dumps(spec.to_dict()))  # a hand-written spec.json
        specs.append(str(folder / f"{name}.json"))
    (folder / "dying.py").write_text(DYING)
    env = {**os.environ, "KDNB_RUNS": str(root), "KDNB_PROGRESS": "log", "OMP_NUM_THREADS": "1"}
    killed = _torchrun([str(folder / "dying.py"), *specs], env)
    victim = root / VICTIM.key()
    assert killed.returncode != 0, "process 0 was meant to die:\n" + killed.stdout[-3000:] + killed.stderr[-3000:]
    state = storage.load_torch(victim / "state.pt")
    assert state["epoch"] == 1 and not (victim / "metrics.json").exists()
    relaunched = _torchrun(["-m", "kdnb", "train", VICTIM.key()], env)  # the run key, found in $KDNB_RUNS
    assert relaunched.returncode == 0, relaunched.stdout[-3000:] + relaunched.stderr[-3000:]
    return {"root": root, "relaunch": relaunched.stdout + relaunched.stderr}  # epoch lines go to stderr


def _one_process(spec: RunSpec, tmp_path: Path) -> runs.Run:
    return runs.train_or_load(spec, root=tmp_path / "one", device="cpu")


def _assert_same_run(spec: RunSpec, two_root: Path, tmp_path: Path) -> tuple[runs.Run, runs.Run]:
    one = _one_process(spec, tmp_path)
    two = runs.Run(spec, two_root / spec.key(), storage.load_json(two_root / spec.key() / "metrics.json"))
    assert one.path.name == two.path.name == spec.key()  # the same run: one identity, one cache folder
    assert two.metrics["processes"] == 2 and "processes" not in one.metrics
    for name in ("final.pt", "spec.json"):
        assert (two.path / name).exists()
    assert not (two.path / "state.pt").exists()
    for k, v in one.final.items():
        if k.endswith("acc"):
            assert abs(v - two.final[k]) <= 1 / (10 * PER_CLASS) + 1e-12, (k, v, two.final[k])
        else:
            assert v == pytest.approx(two.final[k], abs=ATOL, rel=ATOL), k
    a, b = storage.load_torch(one.path / "final.pt"), storage.load_torch(two.path / "final.pt")
    for part in ("student", "extras"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.allclose(a[part][k].float(), b[part][k].float(), atol=ATOL, rtol=0), (part, k)
    return one, two


def test_each_global_batch_is_shared_out_whole_and_in_order():
    images = torch.randint(0, 256, (23, 1, 28, 28), dtype=torch.uint8)
    whole = data.TensorBatches(images, torch.arange(23) % 10, 5, 0.5, 0.25, shuffle=True, augment="crop_flip")
    unsharded = list(whole.batches(3, 7))
    assert [len(y) for _, y in unsharded] == [5, 5, 5, 5, 3]
    order = whole.plan(3, 7).order
    for step, (_, y) in enumerate(unsharded):  # one process: consecutive windows of the epoch's order, as before
        assert torch.equal(y, whole.labels[order[step * 5:step * 5 + 5]])
    for shards in (1, 2, 3):
        views = [whole.shard(r, shards) for r in range(shards)]
        parts = [list(v.batches(3, 7)) for v in views]
        indices = [list(v.sample_indices(3, 7)) for v in views]
        assert all(len(p) == len(whole) for p in parts)  # every process takes every step
        for step, (x, y) in enumerate(unsharded):
            assert torch.equal(torch.cat([p[step][0] for p in parts]), x)  # same images, crops and flips
            assert torch.equal(torch.cat([p[step][1] for p in parts]), y)
            sizes = [len(p[step][1]) for p in parts]
            assert max(sizes) - min(sizes) <= 1  # shares differ by one sample at most
            assert torch.equal(torch.cat([i[step] for i in indices]), order[step * 5:step * 5 + 5])
    with pytest.raises(ValueError, match="cannot be shared by 4"):
        whole.shard(0, 4)  # the last batch holds 3 samples


def test_two_processes_train_the_single_process_run(two_processes, tmp_path):
    _assert_same_run(VICTIM, two_processes["root"], tmp_path)


def test_a_killed_run_resumes_where_it_stopped(two_processes):
    out = two_processes["relaunch"]
    assert "epoch 1/3" not in out and "epoch 2/3" in out and "epoch 3/3" in out, out  # resumed, not restarted
    assert VICTIM.key() in out  # the final report names the run


def test_kd_with_a_frozen_teacher_on_two_processes(two_processes, tmp_path):
    _assert_same_run(TEACHER, two_processes["root"], tmp_path)
    _assert_same_run(KD, two_processes["root"], tmp_path)


def test_dml_two_networks_two_optimisers_on_two_processes(two_processes, tmp_path):
    one, two = _assert_same_run(DML, two_processes["root"], tmp_path)
    assert "peer_test_acc" in two.final


def test_batchnorm_running_mean_is_the_whole_batch_mean(two_processes, tmp_path):
    one = _one_process(BATCHNORM, tmp_path)
    two = runs.Run(BATCHNORM, two_processes["root"] / BATCHNORM.key(),
                   storage.load_json(two_processes["root"] / BATCHNORM.key() / "metrics.json"))
    a, b = (storage.load_torch(r.checkpoint_path(0.25))["student"] for r in (one, two))
    first = "stem.1.running_mean"  # the first BatchNorm: its input is the same on both sides at step 1
    assert a[first].abs().max() > 1e-3  # it did record something
    assert torch.allclose(a[first], b[first], atol=1e-6, rtol=1e-5)
    assert torch.isfinite(torch.tensor(two.final["test_loss"])) and 0 <= two.final["test_acc"] <= 1
