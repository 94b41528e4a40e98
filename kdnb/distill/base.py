"""The shape every distillation method shares (after mdistiller's one-class-per-method layout).

A method owns the student, any extra trainable modules (connectors, encoders) and a frozen reference to the
teacher. ``forward(x, y, context)`` returns the student's logits and a dict of named, already-weighted loss
terms; the trainer sums the terms. Methods that pre-train or freeze parts declare :class:`Stage` s; the
:class:`Context` tells a method where training is, so it computes only what the current stage uses.

Three ways a method holds networks besides its student:

- ``teacher``: the run's teacher, unregistered (neither trained nor saved), moved by :meth:`Method.to`, always in
  eval mode; :meth:`Method.teacher_logits` and :meth:`Method.teacher_features` run it without gradient.
- :meth:`Method.hold_frozen`: a pre-trained sub-network the method uses but never trains (an auto-encoder
  trained by a run of its own): a registered child, so it moves with ``.to(device)`` and is saved and resumed
  with the run, with no gradient and in eval mode in every stage.
- trainable submodules (connectors, encoders, a peer): ordinary children; every trainable parameter belongs to
  exactly one :class:`Update` (:func:`check_updates`, run by the trainer before anything trains).

A *part* (``part = True``) is a method that trains a piece on its own, such as a teacher's factor
auto-encoder: it has no student (``student`` is None), evaluates nothing and returns no logits; its run keeps
the piece (``Run.network(name)``) and no throw-away student.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..modules import under_any
from .memory import remembered as remember_per_sample


@dataclass(frozen=True)
class Stage:
    """One phase of training.

    ``epochs=None`` takes whatever the schedule has left; ``terms`` names the loss terms summed in this stage
    (``None``: all); ``frozen`` lists prefixes inside the method (``"student.stage1"``; see
    :mod:`kdnb.modules` for the prefix rule) whose parameters get no gradient and whose modules run in eval
    mode; ``weights`` multiplies terms in this stage (``{"kd": 0.5}``; a weight of 0 drops the term);
    ``lr_scale`` multiplies the schedule's learning rate.

    The learning-rate schedule runs over the whole run, across stages; ``restart_schedule=True`` runs it
    afresh over this stage alone (e.g. a pre-training phase with its own decay).
    """

    name: str
    epochs: int | None = None
    terms: tuple[str, ...] | None = None
    frozen: tuple[str, ...] = ()
    lr_scale: float = 1.0
    weights: tuple[tuple[str, float], ...] = ()
    restart_schedule: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", tuple(sorted(self.weights.items())))
        if self.terms is not None:
            object.__setattr__(self, "terms", tuple(self.terms))
        object.__setattr__(self, "frozen", tuple(self.frozen))

    def weight(self, term: str) -> float:
        return next((w for name, w in self.weights if name == term), 1.0)

    def uses(self, term: str) -> bool:
        """Whether this stage sums ``term`` (with a non-zero weight)."""
        return (self.terms is None or term in self.terms) and self.weight(term) != 0.0


@dataclass(frozen=True)
class Context:
    """Where training is, handed to the method at every step.

    ``epoch`` and ``step`` count from 0 (``step`` within the epoch); ``progress`` is the fraction of the whole
    run done before this step and ``stage_progress`` that of the current stage. Outside the trainer a method
    gets :meth:`everything`: every term computed.

    ``indices`` are the positions of the batch's samples in the training set (``(B,)`` on the batch's device),
    ``num_samples`` the training set's size and ``dataset_labels`` its labels ``(N,)``: what a method with a
    per-sample memory (CRD's memory bank) needs. The trainer fills them when its batches can say
    (``TensorBatches``); outside the trainer they are None. ``fixed_inputs``: the trainer's batches have no
    augmentation, so a sample's input is the same every epoch and a frozen network's output for it may be
    remembered (:meth:`Method.remembered`).
    """

    stage: Stage = field(default_factory=lambda: Stage("inspect"))
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    progress: float = 0.0
    stage_progress: float = 0.0
    lr: float = 0.0
    indices: Tensor | None = None
    num_samples: int | None = None
    dataset_labels: Tensor | None = None
    fixed_inputs: bool = False

    @classmethod
    def everything(cls) -> "Context":
        return cls()

    def uses(self, term: str) -> bool:
        """Whether the current stage sums ``term``: skip the work (a teacher forward, explanation maps) if not."""
        return self.stage.uses(term)


@dataclass(frozen=True)
class Update:
    """One optimiser step per batch, over the method's parameters under ``prefixes`` (all when empty).

    Most methods have one. Methods over several networks (DML) declare one per network; the trainer runs
    them in order on every batch, so a later update sees the networks the earlier ones just changed. Every
    trainable parameter belongs to exactly one update (:func:`check_updates`).
    """

    name: str
    prefixes: tuple[str, ...] = ()

    def covers(self, name: str) -> bool:
        """Whether parameter ``name`` (as in ``method.named_parameters()``) is this update's."""
        return not self.prefixes or under_any(name, self.prefixes)


def stage_epochs(share: float, epochs: int, what: str) -> int:
    """Epochs of a first stage that takes ``share`` of a run of ``epochs``: rounded, at least one, and at least
    one left for the second stage (so a run needs two epochs)."""
    if epochs < 2:
        raise ValueError(f"{what} has two stages and needs at least 2 epochs; the schedule has {epochs}")
    return min(max(round(share * epochs), 1), epochs - 1)


def check_share(share: float, name: str) -> float:
    """``share`` (a first stage's share of the run's epochs) as a float; ValueError outside (0, 1)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"{name} is the first stage's share of the run's epochs, in (0, 1); got {share}")
    return float(share)


def check_updates(method: "Method") -> None:
    """ValueError unless every trainable parameter of ``method`` (``requires_grad``) belongs to exactly one of
    its updates: a parameter no update lists would silently never train, and one listed twice would take two
    steps per batch. The message names the parameters (their modules) and the updates."""
    updates = method.updates()
    names = [u.name for u in updates]
    if len(set(names)) != len(names):
        raise ValueError(f"{type(method).__name__}: update names repeat: {names}")
    orphans, shared = [], []
    for name, p in method.named_parameters():
        if not p.requires_grad:
            continue
        owners = [u.name for u in updates if u.covers(name)]
        if not owners:
            orphans.append(name)
        elif len(owners) > 1:
            shared.append(f"{name} ({', '.join(owners)})")
    problems = []
    if orphans:
        problems.append("in no update, so never trained: " + ", ".join(_owners(orphans)))
        problems[-1] += f" (updates: {', '.join(f'{u.name}={list(u.prefixes)}' for u in updates)})"
    if shared:
        problems.append("in more than one update: " + ", ".join(shared[:5]) + (" ..." if len(shared) > 5 else ""))
    if problems:
        raise ValueError(f"{type(method).__name__}: trainable parameters " + "; ".join(problems))


def _owners(names: list[str]) -> list[str]:
    """Module names of parameters, each once, in order."""
    return list(dict.fromkeys(n.rsplit(".", 1)[0] if "." in n else n for n in names))


class Method(nn.Module):
    """Base class: plain supervised training of ``student`` unless a subclass says otherwise.

    ``requires_teacher``/``takes_teacher`` are checked when a run is described, before anything trains.
    ``version`` is part of every run key of the method: bump it when a fix changes what the method trains, and
    only that method's runs are redone.
    """

    requires_teacher = False
    takes_teacher = True
    part = False  # True: trains a piece on its own (no student, no logits, nothing evaluated); see the module doc
    version = 1

    def __init__(self, student: nn.Module | None, teacher: nn.Module | None = None) -> None:
        super().__init__()
        if student is None and not self.part:
            raise ValueError(f"{type(self).__name__} trains a student; only a part (part = True) has none")
        self.student = student
        if self.requires_teacher and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher run (RunSpec.teacher)")
        # Not registered as a submodule: the teacher is neither trained nor saved with the student.
        object.__setattr__(self, "teacher", teacher)
        object.__setattr__(self, "_frozen_children", [])
        object.__setattr__(self, "_memories", {})  # per-sample outputs of frozen networks (remembered)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    def hold_frozen(self, name: str, module: nn.Module) -> nn.Module:
        """Register ``module`` as child ``name``, frozen for good: no gradient, eval mode in every stage
        (BatchNorm statistics and dropout fixed; :meth:`train` keeps it so), moved by ``.to(device)`` and saved
        and resumed with the run like any child. For pre-trained pieces the method uses but never trains (an
        auto-encoder from a run of its own). Returns the module."""
        module.requires_grad_(False)
        module.eval()
        self.add_module(name, module)
        self._frozen_children.append(name)
        return module

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def losses(self, x: Tensor, y: Tensor, context: Context | None = None) -> dict[str, Tensor]:
        """The named loss terms alone (the trainer sums them)."""
        return self(x, y, context)[1]

    def trainable(self) -> list[nn.Parameter]:
        """Student parameters plus those of any extra modules the method registered."""
        return [p for p in self.parameters() if p.requires_grad]

    def stages(self, epochs: int) -> list[Stage]:
        return [Stage("train", epochs)]

    def updates(self) -> list[Update]:
        return [Update("train")]

    def update_losses(self, update: str, x: Tensor, y: Tensor,
                      context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and loss terms of one update; single-update methods just run :meth:`forward`."""
        return self(x, y, context)

    def evaluated(self) -> dict[str, nn.Module]:
        """Networks whose test metrics the trainer records: ``""`` → ``test_acc``, ``"peer"`` →
        ``peer_test_acc``. A part evaluates nothing."""
        return {} if self.student is None else {"": self.student}

    def to(self, *args, **kwargs) -> "Method":
        super().to(*args, **kwargs)
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return self

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher's BN statistics stay fixed
        for name in self._frozen_children:
            getattr(self, name).eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, x: Tensor, context: Context | None = None) -> Tensor:
        """The teacher's logits, without gradient (remembered per sample when ``context`` allows)."""
        return self.remembered("teacher_logits", x, context, self.teacher)

    def remembered(self, name: str, x: Tensor, context: Context | None, compute: Callable[[Tensor], Any]) -> Any:
        """``compute(x)``, the output of a *frozen* network for batch ``x`` (a tensor or a tuple/dict of tensors,
        batch first), kept per training sample under ``name`` when ``context`` says the inputs are fixed (no
        augmentation) and read back in later epochs instead of recomputed, for batches of the size it was filled
        with: the same numbers, since a frozen network in eval mode computes each sample on its own
        (:mod:`.memory`). Computed every time otherwise."""
        fixed = context is not None and context.fixed_inputs and context.indices is not None
        return remember_per_sample(self._memories, name, x, context.indices if fixed else None,
                                   context.num_samples if fixed else None, compute)

    @torch.no_grad()
    def teacher_features(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's ``(logits, features)`` (``forward_features``), without gradient."""
        return self.teacher.forward_features(x)
