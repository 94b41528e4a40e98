"""Dissecting dark knowledge (Gu et al. 2020, §3, Table 1; after Furlanello et al. 2018, "Born-Again Networks").

Each variant keeps one component of a teacher's output and removes another, as a transform of the teacher's
outputs into sample weights (the CWTM family) or into permuted targets (DKPP):

* **CWTM**, Eq. 5: one-hot labels, each sample's cross-entropy weighted by the teacher's confidence,
  :math:`w_i = q_i^{max} / \\sum_j q_j^{max}` (the weights of a batch sum to 1, as the :math:`1/b` of plain CE).
  With :math:`\\mathcal{L} = \\sum_i w_i\\,\\mathrm{ce}(p_i, y_i)`, :math:`\\partial\\mathcal{L}/\\partial a_i^j =
  w_i (p_i^j - y_i^j)`: Eq. 5 term by term.
* **CWTM-Permut**: the same weights, randomly permuted inside the batch (sample i gets :math:`q_{\\pi(i)}^{max}`).
* **CWTM-Random**: :math:`q_i^{max}` replaced by a value drawn uniformly from :math:`[\\beta, 1)`
  (:math:`\\beta = 0.5`), normalised over the batch the same way.
* **DKPP** (Dark Knowledge with Permuted Predictions), Eq. 4 with the teacher's non-argmax outputs randomly
  permuted within each sample: the confidence and the non-ground-truth responses stay, the class-similarity
  information goes. Otherwise it is :class:`~kdnb.distill.kd.KD` (same temperature, weights and loss).

:math:`q` is the teacher's softmax at temperature 1 for the confidence. Randomness uses torch's default generator
on the outputs' device (seeded by the trainer) unless a ``generator`` is given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method
from .kd import KD, kd_divergence


def teacher_confidence(teacher_logits: Tensor) -> Tensor:
    """:math:`q_i^{max}`, the largest softmax probability of each row, shape ``(N,)``."""
    return F.softmax(teacher_logits, dim=-1).max(dim=-1).values


def cwtm_weights(confidence: Tensor) -> Tensor:
    """Eq. 5's sample weights :math:`q_i^{max} / \\sum_j q_j^{max}` from the confidences ``(N,)``."""
    return confidence / confidence.sum()


def cwtm_permut_weights(confidence: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """CWTM-Permut: the CWTM weights of a random permutation of the batch (sample i gets sample π(i)'s)."""
    order = torch.randperm(confidence.shape[0], generator=generator, device=confidence.device)
    return cwtm_weights(confidence[order])


def cwtm_random_confidence(n: int, beta: float = 0.5, generator: torch.Generator | None = None,
                           device: torch.device | str | None = None) -> Tensor:
    """CWTM-Random's stand-in for :math:`q_i^{max}`: ``n`` values uniform in :math:`[\\beta, 1)`."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    return beta + (1.0 - beta) * torch.rand(n, generator=generator, device=device)


def weighted_cross_entropy(logits: Tensor, y: Tensor, weights: Tensor) -> Tensor:
    """:math:`\\sum_i w_i\\,\\mathrm{ce}(p_i, y_i)`; the weights are constants (detached)."""
    return (weights.detach() * F.cross_entropy(logits, y, reduction="none")).sum()


def permute_except(outputs: Tensor, keep: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each row of ``outputs`` (N, K) with its entries randomly permuted, except entry ``keep[i]``, which stays."""
    n, k = outputs.shape
    is_kept = torch.zeros_like(outputs, dtype=torch.bool).scatter_(1, keep.reshape(n, 1), True)
    keys = torch.rand(n, k, generator=generator, device=outputs.device)
    # Both orders list the kept entry first; the rest come in a random order (sources) and in place (destinations).
    sources = torch.where(is_kept, -1.0, keys).argsort(dim=1)
    places = torch.arange(k, device=outputs.device, dtype=keys.dtype).expand(n, k)
    destinations = torch.where(is_kept, -1.0, places).argsort(dim=1)
    return torch.empty_like(outputs).scatter_(1, destinations, outputs.gather(1, sources))


def dkpp_permute(outputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DKPP's targets: in each row, the entries other than the argmax randomly permuted, the argmax kept in place.

    Works on logits or probabilities alike (a softmax at any temperature commutes with the permutation)."""
    return permute_except(outputs, outputs.argmax(dim=1), generator)


class CWTM(Method):
    """Confidence Weighted by Teacher Max (Eq. 5): one-hot labels, each sample weighted by the teacher's
    confidence normalised over the batch. Loss term ``weighted_ce``."""

    requires_teacher = True

    def sample_weights(self, x: Tensor) -> Tensor:
        return cwtm_weights(teacher_confidence(self.teacher_logits(x)))

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"weighted_ce": weighted_cross_entropy(logits, y, self.sample_weights(x))}


class CWTMPermut(CWTM):
    """CWTM with the teacher's confidences randomly permuted inside each batch."""

    def sample_weights(self, x: Tensor) -> Tensor:
        return cwtm_permut_weights(teacher_confidence(self.teacher_logits(x)))


class CWTMRandom(CWTM):
    """CWTM with each confidence drawn uniformly from [beta, 1) (beta = 0.5 in the paper): needs no teacher."""

    requires_teacher = False
    takes_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, beta: float = 0.5) -> None:
        if teacher is not None:
            raise ValueError("CWTM-Random draws its weights at random; it takes no teacher run")
        super().__init__(student, None)
        cwtm_random_confidence(0, beta)  # validates beta
        self.beta = float(beta)

    def sample_weights(self, x: Tensor) -> Tensor:
        return cwtm_weights(cwtm_random_confidence(x.shape[0], self.beta, device=x.device))


class DKPP(KD):
    """KD against the teacher's outputs with the non-argmax entries permuted in each sample (same temperature
    and weights as :class:`~kdnb.distill.kd.KD`): the terms ``ce`` and ``kd``."""

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        logits = self.student(x)
        terms = {"ce": (1.0 - self.alpha) * F.cross_entropy(logits, y)}
        if context.uses("kd"):
            targets = dkpp_permute(self.teacher_logits(x, context))
            terms["kd"] = self.alpha * kd_divergence(logits, targets, self.temperature)
        return logits, terms
