"""``make gpu-check`` (``python -m kdnb.gpu_check``): the CUDA paths that CPU tests cannot reach, in minutes.

One line per check and a final ``N passed, N failed`` line; exit status 1 if any check failed. On a machine
without CUDA it says so and exits 0. Runs go to a temporary folder (never the user's ``runs/``).

Checks: a short training run per method family on CUDA (CE, KD with a teacher, DML with two networks and two
optimisers, a staged method with a frozen part); resume after an interruption equals an uninterrupted run;
``TensorBatches`` on the device equal the CPU batches; cuDNN is deterministic while training and two identical
runs agree; the trainer does not synchronise with the device per step (``torch.cuda.set_sync_debug_mode``);
a non-finite loss is still caught by the deferred check; Part I's entropy estimator and the all-class Grad-CAM maps
(:func:`kdnb.explain.class_maps`) give the CPU's answer on the same inputs and noise; one run trained by
``torchrun`` on 1 GPU (and on 2 where there are two; NCCL) equals the single-process run.

Every check takes the device as an argument, so the test suite runs them with ``device="cpu"`` (the comparisons
with the CPU are then exact, and the distributed run uses 2 processes on gloo): the logic stays exercised on
machines without a GPU.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import torch

TOLERANCE = 1e-4  # max |difference| allowed between two CUDA runs that should agree (atomics in some kernels)
PER_CLASS = 64  # training images per class: 10 steps of 64 per epoch
# Entropy maps (nats) on another device, same images and noise: kernels round differently (~1e-6 relative per op
# in strict fp32); the distortion takes f(x + σε) − f(x) at σ ≈ 0.01, a cancellation that amplifies that to
# ~1e-4 relative, and 15 damped steps keep it there: ≲ 1e-3 nats. 1e-2 leaves 10x; the maps span about a nat
# across cells, and TF32 left on (1e-3 relative on the features, ~10 % on the distortion) would exceed it.
ENTROPY_TOLERANCE = 1e-2
# Grad-CAM maps on another device, relative to the largest map value: one forward (and K backwards) in fp32,
# ~1e-6 relative rounding per op through 8 layers; 1e-4 leaves 10-100x.
MAPS_TOLERANCE = 1e-4


def _spec(**changes):
    from .runs import RunSpec
    from .train import Schedule

    schedule = changes.pop("schedule", None) or Schedule(epochs=2, batch_size=64, lr=0.05, checkpoints=(0, 0.5, 2))
    return RunSpec("fashion_mnist", changes.pop("model", "resnet8"), schedule, train_per_class=PER_CLASS,
                   test_per_class=PER_CLASS // 2, **changes)


def _max_difference(a: dict, b: dict) -> float:
    return max((x.double() - y.double()).abs().max().item() if x.is_floating_point() else float((x != y).any())
               for x, y in zip(a.values(), b.values()))


def _on(module: torch.nn.Module, device: str) -> bool:
    return all(p.device.type == device for p in module.parameters())


def check_method_families(root: Path, device: str) -> str:
    from . import runs

    teacher = _spec(model="resnet14")
    done = []
    for spec in (teacher, _spec(method="kd", teacher=teacher), _spec(method="dml", method_args={"peer": "cnn6"})):
        run = runs.train_or_load(spec, root=root, device=device)
        assert run.metrics["device"].startswith(device), run.metrics["device"]
        assert 0.0 <= run.final["test_acc"] <= 1.0 and torch.isfinite(torch.tensor(run.final["train_loss"]))
        assert _on(run.model(device=device), device) and _on(run.model(epoch=0.5, device=device), device)
        done.append(f"{spec.method} acc {run.final['test_acc']:.2f}")
    assert _on(run.network("peer", epoch=0.5, device=device), device)  # the last run is DML's
    return ", ".join(done)


def check_staged_method(root: Path, device: str) -> str:
    from . import distill, runs
    from .distill import Stage
    from .train import Trainer

    class WarmupThenKD(distill.KD):
        def stages(self, epochs):
            return [Stage("ce warm-up", 1, terms=("ce",), frozen=("student.stem",)), Stage("kd")]

    teacher = runs.train_or_load(_spec(model="resnet14"), root=root, device=device).model(device=device)
    spec = _spec()
    method = WarmupThenKD(runs.build_model(spec), teacher)
    stem_before = {k: v.clone() for k, v in method.student.stem.state_dict().items()}
    stem_after_warmup = {}
    trainer = Trainer(method, runs.batches(spec, "train", device), spec.schedule, device=device,
                      evaluation=runs.batches(spec, "test", device),
                      on_epoch_end=lambda m: stem_after_warmup.update(
                          {k: v.clone() for k, v in method.student.stem.state_dict().items()} if m["epoch"] == 1
                          else {}))
    history = trainer.fit()
    assert [row["stage"] for row in history] == ["ce warm-up", "kd"]
    assert _max_difference(stem_before, stem_after_warmup) == 0.0, "the frozen stem moved (weights or BN buffers)"
    assert _max_difference(stem_after_warmup, method.student.stem.state_dict()) > 0, "the stem never trained"
    return f"frozen stem bit-identical through the warm-up; final acc {history[-1]['test_acc']:.2f}"


def check_resume(root: Path, device: str) -> str:
    from . import distill, runs
    from .train import Schedule, Trainer

    spec = _spec(schedule=Schedule(epochs=3, batch_size=64, lr=0.05))

    def trainer(folder: str, **kwargs) -> Trainer:
        return Trainer(distill.CE(runs.build_model(spec)), runs.batches(spec, "train", device), spec.schedule,
                       device=device, run_dir=root / folder, **kwargs)

    reference = trainer("uninterrupted")
    reference.fit()

    def stop(metrics):
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    try:
        trainer("interrupted", on_epoch_end=stop).fit()
        raise AssertionError("the interruption did not happen")
    except KeyboardInterrupt:
        pass
    resumed = trainer("interrupted")
    epochs = []
    resumed.on_epoch_end = lambda m: epochs.append(m["epoch"])
    resumed.fit()
    assert epochs == [3], epochs
    difference = _max_difference(reference.method.state_dict(), resumed.method.state_dict())
    assert difference <= TOLERANCE, f"resumed run differs by {difference:.3g}"
    return f"resumed after epoch 2; max |difference| to the uninterrupted run {difference:.3g}"


def check_batches_on_device(device: str) -> str:
    from . import runs

    spec = _spec()
    on_gpu, on_cpu = runs.batches(spec, "train", device), runs.batches(spec, "train", "cpu")
    count = 0
    for (xg, yg), (xc, yc) in zip(on_gpu.batches(1, 0), on_cpu.batches(1, 0)):
        assert xg.device.type == device and yg.device.type == device
        assert torch.equal(yg.cpu(), yc), "labels differ between devices"
        assert torch.allclose(xg.cpu(), xc, atol=1e-6), "images differ between devices"
        count += 1
    assert count == len(on_gpu)
    return f"{count} augmented batches on {device} equal the CPU ones"


def check_determinism(root: Path, device: str) -> str:
    from . import runs

    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark = True  # whatever the caller set, training must switch to deterministic kernels
    torch.backends.cudnn.deterministic = False
    try:
        spec = _spec(seed=3)
        first = runs.train_or_load(spec, root=root / "a", device=device)
        second = runs.train_or_load(spec, root=root / "b", device=device)
        restored = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
    assert restored, "the caller's cuDNN settings were not restored"
    difference = _max_difference(first.model(device="cpu").state_dict(), second.model(device="cpu").state_dict())
    assert difference <= TOLERANCE, f"two identical runs differ by {difference:.3g}"
    assert first.final["test_acc"] == second.final["test_acc"]
    return f"two identical runs agree (max |difference| {difference:.3g}); caller's cuDNN flags restored"


def check_no_sync_per_step() -> str:
    from . import distill, probes, runs
    from .train import Trainer

    def synchronisations(per_class: int) -> int:
        spec = _spec().replace(train_per_class=per_class)
        trainer = Trainer(distill.CE(runs.build_model(spec)), runs.batches(spec, "train", "cuda"), spec.schedule,
                          device="cuda", check_every=10_000, probes=[probes.create("path_length:classifier")])
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.fit()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    few, many = synchronisations(32), synchronisations(128)  # 5 vs 20 steps per epoch
    assert few == many, f"synchronisations grow with the steps: {few} for 5 steps/epoch, {many} for 20"
    return f"{few} synchronisations per run, the same for 5 and 20 steps per epoch"


def check_non_finite(device: str) -> str:
    from . import distill, runs
    from .train import NonFiniteLoss, Trainer

    class InfLater(distill.CE):
        calls = 0

        def forward(self, x, y, context=None):
            logits, terms = super().forward(x, y, context)
            InfLater.calls += 1
            if InfLater.calls >= bad_call:
                terms["ce"] = terms["ce"] * float("inf")
            return logits, terms

    spec = _spec()
    batches = runs.batches(spec, "train", device)
    bad_call = len(batches) + 2  # the second step of the second epoch
    try:
        Trainer(InfLater(runs.build_model(spec)), batches, spec.schedule, device=device, check_every=50).fit()
    except NonFiniteLoss as error:
        assert "epoch 2, step 2 " in str(error) and "ce=inf" in str(error), str(error)
        return str(error).split(":", 1)[1].strip()[:90]
    raise AssertionError("a non-finite loss went unnoticed")


@contextlib.contextmanager
def _noise_from_the_cpu():
    """The estimator's noise drawn by CPU generators and moved to the device, for the duration: a CUDA generator
    draws other numbers than a CPU one from the same seed, and the comparison needs the same perturbations."""
    from .concepts import estimator

    original = estimator._Noise

    class CPUNoise(original):
        def __init__(self, seeds, shape, device):
            super().__init__(seeds, shape, torch.device("cpu"))
            self.target = device

        def draw(self, images, count):
            return super().draw(images, count).to(self.target)

    estimator._Noise = CPUNoise
    try:
        yield
    finally:
        estimator._Noise = original


def _network_and_images(count: int):
    from . import runs

    spec = _spec()
    x, _ = next(iter(runs.batches(spec, "test", "cpu").batches(0, 0)))
    return runs.build_model(spec).eval(), x[:count]  # untrained, seeded: the arithmetic is what is compared


def check_estimator(device: str) -> str:
    from .concepts import estimate_entropy, feature_fn

    model, x = _network_and_images(2)
    options = {"converged": dict(samples=8, sf_samples=16, converged_steps=15, chunk=8),
               "linearised": dict(vjps=8, steps=30, extra_steps=10, chunk=8)}
    worst = {}
    for mode, settings in options.items():
        with _noise_from_the_cpu():
            here = estimate_entropy(feature_fn(model.to(device), "stage2"), x, 7, mode=mode, device=device,
                                    **settings)
            there = estimate_entropy(feature_fn(model.to("cpu"), "stage2"), x, 7, mode=mode, device="cpu",
                                     **settings)
        assert bool(here.valid.all()) and bool(torch.isfinite(here.entropy).all()), f"{mode}: invalid images"
        worst[mode] = (here.entropy - there.entropy).abs().max().item()
        assert worst[mode] <= ENTROPY_TOLERANCE, f"{mode}: entropy maps differ by {worst[mode]:.3g} nats"
    return ", ".join(f"{mode}: max |ΔH| {value:.2g} nats" for mode, value in worst.items())


def check_class_maps(device: str) -> str:
    from .explain import class_maps

    model, x = _network_and_images(8)
    worst = {}
    for layer in (None, "stage2"):  # the closed-form fast path, and K backwards through the graph
        here = class_maps(model.to(device), x.to(device), "gradcam", layer).cpu()
        there = class_maps(model.to("cpu"), x, "gradcam", layer)
        assert here.shape == there.shape and here.shape[1] == 10
        scale = there.abs().max().item()
        assert scale > 0, "every map is zero: nothing was compared"
        worst[layer or "default layer"] = (here - there).abs().max().item() / scale
        assert worst[layer or "default layer"] <= MAPS_TOLERANCE, f"maps at {layer} differ: {worst}"
    return ", ".join(f"{layer}: max relative difference {value:.2g}" for layer, value in worst.items())


def _torchrun(processes: int, spec_path: Path, root: Path, device: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "kdnb", "train", str(spec_path), "--device", device]
    env = {**os.environ, "KDNB_RUNS": str(root), "KDNB_PROGRESS": "off", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"torchrun failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"


def check_distributed(root: Path, device: str) -> str:
    """The run trained by ``torchrun`` on 1 and (where present) 2 GPUs against the single-process run on one
    GPU: the same key, and weights and metrics within :data:`TOLERANCE` (an MLP: no BatchNorm, whose statistics
    over a process's share differ from the whole batch's, and no dropout; README, "Several processes")."""
    from . import runs, storage
    from .train import Schedule

    spec = _spec(model="mlp", model_args={"hidden": (64,)},
                 schedule=Schedule(epochs=2, batch_size=50, lr=0.05, checkpoints=(0, 1)))
    one = runs.train_or_load(spec, root=root / "one", device=device)
    (root / "spec.json").write_text(json.dumps(spec.to_dict()))
    counts = [2] if device == "cpu" else [1, *([2] if torch.cuda.device_count() >= 2 else [])]
    done = []
    for processes in counts:
        _torchrun(processes, root / "spec.json", root / f"on{processes}", device)
        folder = root / f"on{processes}" / spec.key()  # the single-process run's key
        metrics = storage.load_json(folder / "metrics.json")
        assert metrics["processes"] == processes and metrics["device"].startswith(device), metrics["device"]
        weights = storage.load_torch(folder / "final.pt")["student"]
        difference = _max_difference(one.model(device="cpu").state_dict(), {k: v.cpu() for k, v in weights.items()})
        assert difference <= TOLERANCE, f"{processes} processes: weights differ by {difference:.3g}"
        assert abs(metrics["final"]["test_loss"] - one.final["test_loss"]) <= TOLERANCE * (1 + one.final["test_loss"])
        done.append(f"{processes} process{'es' if processes > 1 else ''}: max |Δweight| {difference:.2g}")
    return ", ".join(done)


def checks(root: Path, device: str) -> list[tuple[str, Callable[[], str]]]:
    """The checks, in order, as ``(name, run)``; ``device`` is ``"cuda"`` (the CPU runs them in the tests)."""
    found = [
        ("method families (ce, kd, dml)", lambda: check_method_families(root / "families", device)),
        ("staged method with a frozen part", lambda: check_staged_method(root / "families", device)),
        ("resume", lambda: check_resume(root / "resume", device)),
        ("TensorBatches on the device", lambda: check_batches_on_device(device)),
        ("deterministic kernels", lambda: check_determinism(root / "determinism", device)),
        ("non-finite loss", lambda: check_non_finite(device)),
        ("entropy estimator against the CPU", lambda: check_estimator(device)),
        ("Grad-CAM class maps against the CPU", lambda: check_class_maps(device)),
        ("one run on several processes (torchrun)", lambda: check_distributed(root / "distributed", device)),
    ]
    if device == "cuda":
        found.append(("no synchronisation per step", check_no_sync_per_step))
    return found


def run_checks(device: str = "cuda") -> tuple[int, int]:
    """Run every check on ``device``, one line each; returns ``(passed, failed)``."""
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="kdnb-gpu-check-") as folder:
        for name, check in checks(Path(folder), device):
            began = time.perf_counter()
            try:
                detail = check()
                passed += 1
                print(f"PASS {name} on {device} ({time.perf_counter() - began:.1f} s): {detail}", flush=True)
            except Exception as error:  # one failing check must not hide the others
                failed += 1
                print(f"FAIL {name} on {device} ({time.perf_counter() - began:.1f} s): "
                      f"{type(error).__name__}: {error}", flush=True)
                traceback.print_exc(limit=3, file=sys.stdout)
    return passed, failed


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; nothing to check (exit 0). Run it on a machine with a GPU.")
        return 0
    os.environ.setdefault("KDNB_PROGRESS", "off")
    print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
          flush=True)
    passed, failed = run_checks("cuda")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
