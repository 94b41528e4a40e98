"""FitNets (Romero et al. 2015): a student's middle layer is first fitted to a teacher's "hint" through a
regressor, then the whole student is trained with Hinton et al.'s KD. (The feature helpers the feature-based
methods share are in :mod:`.features`; a first stage's share of the run in :mod:`.base`; the Hinton terms of a
two-stage method's second stage in :mod:`.kd`.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method, Stage, check_share, stage_epochs
from .features import feature_shapes, prefixes_above, signed
from .kd import check_hinton, kd_stage_terms


class Regressor(nn.Module):
    """FitNets' convolutional regressor (Romero et al. 2015, §2.2), mapping the student's guided map onto the
    teacher's hint map, followed by the teacher's non-linearity (a ReLU when the hint is a ReLU output).

    FitNets sizes the kernel as ``H_student - H_teacher + 1`` without padding, which depends on the input size
    (unknown when the method is built: 28 px Fashion-MNIST, 32 px CIFAR). We use a conv whose kernel and stride
    are the size ratio instead: 1x1 for equal sizes (then the same as FitNets), 2x2 stride 2 for a map twice
    the hint's size, whatever the input. A guided map smaller than the hint is an error.
    """

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], relu: bool) -> None:
        super().__init__()
        (c_s, h_s, w_s), (c_t, h_t, w_t) = student_shape, teacher_shape
        if h_s < h_t or w_s < w_t:
            raise ValueError(f"the guided map ({h_s}x{w_s}) is smaller than the hint ({h_t}x{w_t}); FitNets' "
                             "regressor only shrinks: guide a lower (larger) student layer")
        if h_s % h_t or w_s % w_t:
            raise ValueError(f"the guided map ({h_s}x{w_s}) is not a whole multiple of the hint ({h_t}x{w_t})")
        ratio = (h_s // h_t, w_s // w_t)
        self.conv = nn.Conv2d(c_s, c_t, kernel_size=ratio, stride=ratio)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return F.relu(out) if self.relu else out


class FitNets(Method):
    """Romero et al. (2015), Eq. 3 then Eq. 2.

    Stage ``"hint"`` (``hint_epochs`` of the run): the student up to ``guided_layer`` and the regressor learn
    :math:`\\beta\\,\\|u_h(x) - r(v_g(x))\\|^2` (mean over elements; the paper's ½‖·‖² sum differs by a constant
    that only rescales this stage's learning rate), the rest of the student frozen. Stage ``"kd"``: the whole
    student learns Hinton's KD (``temperature``, ``alpha``; T = 4 and a 0.1 CE weight as Gu et al. 2020, §5.3),
    the regressor frozen and the teacher run for its logits only. FitNets trains the two stages as two separate
    optimisations, so each restarts the learning-rate schedule (``restart_schedule``).

    Defaults: the hint is the teacher's second stage output (Gu et al., §5.3: "the 2nd layer of ResNet26"; the
    middle of the network, as FitNets); ``hint_epochs=0.25`` as torchdistill's FitNets sample (5 hint epochs
    before 15 of KD).
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, hint_layer: str = "stage2",
                 guided_layer: str | None = None, hint_epochs: float = 0.25, temperature: float = 4.0,
                 alpha: float = 0.9, beta: float = 1.0) -> None:
        super().__init__(student, teacher)
        check_hinton(temperature, alpha)
        if beta <= 0:
            raise ValueError(f"beta (the hint weight) must be positive, got {beta}")
        self.hint_layer, self.guided_layer = hint_layer, guided_layer or hint_layer
        self.hint_epochs = check_share(hint_epochs, "hint_epochs")
        self.temperature, self.alpha, self.beta = float(temperature), float(alpha), float(beta)
        hint_shape = feature_shapes(teacher, [self.hint_layer])[self.hint_layer]
        guided_shape = feature_shapes(student, [self.guided_layer])[self.guided_layer]
        self.regressor = Regressor(guided_shape, hint_shape, relu=not signed(self.hint_layer))

    def stages(self, epochs: int) -> list[Stage]:
        above = tuple(f"student.{p}" for p in prefixes_above(self.student, self.guided_layer))
        return [Stage("hint", stage_epochs(self.hint_epochs, epochs, "FitNets"), terms=("hint",), frozen=above,
                      restart_schedule=True),
                Stage("kd", terms=("ce", "kd"), frozen=("regressor",), restart_schedule=True)]

    def hint_loss(self, guided: Tensor, hint: Tensor) -> Tensor:
        fitted = self.regressor(guided)
        if fitted.shape != hint.shape:
            raise ValueError(f"regressed guided map {tuple(fitted.shape)} != hint {tuple(hint.shape)} (the input "
                             "size changes the ratio of the two maps' sizes)")
        return self.beta * F.mse_loss(fitted, hint)

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        terms: dict[str, Tensor] = {}
        if context.uses("hint"):
            logits, features = self.student.forward_features(x)
            with torch.no_grad():
                hint = self.teacher.forward_features(x)[1][self.hint_layer]
            terms["hint"] = self.hint_loss(features[self.guided_layer], hint)
        else:
            logits = self.student(x)
        terms.update(kd_stage_terms(self, logits, x, y, context))
        return logits, terms
