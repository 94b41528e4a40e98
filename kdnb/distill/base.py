"""The shape every distillation method shares (after mdistiller's one-class-per-method layout).

A method owns the student, any extra trainable modules (connectors, encoders) and a frozen reference to the
teacher. ``forward(x, y)`` returns the student's logits and a dict of named, already-weighted loss terms; the
trainer sums the terms. Methods that pre-train or freeze parts declare :class:`Stage` s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Stage:
    """One phase of training.

    ``epochs=None`` takes whatever the schedule has left; ``terms`` names the loss terms summed in this stage
    (``None``: all); ``frozen`` lists module-name prefixes (inside the method, e.g. ``"student.stage1"``) whose
    parameters are not updated; ``lr_scale`` multiplies the schedule's learning rate.
    """

    name: str
    epochs: int | None = None
    terms: tuple[str, ...] | None = None
    frozen: tuple[str, ...] = ()
    lr_scale: float = 1.0


@dataclass(frozen=True)
class Update:
    """One optimiser step per batch, over the method's parameters under ``prefixes`` (all when empty).

    Most methods have one. Methods over several networks (DML) declare one per network; the trainer runs
    them in order on every batch, so a later update sees the networks the earlier ones just changed.
    """

    name: str
    prefixes: tuple[str, ...] = ()


class Method(nn.Module):
    """Base class: plain supervised training of ``student`` unless a subclass says otherwise."""

    requires_teacher = False

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

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The named loss terms alone (the trainer sums them)."""
        return self(x, y)[1]

    def trainable(self) -> list[nn.Parameter]:
        """Student parameters plus those of any extra modules the method registered."""
        return [p for p in self.parameters() if p.requires_grad]

    def stages(self, epochs: int) -> list[Stage]:
        return [Stage("train", epochs)]

    def updates(self) -> list[Update]:
        return [Update("train")]

    def update_losses(self, update: str, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and loss terms of one update; single-update methods just run :meth:`forward`."""
        return self(x, y)

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
