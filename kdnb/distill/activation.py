"""Activation-based transfer: which neurons fire (activation boundaries, Heo et al. 2019) and how a layer's
neurons spread over space (neuron selectivity transfer, Huang & Wang 2017). Both are baselines of Huang et al.'s
supplement; the IE-KD paper gives no settings for them, so the defaults are RepDistiller's (stated per class)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Stage, check_share, stage_epochs
from .features import feature_shapes, match_size, prefixes_above
from .relational import FeatureLossMethod

# ------------------------------------------------------------------------------------------------------- AB


def ab_loss(student_pre: Tensor, teacher_pre: Tensor, margin: float = 1.0) -> Tensor:
    """Heo et al. (2019), §3.2, the alternative (margin, squared-hinge) loss of activation boundaries for one
    layer: :math:`\\sum \\rho(t) \\odot \\max(\\mu - s, 0)^2 + (1 - \\rho(t)) \\odot \\max(\\mu + s, 0)^2` with
    :math:`\\rho(t) = 1[t > 0]` the teacher's activation (``teacher_pre`` its pre-ReLU response), ``student_pre``
    the student's connected pre-ReLU response and μ the margin: **summed** over the elements and divided by the
    batch size (RepDistiller's reduction)."""
    active = (teacher_pre > 0).to(student_pre.dtype)
    loss = active * F.relu(margin - student_pre).pow(2) + (1 - active) * F.relu(margin + student_pre).pow(2)
    return loss.sum() / student_pre.shape[0]


class Connector(nn.Module):
    """Heo et al.'s connector :math:`r(\\cdot)`: a 1×1 conv (C_s → C_t, no bias) and BatchNorm, applied to the
    student's pre-ReLU response (RepDistiller's ``Connector``)."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class AB(FeatureLossMethod):
    """Activation-boundary transfer (Heo et al. 2019): the student is **initialised** by transferring the
    teacher's activation boundaries, then trained on the task.

    Stage ``"ab"`` (``init_epochs`` of the run; RepDistiller's 30 of 240 epochs, 0.125): the student up to its last
    paired layer and the connectors learn :math:`\\beta \\sum_l w_l\\,` :func:`ab_loss` (``margin`` μ = 1) over the
    pre-ReLU pairs ``layers`` (the three stage outputs' ``.pre``), the classifier frozen. Stage ``"train"``: the
    whole student learns ``(1-alpha)`` CE + ``alpha`` KD (alpha = 0: CE alone, as RepDistiller's AB run, whose
    main phase adds no AB term), the connectors frozen. Each stage restarts the learning-rate schedule
    (RepDistiller pre-trains with an optimiser of its own).

    **Departures** from RepDistiller's initialisation: it holds the learning rate constant there (ours follows
    the schedule over the stage) and keeps the student in eval mode, so its BatchNorm statistics do not move
    during the initialisation (ours trains the student's BatchNorm as in any stage).

    Weights are RepDistiller's: layer l of L gets :math:`w_l = 2^{l-L}` (¼, ½, 1 for three), and β = 3/1000 is its
    ``/1000 * 3``. Pairs of different spatial size meet at the smaller (:func:`.features.match_size`). Term
    ``"ab"``.
    """

    term = "ab"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 layers=("stage1.pre", "stage2.pre", "stage3.pre"), beta: float = 0.003, margin: float = 1.0,
                 init_epochs: float = 0.125, temperature: float = 4.0, alpha: float = 0.0) -> None:
        super().__init__(student, teacher, layers, beta, temperature, alpha)
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.margin = float(margin)
        self.init_epochs = check_share(init_epochs, "init_epochs")
        s_shapes = feature_shapes(student, [s for s, _ in self.pairs])
        t_shapes = feature_shapes(teacher, [t for _, t in self.pairs])
        self.connectors = nn.ModuleList(Connector(s_shapes[s][0], t_shapes[t][0]) for s, t in self.pairs)
        n = len(self.pairs)
        self.layer_weights = tuple(2.0 ** (i - n + 1) for i in range(n))

    def stages(self, epochs: int) -> list[Stage]:
        deepest = self.pairs[-1][0]
        above = tuple(f"student.{p}" for p in prefixes_above(self.student, deepest))
        return [Stage("ab", stage_epochs(self.init_epochs, epochs, "AB"), terms=("ab",), frozen=above,
                      restart_schedule=True),
                Stage("train", terms=("ce", "kd"), frozen=("connectors",), restart_schedule=True)]

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        connected, teacher_feature = match_size(self.connectors[index](student_feature), teacher_feature)
        return self.layer_weights[index] * ab_loss(connected, teacher_feature, self.margin)


# ------------------------------------------------------------------------------------------------------ NST
def polynomial_mmd(student_feature: Tensor, teacher_feature: Tensor, degree: int = 2, c: float = 0.0) -> Tensor:
    """Huang & Wang (2017), §3.2-3.3: the squared MMD between the student's and the teacher's neurons (channels),
    each neuron's spatial response :math:`f_{k\\cdot}` divided by its L2 norm, under the polynomial kernel
    :math:`k(x, y) = (x^\\top y + c)^d`:

    :math:`\\frac{1}{C_T^2}\\sum_{i,i'} k(f_T^i, f_T^{i'}) + \\frac{1}{C_S^2}\\sum_{j,j'} k(f_S^j, f_S^{j'}) -
    \\frac{2}{C_S C_T}\\sum_{i,j} k(f_S^j, f_T^i)`,

    averaged over the batch. Maps of different spatial size meet at the smaller (:func:`.features.match_size`);
    channel counts may differ."""
    s, t = match_size(student_feature, teacher_feature.detach())
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2) + c).pow(degree).mean(dim=(1, 2))

    return (kernel(t, t) + kernel(s, s) - 2 * kernel(s, t)).mean()


class NST(FeatureLossMethod):
    """Neuron selectivity transfer (Huang & Wang 2017): :math:`\\mathcal{L} = \\mathrm{CE} + \\frac{\\lambda}{2}
    \\mathcal{L}_{MMD^2}` (:func:`polynomial_mmd`, the polynomial kernel with d = 2, c = 0, the paper's best).

    Defaults are RepDistiller's: the three stage outputs, ``beta`` = 50 multiplying the MMD² of each pair (the
    paper's λ/2), CE weight 1, no KD (``alpha=0``; ``alpha > 0`` is the paper's NST+KD). Term ``"nst"``.
    """

    term = "nst"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 layers=("stage1", "stage2", "stage3"), beta: float = 50.0, degree: int = 2, c: float = 0.0,
                 temperature: float = 4.0, alpha: float = 0.0) -> None:
        super().__init__(student, teacher, layers, beta, temperature, alpha)
        if degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree}")
        self.degree, self.c = int(degree), float(c)

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return polynomial_mmd(student_feature, teacher_feature, self.degree, self.c)
