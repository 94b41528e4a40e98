"""The shape every distillation method shares (after mdistiller's one-class-per-method layout).

A method owns the student, any extra trainable modules (connectors, encoders) and a frozen reference to the
teacher. ``forward(x, y, context)`` returns the student's logits and a dict of named, already-weighted loss
terms; the trainer sums the terms. Methods that pre-train or freeze parts declare :class:`Stage` s; the
:class:`Context` tells a method where training is, so it computes only what the current stage uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


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
    """

    stage: Stage = field(default_factory=lambda: Stage("inspect"))
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    progress: float = 0.0
    stage_progress: float = 0.0
    lr: float = 0.0

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
    them in order on every batch, so a later update sees the networks the earlier ones just changed.
    """

    name: str
    prefixes: tuple[str, ...] = ()


class Method(nn.Module):
    """Base class: plain supervised training of ``student`` unless a subclass says otherwise.

    ``requires_teacher``/``takes_teacher`` are checked when a run is described, before anything trains.
    ``version`` is part of every run key of the method: bump it when a fix changes what the method trains, and
    only that method's runs are redone.
    """

    requires_teacher = False
    takes_teacher = True
    version = 1

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        if self.requires_teacher and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher run (RunSpec.teacher)")
        # Not registered as a submodule: the teacher is neither trained nor saved with the student.
        object.__setattr__(self, "teacher", teacher)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

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
        ``peer_test_acc``."""
        return {"": self.student}

    def to(self, *args, **kwargs) -> "Method":
        super().to(*args, **kwargs)
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return self

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher's BN statistics stay fixed
        return self

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        return self.teacher(x)
