"""The one trainer of the project: SGD (Nesterov), multi-step or cosine learning rate, stages, probes,
checkpoints at chosen epochs or steps, resume after interruption, and a loud stop on a non-finite loss.

Determinism: the batches of epoch ``e`` depend only on ``(seed, e)`` and the global torch RNG is reseeded at
each epoch start, so a run resumed from the state saved after epoch ``e`` continues exactly as an
uninterrupted run would (on CPU, for a fixed number of threads). cuDNN runs in its deterministic mode while a
run trains, whatever the caller set.

GPU hygiene: nothing in a step waits for the device. Loss terms, accuracy and the non-finite check accumulate
on the device and are read once per epoch (and every ``check_every`` steps for the non-finite check).

Several processes (:mod:`kdnb.distributed`): given ``replicas``, each process trains on its share of every batch
and the trainer averages the gradients of each update over the processes before the optimiser steps, so every
process takes the same step; only process 0 evaluates and writes files. Without ``replicas`` nothing of this runs.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import storage
from .distill.base import Context, Method, Stage, Update, check_updates
from .modules import Freeze, parameters_under, under_any
from .progress import log_epoch, progress_bar

LR_SCHEDULES = ("multistep", "cosine", "constant")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings of one run.

    ``milestones`` are fractions of the run (``(0.5, 0.75)`` is the CIFAR recipe "x0.1 at 80 and 120 of
    160"), so a profile can shorten a run without rewriting its schedule; the schedule spans every stage of
    the run unless a stage restarts it. ``checkpoints`` lists the epochs after which every network the method
    evaluates is kept; they may be fractional (``0.5``: after half of the first epoch's steps) for schedules
    that are dense early, and ``0`` is the initialisation.
    """

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    checkpoints: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        object.__setattr__(self, "checkpoints", tuple(sorted({_number(c) for c in self.checkpoints})))
        bad = [c for c in self.checkpoints if not 0 <= c <= self.epochs]
        if bad:
            raise ValueError(f"checkpoint epochs {bad} are outside 0..{self.epochs}")

    def lr_at(self, progress: float) -> float:
        """Learning rate at ``progress`` in [0, 1) of the run (evaluated every step: no scheduler state)."""
        if self.lr_schedule == "cosine":
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))
        if self.lr_schedule == "multistep":
            return self.lr * self.gamma ** sum(progress >= m for m in self.milestones)
        return self.lr

    def checkpoint_steps(self, steps_per_epoch: int) -> dict[int, int | float]:
        """``{optimizer steps done: checkpoint epoch}``; two checkpoints that fall on one step are kept once."""
        steps: dict[int, int | float] = {}
        for epoch in self.checkpoints:
            steps.setdefault(step_of(epoch, steps_per_epoch), epoch)
        return steps


def step_of(epoch: float, steps_per_epoch: int) -> int:
    """Optimizer steps done at (possibly fractional) ``epoch``, halves rounded up (0.5 of 5 steps is 3)."""
    return math.floor(epoch * steps_per_epoch + 0.5)


def checkpoint_name(step: int) -> str:
    """File of the checkpoint taken after ``step`` optimizer steps (0: at initialisation)."""
    return f"step_{step:08d}.pt"


class NonFiniteLoss(FloatingPointError):
    """Training produced NaN or inf; the message names the epoch, the step and every loss term."""


class Replicas(Protocol):
    """The processes that train one run together (:class:`kdnb.distributed.Group` implements it).

    ``average_gradients(parameters, samples)``: every parameter's gradient becomes the sample-weighted mean over
    the processes of their gradients (``samples``: this process's share of the batch), i.e. the gradient of the
    loss over the whole batch; ``average_statistics(module, samples)``: BatchNorm running statistics averaged over
    the processes, weighted the same way (each process normalised its own share); ``sum(values)``: a 1-D tensor
    summed over the processes.
    """

    rank: int
    size: int

    def average_gradients(self, parameters: list[nn.Parameter], samples: int) -> None: ...
    def average_statistics(self, module: nn.Module, samples: int) -> None: ...
    def sum(self, values: Tensor) -> Tensor: ...


