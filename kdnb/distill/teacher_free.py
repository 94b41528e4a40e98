"""Teacher-free KD (Yuan et al., CVPR 2020, "Revisiting knowledge distillation via label smoothing
regularization"), the "Tf-KD" baseline of Huang et al.'s Table 1, in its two forms.

- **Self-training**, Tf-KD\\ :sub:`self`: the student is first trained normally, then taught by that trained
  copy of itself with the KD loss. The teacher is an ordinary cached run of the student's architecture:
  ``runs.chain(ce_run, ce_run.replace(method="tfkd_self"))``.
- **Virtual teacher**, Tf-KD\\ :sub:`reg`: a hand-made teacher that puts probability ``a`` on the label and
  ``(1 - a)/(K - 1)`` on every other class, softened by a temperature; a regulariser, no teacher run.

Losses and defaults as the released code (``yuanli2333/Teacher-free-Knowledge-Distillation``,
``my_loss_function.py`` and the ResNet-18 CIFAR-100 ``params.json``): self
:math:`(1-\\alpha)\\,\\mathrm{CE} + \\alpha\\,T^2\\,\\mathrm{KL}(\\sigma(z_t/T)\\,\\|\\,\\sigma(z_s/T))` with α = 0.95, T = 6; virtual
:math:`(1-\\alpha)\\,\\mathrm{CE} + \\alpha\\,\\mathrm{KL}(\\sigma(p^d/T)\\,\\|\\,\\sigma(z_s))` with a = 0.99, T = 20, α = 0.1 —
the softmax is applied to the virtual distribution :math:`p^d` itself, divided by T, and the student is not
softened. The release reduces its KL with a mean over batch *and classes* and multiplies it by a
``multiplier`` (50 for self-training, 100 for the virtual teacher, on CIFAR-100's 100 classes); we take the
batch mean (the project's one KL, :func:`.kd.kd_divergence`) with ``multiplier = 1``, which is the release's
scale at 100 classes for the virtual teacher and twice it for self-training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method
from .kd import check_hinton, hinton_terms


def virtual_teacher(y: Tensor, num_classes: int, correct: float = 0.99) -> Tensor:
    """:math:`p^d`: ``correct`` on each label, ``(1 - correct)/(K - 1)`` on the other classes; ``(B, K)``."""
    if not 0.0 < correct <= 1.0:
        raise ValueError(f"the virtual teacher's correct-class probability must be in (0, 1]; got {correct}")
    p = torch.full((y.shape[0], num_classes), (1.0 - correct) / (num_classes - 1), device=y.device)
    return p.scatter(1, y[:, None], correct)


class TfKDSelf(Method):
    """Tf-KD\\ :sub:`self`: Hinton's KD from a trained copy of the student's own architecture (terms ``"ce"``,
    ``"kd"``); see the module docstring. A teacher of another architecture is an error (that is ``"kd"``)."""

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, temperature: float = 6.0,
                 alpha: float = 0.95, multiplier: float = 1.0) -> None:
        super().__init__(student, teacher)
        check_hinton(temperature, alpha)
        student_name, teacher_name = getattr(student, "name", None), getattr(teacher, "name", None)
        if student_name is not None and teacher_name is not None and student_name != teacher_name:
            raise ValueError(f"Tf-KD self-training teaches a network with a trained copy of itself: teacher "
                             f"{teacher_name!r}, student {student_name!r} (another teacher is method 'kd')")
        if multiplier < 0:
            raise ValueError(f"multiplier must be >= 0; got {multiplier}")
        self.temperature, self.alpha, self.multiplier = float(temperature), float(alpha), float(multiplier)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        logits = self.student(x)
        teacher_logits = self.teacher_logits(x, context) if context.uses("kd") else None
        terms = hinton_terms(logits, teacher_logits, y, self.temperature, self.alpha)
        if "kd" in terms and self.multiplier != 1.0:
            terms["kd"] = self.multiplier * terms["kd"]
        return logits, terms


class TfKDReg(Method):
    """Tf-KD\\ :sub:`reg`: the virtual teacher as a regulariser (terms ``"ce"``, ``"reg"``); see the module
    docstring. ``correct`` is a, ``temperature`` T, ``alpha`` α."""

    takes_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, correct: float = 0.99,
                 temperature: float = 20.0, alpha: float = 0.1, multiplier: float = 1.0) -> None:
        if teacher is not None:
            raise ValueError("Tf-KD's virtual teacher is hand-made; it takes no teacher run")
        super().__init__(student, None)
        check_hinton(temperature, alpha)
        virtual_teacher(torch.zeros(1, dtype=torch.long), 2, correct)  # checks `correct`
        if multiplier < 0:
            raise ValueError(f"multiplier must be >= 0; got {multiplier}")
        self.correct, self.temperature, self.alpha = float(correct), float(temperature), float(alpha)
        self.multiplier = float(multiplier)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        target = F.log_softmax(virtual_teacher(y, logits.shape[1], self.correct) / self.temperature, dim=1)
        reg = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean", log_target=True)
        return logits, {"ce": (1.0 - self.alpha) * F.cross_entropy(logits, y),
                        "reg": self.alpha * self.multiplier * reg}
