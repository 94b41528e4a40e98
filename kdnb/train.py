"""The one trainer of the project: SGD (Nesterov), multi-step or cosine learning rate, stages, probes,
checkpoints at chosen epochs, resume after interruption, and a loud stop on a non-finite loss.

Determinism: the batches of epoch ``e`` depend only on ``(seed, e)`` and the global torch RNG is reseeded at
each epoch start, so a run resumed from the state saved after epoch ``e`` continues exactly as an
uninterrupted run would (on CPU, for a fixed number of threads).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import storage
from .progress import log_epoch, progress_bar
from .distill.base import Method, Stage, Update

LR_SCHEDULES = ("multistep", "cosine", "constant")


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings of one run.

    ``milestones`` are fractions of the run's epochs (``(0.5, 0.75)`` is the CIFAR recipe "x0.1 at 80 and 120
    of 160"), so a profile can shorten a run without rewriting its schedule. ``checkpoints`` lists the epochs
    after which the student's weights are kept (``0`` = at initialisation).
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
    checkpoints: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        object.__setattr__(self, "checkpoints", tuple(sorted({int(c) for c in self.checkpoints})))
        bad = [c for c in self.checkpoints if not 0 <= c <= self.epochs]
        if bad:
            raise ValueError(f"checkpoint epochs {bad} are outside 0..{self.epochs}")

    def lr_at(self, progress: float) -> float:
        """Learning rate at ``progress`` in [0, 1) of a stage (evaluated every step: no scheduler state)."""
        if self.lr_schedule == "cosine":
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))
        if self.lr_schedule == "multistep":
            return self.lr * self.gamma ** sum(progress >= m for m in self.milestones)
        return self.lr


class NonFiniteLoss(FloatingPointError):
    """Training produced NaN or inf; the message names the epoch, the step and every loss term."""


class Probe(Protocol):
    """Measures something during training (e.g. a layer's weight path length) and reports it per epoch."""

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


class Trainer:
    """Train ``method`` on ``train`` batches following ``schedule``.

    ``train``/``evaluation`` are :class:`kdnb.data.TensorBatches` (anything with ``batches(epoch, seed)`` and
    ``len``). With ``run_dir`` the trainer writes ``state.pt`` after every epoch (resume point) and
    ``ckpt/epoch_XXX.pt`` at ``schedule.checkpoints``; a fresh ``fit`` on the same directory resumes.
    ``on_epoch_end(metrics)`` is called with each epoch's metrics dict.
    """

    def __init__(self, method: Method, train, schedule: Schedule, *, seed: int = 0, evaluation=None,
                 device: torch.device | str | None = None, probes: Iterable[Probe] = (),
                 run_dir: str | Path | None = None, desc: str = "train",
                 on_epoch_end: Callable[[dict], None] | None = None) -> None:
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
        self.plan = _stage_plan(method.stages(schedule.epochs), schedule.epochs)
        self.history: list[dict] = []
        for probe in self.probes:
            probe.attach(method)

    # ----------------------------------------------------------------------------------------- state
    @property
    def state_path(self) -> Path | None:
        return self.run_dir / "state.pt" if self.run_dir else None

    def checkpoint_path(self, epoch: int) -> Path:
        return self.run_dir / "ckpt" / f"epoch_{epoch:03d}.pt"

    def _optimizers(self, stage: Stage) -> list[tuple[Update, torch.optim.Optimizer]]:
        """One SGD optimiser per update of the method, over its parameters that this stage does not freeze."""
        s = self.schedule
        optimizers = []
        for update in self.method.updates():
            params = [p for name, p in self.method.named_parameters()
                      if p.requires_grad and not any(name.startswith(prefix) for prefix in stage.frozen)
                      and (not update.prefixes or any(name.startswith(prefix) for prefix in update.prefixes))]
            if params:
                optimizers.append((update, torch.optim.SGD(
                    params, lr=s.lr * stage.lr_scale, momentum=s.momentum,
                    nesterov=s.nesterov and s.momentum > 0, weight_decay=s.weight_decay)))
        if not optimizers:
            raise ValueError(f"stage {stage.name!r} leaves no parameter to train")
        return optimizers

    def _save_state(self, epoch: int, optimizers: list[tuple[Update, torch.optim.Optimizer]]) -> None:
        if self.state_path is None:
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
        except storage.CorruptFile as error:
            print(f"[kdnb] {error}; restarting this run from scratch")
            return 0, None
        self.method.load_state_dict(state["method"])
        self.history = list(state["history"])
        for probe, probe_state in zip(self.probes, state["probes"]):
            probe.load_state_dict(probe_state)
        return int(state["epoch"]), state["optimizers"]

    def _save_checkpoint(self, epoch: int) -> None:
        if self.run_dir is not None and epoch in self.schedule.checkpoints:
            storage.save_torch({"epoch": epoch, "student": self.method.student.state_dict()},
                               self.checkpoint_path(epoch))

    # -------------------------------------------------------------------------------------- training
    def fit(self) -> list[dict]:
        """Run (or finish) training; returns the per-epoch metrics."""
        start_epoch, optimizer_state = self._resume()
        if start_epoch == 0:
            self._save_checkpoint(0)
        steps_per_epoch = len(self.train_batches)
        bar = progress_bar((self.schedule.epochs - start_epoch) * steps_per_epoch, self.desc)
        try:
            for stage, first, length in self.plan:
                if first + length <= start_epoch:
                    continue
                optimizers = self._optimizers(stage)
                if optimizer_state is not None:
                    if start_epoch > first:  # resuming inside this stage; a new stage starts a fresh optimizer
                        for update, optimizer in optimizers:
                            optimizer.load_state_dict(optimizer_state[update.name])
                    optimizer_state = None
                for epoch in range(max(first, start_epoch), first + length):
                    metrics = self._train_epoch(epoch, stage, first, length, optimizers, bar)
                    log_epoch(self.desc, metrics, self.schedule.epochs)
                    self.history.append(metrics)
                    self._save_checkpoint(epoch + 1)
                    self._save_state(epoch + 1, optimizers)
                    if self.on_epoch_end is not None:
                        self.on_epoch_end(metrics)
        finally:
            bar.close()
        return self.history

    def _train_epoch(self, epoch: int, stage: Stage, first: int, length: int,
                     optimizers: list[tuple[Update, torch.optim.Optimizer]], bar) -> dict:
        torch.manual_seed(epoch_seed(self.seed, epoch))  # dropout etc.: same stream on resume
        self.method.train()
        steps = len(self.train_batches)
        term_sums: dict[str, float] = {}
        correct, count = 0, 0
        began = time.perf_counter()
        for step, (x, y) in enumerate(self.train_batches.batches(epoch, self.seed)):
            progress = ((epoch - first) * steps + step) / (length * steps)
            lr = self.schedule.lr_at(progress) * stage.lr_scale
            batch = y.numel()
            for index, (update, optimizer) in enumerate(optimizers):
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits, terms = self.method.update_losses(update.name, x, y)
                if index == 0:  # training accuracy is the first update's network (the student)
                    correct += (logits.argmax(1) == y).sum().item()
                if stage.terms is not None:
                    terms = {k: v for k, v in terms.items() if k in stage.terms}
                if not terms:
                    continue
                total = sum(terms.values())
                if not torch.isfinite(total):
                    values = ", ".join(f"{k}={v.item():.6g}" for k, v in terms.items())
                    raise NonFiniteLoss(f"{self.desc}: non-finite loss at epoch {epoch + 1}, step {step + 1} "
                                        f"(stage {stage.name!r}, update {update.name!r}, lr {lr:.4g}): "
                                        f"total={total.item()}, {values}")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                for k, v in terms.items():
                    term_sums[k] = term_sums.get(k, 0.0) + v.item() * batch
            for probe in self.probes:
                probe.after_step(self.method)
            count += batch
            bar.update(1)
        metrics = {"epoch": epoch + 1, "stage": stage.name, "lr": lr, "train_time_s": time.perf_counter() - began}
        metrics["train_loss"] = sum(term_sums.values()) / count
        metrics.update({f"train_{k}": v / count for k, v in term_sums.items()})
        metrics["train_acc"] = correct / count
        if self.evaluation is not None:
            for name, network in self.method.evaluated().items():
                result = evaluate(network, self.evaluation.batches(0, 0))
                prefix = f"{name}_" if name else ""
                metrics.update({f"{prefix}test_loss": result["loss"], f"{prefix}test_acc": result["acc"]})
        for probe in self.probes:
            metrics.update(probe.epoch_metrics())
        bar.set_postfix(epoch=epoch + 1, loss=f"{metrics['train_loss']:.3f}",
                        acc=f"{metrics.get('test_acc', metrics['train_acc']):.3f}")
        return metrics
