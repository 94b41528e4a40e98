"""Logit-based methods: cross-entropy alone, and Hinton et al.'s knowledge distillation."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method


class CE(Method):
    """The baseline: the student trained on labels alone, :math:`\\mathcal{L} = \\mathrm{CE}(y, z_s)`."""

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y)}


def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al. (2015), Eq. 1: :math:`q_i = \\exp(z_i/T) / \\sum_j \\exp(z_j/T)`."""
    return F.softmax(logits / temperature, dim=-1)


def kd_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """:math:`T^2 \\, \\mathrm{KL}(q^T_t \\,\\|\\, q^T_s)`, averaged over the batch.

    The :math:`T^2` factor keeps the gradient scale independent of the temperature (Hinton et al., 2015,
    Sec. 2). ``batchmean``: a plain ``'mean'`` would also divide by the number of classes.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


def hinton_terms(logits: Tensor, teacher_logits: Tensor | None, y: Tensor, temperature: float,
                 alpha: float) -> dict[str, Tensor]:
    """Hinton et al. (2015): ``{"ce": (1 - alpha) CE(y, z_s), "kd": alpha T^2 KL(q_t || q_s)}`` — the one
    implementation of the KD loss, used by :class:`KD` and by the methods that add KD to a feature loss (AT, FSP,
    FitNets); ``"kd"`` is left out when ``teacher_logits`` is None (alpha = 0, or a stage without the term)."""
    terms = {"ce": (1.0 - alpha) * F.cross_entropy(logits, y)}
    if teacher_logits is not None:
        terms["kd"] = alpha * kd_divergence(logits, teacher_logits, temperature)
    return terms


def kd_stage_terms(method: Method, logits: Tensor, x: Tensor, y: Tensor, context: Context) -> dict[str, Tensor]:
    """The Hinton terms of a two-stage feature method (FitNets, FSP) in the current stage: none in a stage that sums
    neither ``ce`` nor ``kd``; the teacher runs only when the stage sums ``kd`` and ``method.alpha > 0``."""
    if not (context.uses("ce") or context.uses("kd")):
        return {}
    teacher_logits = method.teacher_logits(x, context) if method.alpha > 0 and context.uses("kd") else None
    return hinton_terms(logits, teacher_logits, y, method.temperature, method.alpha)


def check_hinton(temperature: float, alpha: float) -> None:
    """ValueError for a non-positive temperature or an ``alpha`` outside [0, 1]."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


class KD(Method):
    """Hinton et al. (2015): :math:`\\mathcal{L} = (1-\\alpha)\\,\\mathrm{CE}(y, z_s) + \\alpha T^2
    \\mathrm{KL}(\\sigma(z_t/T) \\| \\sigma(z_s/T))`.

    Defaults T=4, alpha=0.9 are the common CIFAR settings (RepDistiller, torchdistill).
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, temperature: float = 4.0,
                 alpha: float = 0.9) -> None:
        super().__init__(student, teacher)
        check_hinton(temperature, alpha)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        logits = self.student(x)
        teacher_logits = self.teacher_logits(x, context) if context.uses("kd") else None  # a CE-only stage never runs it
        return logits, hinton_terms(logits, teacher_logits, y, self.temperature, self.alpha)