class Probe(Protocol):
    """Measures something during training (e.g. a layer's weight path length) and reports it per epoch.

    ``series()`` (optional) returns per-step series as 1-D tensors, saved with the run (``Run.series``).
    ``after_step`` must not wait for the device (no ``.item()``): read values in ``epoch_metrics``.
    """

    name: str

    def attach(self, method: Method) -> None: ...
    def after_step(self, method: Method) -> None: ...
    def epoch_metrics(self) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63 - 1)


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` over ``batches``."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    model.train(was_training)
    return {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1)}


def _stage_plan(stages: list[Stage], epochs: int) -> list[tuple[Stage, int, int]]:
    """(stage, first epoch, number of epochs) for each stage; ``epochs=None`` takes what is left."""
    fixed = sum(s.epochs for s in stages if s.epochs is not None)
    open_stages = [s for s in stages if s.epochs is None]
    if fixed > epochs or (not open_stages and fixed != epochs) or len(open_stages) > 1:
        raise ValueError(f"stages {[(s.name, s.epochs) for s in stages]} do not fit a {epochs}-epoch schedule")
    plan, start = [], 0
    for stage in stages:
        length = stage.epochs if stage.epochs is not None else epochs - fixed
        plan.append((stage, start, length))
        start += length
    return plan


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """cuDNN in its deterministic mode (no autotuning by timing) while a run trains; the caller's settings are
    restored afterwards."""
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def _plain(value: Any) -> bool:
    if type(value) in (bool, int, float, str, type(None)):  # exact types: numpy's float64 subclasses float
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class _NonFiniteWatch:
    """Finds the first step whose loss is not finite without waiting for the device at every step.

    Each step's total and terms are copied into a device buffer; :meth:`check` reads the buffer (one
    synchronisation) and raises :class:`NonFiniteLoss` naming the first bad step.
    """

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.values: list[Tensor] = []
        self.where: list[tuple[int, int, str, str, float, tuple[str, ...]]] = []

    def observe(self, total: Tensor, terms: dict[str, Tensor], where: tuple) -> None:
        self.values.append(torch.stack([total.detach(), *(v.detach() for v in terms.values())]).float())
        self.where.append((*where, tuple(terms)))

    def check(self) -> None:
        if not self.values:
            return
        finite = [bool(ok) for ok in torch.stack([torch.isfinite(v).all() for v in self.values]).tolist()]
        if not all(finite):
            first = finite.index(False)
            epoch, step, stage, update, lr, names = self.where[first]
            total, *values = self.values[first].tolist()
            listed = ", ".join(f"{k}={v:.6g}" for k, v in zip(names, values))
            raise NonFiniteLoss(f"{self.desc}: non-finite loss at epoch {epoch + 1}, step {step + 1} "
                                f"(stage {stage!r}, update {update!r}, lr {lr:.4g}): total={total}, {listed}")
        self.values.clear()
        self.where.clear()


class _NoBar:
    """The progress bar of a process that does not report (every process of a run but process 0)."""

    def update(self, steps: int) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """Train ``method`` on ``train`` batches following ``schedule``.

    ``train``/``evaluation`` are :class:`kdnb.data.TensorBatches` (anything with ``batches(epoch, seed)`` and
    ``len``). When ``train`` can also say which samples each batch holds (``sample_indices(epoch, seed)``,
    ``labels``), each step's :class:`Context` carries their indices, the training set's size and
    its labels. Every trainable parameter must belong to exactly one of the method's updates
    (:func:`kdnb.distill.base.check_updates`, checked here before anything trains). With ``run_dir`` the trainer writes ``state.pt`` after every epoch (resume point) and
    ``ckpt/step_XXXXXXXX.pt`` at ``schedule.checkpoints``; a fresh ``fit`` on the same directory resumes.
    ``on_epoch_end(metrics)`` is called with each epoch's metrics dict. ``check_every`` steps, the trainer reads
    the device to stop on a non-finite loss (default: every step on the CPU, where reading costs nothing; 50
    on accelerators). With ``replicas`` (several processes training one run, :mod:`kdnb.distributed`) ``train``
    holds this process's share of every batch; gradients are averaged over the processes at every update and the
    epoch's loss terms and accuracy summed over them; process 0 alone evaluates, logs and writes files.
    """

    def __init__(self, method: Method, train, schedule: Schedule, *, seed: int = 0, evaluation=None,
                 device: torch.device | str | None = None, probes: Iterable[Probe] = (),
                 run_dir: str | Path | None = None, desc: str = "train",
                 on_epoch_end: Callable[[dict], None] | None = None, check_every: int | None = None,
                 replicas: Replicas | None = None) -> None:
        from . import device as default_device

        self.device = torch.device(device) if device is not None else default_device()
        self.method = method.to(self.device)
        self.train_batches = train
        self.evaluation = evaluation
        self.schedule = schedule
        self.seed = seed
        self.probes = list(probes)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.desc = desc
        self.on_epoch_end = on_epoch_end
        self.replicas = replicas
        self.writes = replicas is None or replicas.rank == 0  # the one process that evaluates, logs and writes
        self.check_every = check_every or (1 if self.device.type == "cpu" else 50)
        self.plan = _stage_plan(method.stages(schedule.epochs), schedule.epochs)
        self.steps_per_epoch = len(train)
        self.checkpoint_steps = schedule.checkpoint_steps(self.steps_per_epoch)
        self.history: list[dict] = []
        for stage, _, _ in self.plan:  # a typo in a frozen prefix fails here, before anything trains
            parameters_under(method, stage.frozen)
        check_updates(method)  # a module no update lists would silently never train
        for probe in self.probes:
            probe.attach(method)

    # ----------------------------------------------------------------------------------------- state
    @property
    def state_path(self) -> Path | None:
        return self.run_dir / "state.pt" if self.run_dir else None

    def checkpoint_path(self, epoch: float) -> Path:
        """The checkpoint file of checkpoint epoch ``epoch`` (one of ``schedule.checkpoints``)."""
        return self.run_dir / "ckpt" / checkpoint_name(step_of(epoch, self.steps_per_epoch))

    def _optimizers(self, stage: Stage) -> list[tuple[Update, torch.optim.Optimizer]]:
        """One SGD optimiser per update of the method, over its parameters that this stage does not freeze
        (frozen ones no longer require gradients)."""
        s = self.schedule
        optimizers = []
        for update in self.method.updates():
            params = [p for name, p in self.method.named_parameters()
                      if p.requires_grad and (not update.prefixes or under_any(name, update.prefixes))]
            if params:
                optimizers.append((update, torch.optim.SGD(
                    params, lr=s.lr * stage.lr_scale, momentum=s.momentum,
                    nesterov=s.nesterov and s.momentum > 0, weight_decay=s.weight_decay)))
        if not optimizers:
            raise ValueError(f"stage {stage.name!r} leaves no parameter to train")
        return optimizers

    def _save_state(self, epoch: int, optimizers: list[tuple[Update, torch.optim.Optimizer]]) -> None:
        if self.state_path is None or not self.writes:
            return
        storage.save_torch({
            "epoch": epoch,
            "method": self.method.state_dict(),
            "optimizers": {update.name: optimizer.state_dict() for update, optimizer in optimizers},
            "history": self.history,
            "probes": [p.state_dict() for p in self.probes],
        }, self.state_path)

    def _resume(self) -> tuple[int, dict | None]:
        if self.state_path is None or not self.state_path.exists():
            return 0, None
        try:
            state = storage.load_torch(self.state_path, map_location=self.device)
        except storage.CorruptFile as error:  # damage only; a file that does not load is a bug and raises
            print(f"[kdnb] {error}; restarting this run from scratch")
            return 0, None
        self.method.load_state_dict(state["method"])
        self.history = list(state["history"])
        for probe, probe_state in zip(self.probes, state["probes"]):
            probe.load_state_dict(probe_state)
        return int(state["epoch"]), state["optimizers"]

    def _save_checkpoint(self, step: int) -> None:
        """Every network the method evaluates, after ``step`` optimizer steps (on a checkpoint step)."""
        if self.run_dir is None or step not in self.checkpoint_steps or not self.writes:
            return
        networks = self.method.evaluated()
        student = self.method.student
        storage.save_torch({
            "epoch": self.checkpoint_steps[step], "step": step,
            "student": student.state_dict() if student is not None else None,
            "networks": {name: net.state_dict() for name, net in networks.items() if name},
        }, self.run_dir / "ckpt" / checkpoint_name(step))

    def series(self) -> dict[str, Tensor]:
        """Per-step series of the probes that keep one (``{name: 1-D tensor}``)."""
        out: dict[str, Tensor] = {}
        for probe in self.probes:
            if hasattr(probe, "series"):
                out.update(probe.series())
        return out

    def _sample_indices(self, epoch: int) -> Iterator[Tensor | None]:
        """Each batch's sample indices in the training set (one host-to-device copy per epoch), or None forever
        when the batches cannot say."""
        train = self.train_batches
        if not all(hasattr(train, a) for a in ("sample_indices", "labels")):
            while True:
                yield None
        yield from train.sample_indices(epoch, self.seed)

    # -------------------------------------------------------------------------------------- training
    def fit(self) -> list[dict]:
        """Run (or finish) training; returns the per-epoch metrics."""
        start_epoch, optimizer_state = self._resume()
        if start_epoch == 0:
            self._save_checkpoint(0)
        bar = (progress_bar((self.schedule.epochs - start_epoch) * self.steps_per_epoch, self.desc) if self.writes
               else _NoBar())
        try:
            with deterministic_kernels():
                for stage, first, length in self.plan:
                    if first + length <= start_epoch:
                        continue
                    freeze = Freeze(self.method, stage.frozen)
                    try:
                        optimizers = self._optimizers(stage)
                        if optimizer_state is not None:
                            if start_epoch > first:  # resuming inside this stage; a new stage starts afresh
                                for update, optimizer in optimizers:
                                    optimizer.load_state_dict(optimizer_state[update.name])
                            optimizer_state = None
                        for epoch in range(max(first, start_epoch), first + length):
                            metrics = self._train_epoch(epoch, stage, first, length, optimizers, freeze, bar)
                            if self.writes:
                                log_epoch(self.desc, metrics, self.schedule.epochs)
                            self.history.append(metrics)
                            self._save_state(epoch + 1, optimizers)
                            if self.on_epoch_end is not None:
                                self.on_epoch_end(metrics)
                    finally:
                        freeze.restore()
        finally:
            bar.close()
        return self.history

    def _train_epoch(self, epoch: int, stage: Stage, first: int, length: int,
                     optimizers: list[tuple[Update, torch.optim.Optimizer]], freeze: Freeze, bar) -> dict:
        seed = epoch_seed(self.seed, epoch)
        if self.replicas is not None:  # each process its own dropout masks (process 0: the single-process stream)
            seed += self.replicas.rank
        torch.manual_seed(seed)  # dropout etc.: same stream on resume
        self.method.train()
        freeze.hold_eval()
        steps = self.steps_per_epoch
        run_steps = self.schedule.epochs * steps
        watch = _NonFiniteWatch(self.desc)
        weights = dict(stage.weights)
        term_sums: dict[str, Tensor] = {}
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        count, classified = 0, False
        began = time.perf_counter()
        labels = getattr(self.train_batches, "labels", None)
        num_samples = getattr(self.train_batches, "num_samples", None)
        sample_indices = self._sample_indices(epoch)
        # No augmentation: a sample's input is the same every epoch (frozen networks' outputs may be remembered).
        fixed_inputs = getattr(self.train_batches, "augment", "unknown") is None
        for step, (x, y) in enumerate(self.train_batches.batches(epoch, self.seed)):
            global_step = epoch * steps + step
            stage_progress = ((epoch - first) * steps + step) / (length * steps)
            progress = global_step / run_steps
            lr = self.schedule.lr_at(stage_progress if stage.restart_schedule else progress) * stage.lr_scale
            indices = next(sample_indices)
            context = Context(stage, epoch, step, global_step, progress, stage_progress, lr, indices,
                              num_samples if indices is not None else None, labels if indices is not None else None,
                              fixed_inputs=fixed_inputs)
            batch = y.numel()
            for index, (update, optimizer) in enumerate(optimizers):
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits, terms = self.method.update_losses(update.name, x, y, context)
                if index == 0 and logits is not None:  # training accuracy: the first update's network (student)
                    correct += (logits.detach().argmax(1) == y).sum()
                    classified = True
                terms = {k: v if weights.get(k, 1.0) == 1.0 else weights[k] * v
                         for k, v in terms.items() if stage.uses(k)}
                if not terms:
                    continue
                total = sum(terms.values())
                watch.observe(total, terms, (epoch, step, stage.name, update.name, lr))
                if len(watch.values) >= self.check_every:
                    watch.check()
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                if self.replicas is not None:
                    self.replicas.average_gradients(
                        [p for group in optimizer.param_groups for p in group["params"]], batch)
                optimizer.step()
                for k, v in terms.items():
                    term_sums[k] = term_sums[k] + v.detach() * batch if k in term_sums else v.detach() * batch
            if self.replicas is not None:
                self.replicas.average_statistics(self.method, batch)
            for probe in self.probes:
                probe.after_step(self.method)
            count += batch
            self._save_checkpoint(global_step + 1)
            bar.update(1)
        watch.check()
        if self.replicas is not None:  # the epoch's sums over the whole batches, not this process's shares
            names = list(term_sums)
            summed = self.replicas.sum(torch.stack([*(term_sums[k].double() for k in names), correct.double(),
                                                    torch.tensor(float(count), device=self.device)]))
            term_sums = dict(zip(names, summed[:len(names)]))
            correct, count = summed[len(names)], int(summed[-1].item())
        metrics = {"epoch": epoch + 1, "stage": stage.name, "lr": lr, "train_time_s": time.perf_counter() - began}
        sums = {k: v.item() / count for k, v in term_sums.items()}
        metrics["train_loss"] = sum(sums.values())
        metrics.update({f"train_{k}": v for k, v in sums.items()})
        if classified:  # a part (an auto-encoder) classifies nothing
            metrics["train_acc"] = correct.item() / count
        if self.evaluation is not None and self.writes:
            for name, network in self.method.evaluated().items():
                result = evaluate(network, self.evaluation.batches(0, 0))
                prefix = f"{name}_" if name else ""
                metrics.update({f"{prefix}test_loss": result["loss"], f"{prefix}test_acc": result["acc"]})
        for probe in self.probes:
            metrics.update(probe.epoch_metrics())
        for name, value in metrics.items():
            if not _plain(value):
                raise storage.UnsaveableValue(
                    f"{self.desc}: metric {name!r} = {value!r} is a {type(value).__module__}."
                    f"{type(value).__qualname__}, which the run cache cannot store; return a plain float, int "
                    "or str (e.g. float(x)) from the method or probe that made it")
        accuracy = metrics.get("test_acc", metrics.get("train_acc"))
        bar.set_postfix(epoch=epoch + 1, loss=f"{metrics['train_loss']:.3f}",
                        **({"acc": f"{accuracy:.3f}"} if accuracy is not None else {}))
        return metrics
