"""Attention transfer (Zagoruyko & Komodakis 2017): the student matches the teacher's spatial attention maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method
from .features import layer_pairs, match_size
from .kd import check_hinton, hinton_terms


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Zagoruyko & Komodakis (2017), §3.1 and Eq. 2: :math:`Q = \\mathrm{vec}(F^p_{\\mathrm{mean}}(A))`, the mean over
    channels of :math:`|A|^p`, flattened per sample and divided by its L2 norm: ``(B, H*W)`` rows of norm 1.
    (Mean or sum over channels is the same map after the normalisation.)"""
    q = feature.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(q, dim=1)


def attention_loss(student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0) -> Tensor:
    """One layer's :math:`\\|Q_S/\\|Q_S\\|_2 - Q_T/\\|Q_T\\|_2\\|^2`, **averaged** over the batch and the H*W positions
    (the official code's reduction, which the paper's β = 1000 is tuned for; Eq. 2 writes the unsquared norm
    per sample, see ``szagoruyko/attention-transfer#34``).

    Maps of different spatial size (a cross-family pair, :mod:`.features` rule 2) meet at the smaller size: the
    larger map's channel mean of :math:`|A|^p` is average-pooled to it before the normalisation."""
    if student_feature.shape[2:] == teacher_feature.shape[2:]:
        return (attention_map(student_feature, p) - attention_map(teacher_feature, p)).pow(2).mean()
    energy_s, energy_t = match_size(student_feature.abs().pow(p).mean(dim=1, keepdim=True),
                                    teacher_feature.abs().pow(p).mean(dim=1, keepdim=True))
    return (F.normalize(energy_s.flatten(1), dim=1) - F.normalize(energy_t.flatten(1), dim=1)).pow(2).mean()


class AttentionTransfer(Method):
    """Zagoruyko & Komodakis (2017), Eq. 2 with Hinton's KD (their §4.1 "AT+KD", Gu et al.'s "AT_Hinton"):

    :math:`\\mathcal{L} = (1-\\alpha)\\,\\mathrm{CE} + \\alpha T^2 \\mathrm{KL} + \\frac{\\beta}{2} \\sum_j
    \\mathrm{mean}\\big(Q_S^j/\\|Q_S^j\\|_2 - Q_T^j/\\|Q_T^j\\|_2\\big)^2`

    over the feature pairs ``layers`` (the three stage outputs, as the paper and Gu et al. §5.3). ``layers``
    holds names (the same feature on both sides), ``(student, teacher)`` pairs, or is ``"stages"``: the
    cross-family pairing of :func:`.features.stage_pairs` (each teacher stage output with the student's of its
    size, e.g. WRN → VGG); maps of different sizes meet at the smaller (:func:`attention_loss`). β = 1000 and p = 2 are the paper's; its β/2
    factor is kept, with the official code's mean over batch and positions (:func:`attention_loss`).
    ``alpha=0.9``, T = 4 are Gu et al.'s (a 0.1 CE weight, §5.3); ``alpha=0`` is AT with cross-entropy.
    Terms ``"at"``, ``"kd"`` (if alpha > 0), ``"ce"``.
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 layers: tuple[str, ...] = ("stage1", "stage2", "stage3"), beta: float = 1000.0, p: float = 2.0,
                 temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__(student, teacher)
        check_hinton(temperature, alpha)
        if beta < 0 or p <= 0:
            raise ValueError(f"beta must be >= 0 and p > 0, got beta={beta}, p={p}")
        self.beta, self.p, self.temperature, self.alpha = float(beta), float(p), float(temperature), float(alpha)
        self.pairs = layer_pairs(student, teacher, layers)

    @torch.no_grad()
    def _teacher_targets(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's logits and the features AT pairs with the student's (only those: what is remembered)."""
        logits, features = self.teacher_features(x)
        return logits, {t: features[t] for _, t in self.pairs}

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        needs_teacher = context.uses("at") or (self.alpha > 0 and context.uses("kd"))
        if context.uses("at"):
            logits, features = self.student.forward_features(x)
        else:
            logits, features = self.student(x), {}
        teacher_logits, teacher_features = None, {}
        if needs_teacher:
            teacher_logits, teacher_features = self.remembered("teacher_at", x, context, self._teacher_targets)
        terms = hinton_terms(logits, teacher_logits if self.alpha > 0 else None, y, self.temperature, self.alpha)
        if context.uses("at"):
            terms["at"] = self.beta / 2 * sum(attention_loss(features[s], teacher_features[t], self.p)
                                              for s, t in self.pairs)
        return logits, terms
