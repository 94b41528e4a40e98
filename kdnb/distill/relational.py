"""Relational distillation: the student matches how the teacher relates the *samples of a batch* to each other
(similarity-preserving KD, relational KD, probabilistic knowledge transfer, correlation congruence).

These are baselines of Huang et al.'s supplement (its Table 1: SP, CC, VID, RKD, PKT, AB, NST, in
RepDistiller's order). The IE-KD paper gives no settings for them; the defaults below are RepDistiller's
(``scripts/run_cifar_distill.sh``: CE weight 1, no KD, one weight ``-b`` per method), and the departures are
stated in each class. Every batch-relation matrix is ``(B, B)``, so student and teacher widths never need to agree.

:class:`FeatureLossMethod` is the shape shared by the feature baselines of :mod:`.relational`,
:mod:`.variational` and :mod:`.activation`: Hinton's terms (``alpha = 0``: plain CE) plus one weighted feature
term over ``(student, teacher)`` feature pairs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method
from .features import feature_shapes, layer_pairs
from .kd import check_hinton, hinton_terms


class FeatureLossMethod(Method):
    """CE (``1 - alpha``) + ``alpha`` T² KL (Hinton) + ``beta`` × :meth:`feature_loss` summed over the feature
    pairs ``layers`` (:func:`.features.layer_pairs`: a name, ``(student, teacher)`` pairs or ``"stages"``).
    Subclasses set :attr:`term` (the loss term's name) and implement :meth:`feature_loss`. The teacher runs only
    when the stage sums the feature term or ``kd``; a stage that sums neither ``ce`` nor ``kd`` gets no Hinton
    terms (an initialisation stage such as AB's)."""

    requires_teacher = True
    term = "feature"

    def __init__(self, student: nn.Module, teacher: nn.Module | None, layers, beta: float, temperature: float,
                 alpha: float) -> None:
        super().__init__(student, teacher)
        check_hinton(temperature, alpha)
        if beta < 0:
            raise ValueError(f"beta (the {self.term} weight) must be >= 0, got {beta}")
        self.beta, self.temperature, self.alpha = float(beta), float(temperature), float(alpha)
        self.pairs = layer_pairs(student, teacher, layers)

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        """The unweighted loss of pair ``index``."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        uses_feature = context.uses(self.term)
        uses_kd = self.alpha > 0 and context.uses("kd")
        if uses_feature:
            logits, features = self.student.forward_features(x)
        else:
            logits, features = self.student(x), {}
        teacher_logits, teacher_features = None, {}
        if uses_feature:
            teacher_logits, teacher_features = self.teacher_features(x)
        elif uses_kd:
            teacher_logits = self.teacher_logits(x, context)
        terms: dict[str, Tensor] = {}
        if context.uses("ce") or uses_kd:
            terms = hinton_terms(logits, teacher_logits if uses_kd else None, y, self.temperature, self.alpha)
        if uses_feature:
            terms[self.term] = self.beta * sum(self.feature_loss(i, features[s], teacher_features[t])
                                               for i, (s, t) in enumerate(self.pairs))
        return logits, terms


# ------------------------------------------------------------------------------------------------------- SP
def similarity_matrix(feature: Tensor) -> Tensor:
    """Tung & Mori (2019), Eqs. 1-2: :math:`\\tilde G = Q Q^\\top` with :math:`Q` the ``(B, C*H*W)`` reshaped
    activations, then each row divided by its L2 norm: ``(B, B)``."""
    q = feature.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


def similarity_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Tung & Mori (2019), Eq. 3: :math:`\\frac{1}{b^2}\\|G_T - G_S\\|_F^2` for one layer pair."""
    b = student_feature.shape[0]
    return (similarity_matrix(student_feature) - similarity_matrix(teacher_feature)).pow(2).sum() / b**2


class SP(FeatureLossMethod):
    """Similarity-preserving KD (Tung & Mori 2019), Eq. 4: :math:`\\mathcal{L} = \\mathrm{CE} + \\frac{\\gamma}{b^2}
    \\sum_l \\|G_T^{(l)} - G_S^{(l)}\\|_F^2` (:func:`similarity_loss`).

    Defaults are RepDistiller's: the last stage output (``stage3``, its ``feat[-2]``), ``beta`` γ = 3000, CE
    weight 1 and no KD (``alpha=0``; ``alpha > 0`` adds Hinton's KD as the paper's SP+KD). Term ``"sp"``.
    """

    term = "sp"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, layers="stage3",
                 beta: float = 3000.0, temperature: float = 4.0, alpha: float = 0.0) -> None:
        super().__init__(student, teacher, layers, beta, temperature, alpha)

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return similarity_loss(student_feature, teacher_feature)


# ------------------------------------------------------------------------------------------------------ RKD
def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between the rows of ``e`` ``(B, D)``: ``(B, B)``, exactly 0 on the diagonal (the
    squared distance is clamped at ``eps`` before the root so the gradient stays finite)."""
    squared = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1).clamp(min=eps)
    return squared.sqrt() * (1 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype))


def rkd_distance_potential(e: Tensor) -> Tensor:
    """Park et al. (2019), §3.2.1: :math:`\\psi_D(t_i, t_j) = \\|t_i - t_j\\|_2 / \\mu`, with μ the mean distance
    over the batch's pairs (i ≠ j)."""
    d = pairwise_distances(e)
    b = e.shape[0]
    mu = d.sum() / (b * (b - 1))
    return d / mu


def rkd_angle_potential(e: Tensor) -> Tensor:
    """Park et al. (2019), §3.2.2: :math:`\\psi_A(t_i, t_j, t_k) = \\langle e^{ij}, e^{kj}\\rangle` with
    :math:`e^{ij} = (t_i - t_j)/\\|t_i - t_j\\|_2`: ``(B, B, B)`` indexed ``[j, i, k]`` (zero where i = j or
    k = j)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [j, i] = e_i - e_j, normalised
    return diff @ diff.transpose(1, 2)


def rkd_loss(student: Tensor, teacher: Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> Tensor:
    """Park et al. (2019): :math:`\\lambda_D \\sum l_\\delta(\\psi_D^T, \\psi_D^S) + \\lambda_A \\sum
    l_\\delta(\\psi_A^T, \\psi_A^S)` with the Huber loss :math:`l_\\delta` (δ = 1), each averaged over its pairs /
    triplets (all B² and B³ entries, RepDistiller's reduction); λ_D = 25, λ_A = 50 as the paper's
    metric-learning setting and RepDistiller. Teacher potentials are constants (no gradient)."""
    if student.shape[0] < 2:
        return student.sum() * 0.0  # no pair to relate
    s, t = student.flatten(1), teacher.flatten(1).detach()
    loss = distance_weight * F.smooth_l1_loss(rkd_distance_potential(s), rkd_distance_potential(t))
    loss = loss + angle_weight * F.smooth_l1_loss(rkd_angle_potential(s), rkd_angle_potential(t))
    return loss


class RKD(FeatureLossMethod):
    """Relational KD (Park et al. 2019): :math:`\\mathcal{L} = \\mathrm{CE} + \\beta\\,(\\lambda_D L_{RKD-D} +
    \\lambda_A L_{RKD-A})` (:func:`rkd_loss`) on the pooled penultimate vectors (RepDistiller's ``feat[-1]``).

    Defaults are RepDistiller's: β = 1, λ_D = 25, λ_A = 50, CE weight 1, no KD (``alpha=0``). RepDistiller's
    μ averages the non-zero distances; ours averages the B(B-1) off-diagonal ones (the same unless two samples
    share a vector). Term ``"rkd"``.
    """

    term = "rkd"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, layers="pooled", beta: float = 1.0,
                 distance_weight: float = 25.0, angle_weight: float = 50.0, temperature: float = 4.0,
                 alpha: float = 0.0) -> None:
        super().__init__(student, teacher, layers, beta, temperature, alpha)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return rkd_loss(student_feature, teacher_feature, self.distance_weight, self.angle_weight)


# ------------------------------------------------------------------------------------------------------ PKT
def pkt_probabilities(feature: Tensor, eps: float = 1e-7) -> Tensor:
    """Passalis & Tefas (2018), §3 with the cosine kernel: :math:`K_{ij} = (\\cos(x_i, x_j) + 1)/2` and
    :math:`p_{j|i} = K_{ij} / \\sum_k K_{ik}` (rows ``(B, B)`` summing to 1; the diagonal kept, as RepDistiller)."""
    f = F.normalize(feature.flatten(1), dim=1, eps=eps)
    k = (f @ f.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """Passalis & Tefas (2018): :math:`\\mathrm{KL}(P_T \\| P_S) = \\sum_{i,j} p^t_{j|i} \\log(p^t_{j|i}/p^s_{j|i})`,
    here the **mean** over the B² entries with ε = 1e-7 inside the logarithm (RepDistiller's reduction, which its
    weight 30000 is tuned for)."""
    p_s, p_t = pkt_probabilities(student, eps), pkt_probabilities(teacher.detach(), eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


class PKT(FeatureLossMethod):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018): :math:`\\mathcal{L} = \\mathrm{CE} + \\beta\\,
    \\mathrm{KL}(P_T\\|P_S)` (:func:`pkt_loss`) on the pooled penultimate vectors. Defaults are RepDistiller's:
    β = 30000, CE weight 1, no KD. Term ``"pkt"``."""

    term = "pkt"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, layers="pooled",
                 beta: float = 30000.0, temperature: float = 4.0, alpha: float = 0.0) -> None:
        super().__init__(student, teacher, layers, beta, temperature, alpha)

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return pkt_loss(student_feature, teacher_feature)


# ------------------------------------------------------------------------------------------------------- CC
def correlation_matrix(feature: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """Peng et al. (2019), §3.3: the batch's correlation matrix under the Gaussian RBF kernel
    :math:`k(x, y) = \\exp(-\\gamma\\|x - y\\|^2)` of L2-normalised vectors, via its ``order``-P Taylor series
    :math:`k(x, y) \\approx \\sum_{p=0}^{P} e^{-2\\gamma} \\frac{(2\\gamma)^p}{p!} (x^\\top y)^p` (exact as P → ∞,
    since :math:`\\|x - y\\|^2 = 2 - 2x^\\top y` for unit vectors): ``(B, B)``."""
    f = F.normalize(feature.flatten(1), dim=1)
    dot = f @ f.t()
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * dot.pow(p)
               for p in range(order + 1))


def cc_loss(student: Tensor, teacher: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """Peng et al. (2019): :math:`L_{CC} = \\frac{1}{n^2}\\|\\psi(F_t) - \\psi(F_s)\\|_2^2` with ψ
    :func:`correlation_matrix`."""
    b = student.shape[0]
    diff = correlation_matrix(student, gamma, order) - correlation_matrix(teacher.detach(), gamma, order)
    return diff.pow(2).sum() / b**2


def release_cc_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """RepDistiller's ``Correlation`` loss (the code its README credits to Peng et al.'s authors), **not** the
    paper's formula: with :math:`\\delta_i = |e^s_i - e^t_i|` per sample, the mean over consecutive samples of
    :math:`\\sum_d \\delta_{i,d}\\,\\delta_{i+1,d}`."""
    delta = (student_embedding - teacher_embedding).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class CC(FeatureLossMethod):
    """Correlation congruence (Peng et al. 2019): :math:`\\mathcal{L} = (1-\\alpha)\\mathrm{CE} + \\alpha T^2
    \\mathrm{KL} + \\beta L_{CC}` on the pooled penultimate vectors.

    ``form="kernel"`` (default) is the paper's: :func:`cc_loss`, the Gaussian RBF kernel in its P = ``order``
    Taylor form; γ = 0.4, P = 2 are the defaults of the common port of the paper's form (the Knowledge
    Distillation Zoo), not numbers we could check in the paper's text. ``beta=1`` (when ``beta`` is None) is our
    default for this form: no release gives one.

    ``form="release"`` is what RepDistiller runs as "CC" (and so, most likely, what produced CC numbers in tables
    built with it): both pooled vectors mapped by trainable linear embeddings to ``dim`` = 128, then
    :func:`release_cc_loss`, weighted ``beta`` = 0.02 when None (its script). Note that this form can be driven
    to zero by shrinking both embeddings. ``alpha=0`` (no KD) is RepDistiller's. Term ``"cc"``.
    """

    term = "cc"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, layers="pooled",
                 beta: float | None = None, form: str = "kernel", gamma: float = 0.4, order: int = 2,
                 dim: int = 128, temperature: float = 4.0, alpha: float = 0.0) -> None:
        if form not in ("kernel", "release"):
            raise ValueError(f"form is 'kernel' (Peng et al.'s formula) or 'release' (RepDistiller's), got {form!r}")
        if beta is None:
            beta = 1.0 if form == "kernel" else 0.02
        super().__init__(student, teacher, layers, beta, temperature, alpha)
        if gamma <= 0 or order < 1:
            raise ValueError(f"gamma must be > 0 and order >= 1, got gamma={gamma}, order={order}")
        self.form, self.gamma, self.order = form, float(gamma), int(order)
        if form == "release":
            if len(self.pairs) != 1:
                raise ValueError("the release form of CC embeds one feature pair")
            (s, t), = self.pairs
            c_s = feature_shapes(student, [s])[s]
            c_t = feature_shapes(teacher, [t])[t]
            self.embed_student = nn.Linear(math.prod(c_s), dim)
            self.embed_teacher = nn.Linear(math.prod(c_t), dim)

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        if self.form == "release":
            return release_cc_loss(self.embed_student(student_feature.flatten(1)),
                                   self.embed_teacher(teacher_feature.detach().flatten(1)))
        return cc_loss(student_feature, teacher_feature, self.gamma, self.order)
