"""Born-again networks (Furlanello et al. 2018): a student distilled from a teacher of its own architecture."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method
from .kd import kd_divergence


class BornAgain(Method):
    """Furlanello et al. (2018), Eq. 1–2 with a temperature: :math:`\\mathcal{L} = T^2\\,\\mathrm{KL}(\\sigma(z_t/T)
    \\,\\|\\, \\sigma(z_s/T)) + \\lambda\\,\\mathrm{CE}(y, z_s)`.

    The teacher is a cross-entropy run of the student's own architecture (``runs.chain(ce_run, ban_run)``); a
    different architecture is an error (that would be KD). Gu et al. (2020, §5.2, Table 4) explore T in
    {1, 2, 5, 10, 20}; BAN is ``ce_weight=0`` (the teacher's outputs are the only targets), BAN+L
    ``ce_weight=0.1``. Terms: ``"kd"`` (weight 1), ``"ce"`` only when ``ce_weight > 0``.
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, temperature: float = 1.0,
                 ce_weight: float = 0.0) -> None:
        super().__init__(student, teacher)
        student_name, teacher_name = getattr(student, "name", None), getattr(teacher, "name", None)
        if student_name is not None and teacher_name is not None and student_name != teacher_name:
            raise ValueError(f"a born-again student has its teacher's architecture: teacher {teacher_name!r}, "
                             f"student {student_name!r} (distilling across architectures is method 'kd')")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.temperature, self.ce_weight = float(temperature), float(ce_weight)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        logits = self.student(x)
        terms = {}
        if context.uses("kd"):
            terms["kd"] = kd_divergence(logits, self.teacher_logits(x, context), self.temperature)
        if self.ce_weight > 0:
            terms["ce"] = self.ce_weight * F.cross_entropy(logits, y)
        return logits, terms
