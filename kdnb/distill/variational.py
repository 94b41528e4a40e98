"""Variational information distillation (Ahn et al. 2019): the student maximises a variational lower bound on
the mutual information between its features and the teacher's, a Gaussian whose mean a regressor predicts
from the student's feature and whose per-channel variance is learned."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import feature_shapes, match_size
from .relational import FeatureLossMethod


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class VIDRegressor(nn.Module):
    """One layer pair's variational distribution :math:`q(t \\mid s) = \\mathcal{N}(\\mu(s), \\sigma^2)`: the
    mean :math:`\\mu` a 1×1-conv regressor (conv → ReLU → conv → ReLU → conv, ``C_s → C_mid → C_mid → C_t``, as
    RepDistiller with C_mid = C_t), the variance per teacher channel
    :math:`\\sigma_c^2 = \\log(1 + e^{\\alpha_c}) + \\epsilon` (Ahn et al. §3, the softplus parameterisation),
    initialised to ``init_variance`` (RepDistiller's 5)."""

    def __init__(self, student_channels: int, teacher_channels: int, mid_channels: int | None = None,
                 init_variance: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__()
        if init_variance <= eps:
            raise ValueError(f"init_variance must exceed eps={eps}, got {init_variance}")
        mid = mid_channels or teacher_channels
        self.mean = nn.Sequential(nn.Conv2d(student_channels, mid, 1, bias=False), nn.ReLU(),
                                  nn.Conv2d(mid, mid, 1, bias=False), nn.ReLU(),
                                  nn.Conv2d(mid, teacher_channels, 1, bias=False))
        self.eps = eps
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), _inverse_softplus(init_variance - eps)))

    def variance(self) -> Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return vid_loss(self.mean(student_feature), self.variance(), teacher_feature)


def vid_loss(mean: Tensor, variance: Tensor, target: Tensor) -> Tensor:
    """Ahn et al. (2019), §3, the Gaussian variational distribution:
    :math:`-\\log q(t\\mid s) = \\sum_{c,h,w} \\log\\sigma_c + (t_{c,h,w} - \\mu_{c,h,w}(s))^2 / (2\\sigma_c^2)`
    (up to a constant), here **averaged** over batch, channels and positions (RepDistiller's reduction):
    ``mean(0.5 (t - μ)² / σ² + 0.5 log σ²)``. ``variance`` ``(C,)`` broadcasts over ``(B, C, H, W)`` (or
    ``(B, C)``)."""
    shape = (1, -1) + (1,) * (target.dim() - 2)
    var = variance.view(shape)
    return (0.5 * (target.detach() - mean).pow(2) / var + 0.5 * torch.log(var)).mean()


class VID(FeatureLossMethod):
    """Variational information distillation (Ahn et al. 2019), §3 (the total loss and its Gaussian bound):
    :math:`\\mathcal{L} = \\mathrm{CE} - \\sum_k \\lambda_k \\mathbb{E}[\\log q(t^{(k)} \\mid s^{(k)})]`, one
    :class:`VIDRegressor` per pair (its regressor and variances train with the student).

    Defaults are RepDistiller's: the three stage outputs, β = λ = 1 for every pair, CE weight 1, no KD
    (``alpha=0``), the variance initialised at 5. Pairs of different spatial size meet at the smaller one
    (:func:`.features.match_size`, RepDistiller pools likewise). Term ``"vid"``.
    """

    term = "vid"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 layers=("stage1", "stage2", "stage3"), beta: float = 1.0, init_variance: float = 5.0,
                 temperature: float = 4.0, alpha: float = 0.0) -> None:
        super().__init__(student, teacher, layers, beta, temperature, alpha)
        s_shapes = feature_shapes(student, [s for s, _ in self.pairs])
        t_shapes = feature_shapes(teacher, [t for _, t in self.pairs])
        for s, t in self.pairs:
            if len(s_shapes[s]) != 3 or len(t_shapes[t]) != 3:
                raise ValueError(f"VID pairs convolutional maps (C, H, W); got {s} {s_shapes[s]}, "
                                 f"{t} {t_shapes[t]}")
        self.regressors = nn.ModuleList(VIDRegressor(s_shapes[s][0], t_shapes[t][0], init_variance=init_variance)
                                        for s, t in self.pairs)

    def feature_loss(self, index: int, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        student_feature, teacher_feature = match_size(student_feature, teacher_feature)
        return self.regressors[index](student_feature, teacher_feature)
