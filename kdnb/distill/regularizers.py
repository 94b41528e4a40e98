"""Output regularisers that need no teacher (Gu et al. 2020, §2 and §5.1, Table 2): label smoothing and the
confidence penalty. Dropout, the third regulariser of Table 2, is a model option (``dropout`` of the CIFAR
ResNets and the plain CNNs), not a loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method


def smoothed_targets(y: Tensor, num_classes: int, alpha: float) -> Tensor:
    """Gu et al. (2020), §2: ``alpha`` on the ground-truth class and ``(1 - alpha) / (K - 1)`` on each other class.

    This is Szegedy et al.'s (2016, §7) :math:`q' = (1-\\varepsilon)\\,\\delta_y + \\varepsilon/K` written with the
    ground truth's own share: :math:`\\alpha = 1 - \\varepsilon + \\varepsilon/K`, i.e.
    :math:`\\varepsilon = K(1-\\alpha)/(K-1)` (for K = 10, alpha = 0.9 is epsilon = 1/9). The rows sum to 1.
    """
    if num_classes < 2:
        raise ValueError(f"label smoothing needs at least 2 classes, got {num_classes}")
    others = (1.0 - alpha) / (num_classes - 1)
    targets = torch.full((y.shape[0], num_classes), others, dtype=torch.float32, device=y.device)
    return targets.scatter_(1, y.unsqueeze(1), alpha)


def entropy(logits: Tensor) -> Tensor:
    """:math:`H(p) = -\\sum_k p_k \\log p_k` of ``softmax(logits)`` per row (nats)."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


class LabelSmoothing(Method):
    """Label smoothing as Gu et al. (2020, §2) describe it: :math:`\\mathcal{L} = \\mathrm{CE}(q, z)` with
    :math:`q` from :func:`smoothed_targets` (``alpha`` on the ground truth, 0.9 their best of 0.6–0.9, Table 2).

    We keep Gu et al.'s parametrisation, not Szegedy's epsilon, because their grid (0.6, 0.7, 0.8, 0.9) and
    their LE targets (Eq. 6, the same ``alpha`` on the ground truth) are written in it; the two are one family
    (see :func:`smoothed_targets`). ``alpha = 1`` is plain cross-entropy.
    """

    takes_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, alpha: float = 0.9) -> None:
        if teacher is not None:
            raise ValueError("label smoothing takes no teacher run")
        super().__init__(student, None)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (the ground truth's target) must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        targets = smoothed_targets(y, logits.shape[-1], self.alpha)
        return logits, {"ls": F.cross_entropy(logits, targets)}


class ConfidencePenalty(Method):
    """Pereyra et al. (2017), Eq. 1 (§2.1): :math:`\\mathcal{L} = \\mathrm{CE}(y, z) - \\beta\\, H(p)`: low-entropy
    (over-confident) predictions are penalised. ``beta`` 0.5 was Gu et al.'s best of 0.1–8 (§5.1).

    Terms: ``"ce"`` and ``"cp"`` = :math:`-\\beta H(p)` (batch mean; already weighted, so never positive).
    """

    takes_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, beta: float = 0.5) -> None:
        if teacher is not None:
            raise ValueError("the confidence penalty takes no teacher run")
        super().__init__(student, None)
        if beta < 0:
            raise ValueError(f"beta (the penalty strength) must be >= 0, got {beta}")
        self.beta = float(beta)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y), "cp": -self.beta * entropy(logits).mean()}
