"""FitNets (Romero et al. 2015): a student's middle layer is first fitted to a teacher's "hint" through a
regressor, then the whole student is trained with Hinton et al.'s KD. Also the pieces the feature-based methods
share (:mod:`.attention`, :mod:`.fsp`): feature shapes from a probe, the part of a student above a feature, and
a stage's share of the run (the Hinton KD terms are :func:`.kd.hinton_terms`)."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import collapse_prefixes
from ..modules import under_any
from .base import Context, Method, Stage
from .kd import check_hinton, hinton_terms

PROBE_SIZE = 32  # a probe image's side; CIFAR's 32 px and Fashion-MNIST's 28 px give the same size ratios


def feature_shapes(net: nn.Module, names: Iterable[str], size: int = PROBE_SIZE) -> dict[str, tuple[int, ...]]:
    """Shapes ``(C, H, W)`` of features ``names`` of ``net`` for a ``size``-px probe (eval mode, no gradient:
    no BatchNorm statistic moves and no random number is drawn). An unknown name is an error listing the
    features."""
    names = list(names)
    known = getattr(net, "feature_names", ())
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"{getattr(net, 'name', type(net).__name__)} has no feature {', '.join(map(repr, missing))}; "
                         f"its features are: {', '.join(known)}")
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            device = next(net.parameters()).device
            probe = torch.zeros(2, net.config["in_channels"], size, size, device=device)
            features = net.forward_features(probe)[1]
    finally:
        net.train(was_training)
    return {n: tuple(features[n].shape[1:]) for n in names}


def prefixes_above(model: nn.Module, feature: str) -> tuple[str, ...]:
    """Module prefixes of ``model`` whose parameters do *not* compute ``feature``: what a stage that trains the
    network up to ``feature`` freezes (the complement of ``model.prefixes_up_to(feature)``)."""
    needed = model.prefixes_up_to(feature)
    owners = {name.rsplit(".", 1)[0] for name, _ in model.named_parameters() if not under_any(name, needed)}
    return collapse_prefixes(model, owners)


def kd_stage_terms(method: Method, logits: Tensor, x: Tensor, y: Tensor, context: Context) -> dict[str, Tensor]:
    """The Hinton terms of a two-stage feature method (FitNets, FSP) in the current stage: none in a stage that sums
    neither ``ce`` nor ``kd``; the teacher runs only when the stage sums ``kd`` and ``method.alpha > 0``."""
    if not (context.uses("ce") or context.uses("kd")):
        return {}
    teacher_logits = method.teacher_logits(x) if method.alpha > 0 and context.uses("kd") else None
    return hinton_terms(logits, teacher_logits, y, method.temperature, method.alpha)


def stage_epochs(share: float, epochs: int, what: str) -> int:
    """Epochs of a first stage that takes ``share`` of a run of ``epochs``: rounded, at least one, and at least
    one left for the second stage (so a run needs two epochs)."""
    if epochs < 2:
        raise ValueError(f"{what} has two stages and needs at least 2 epochs; the schedule has {epochs}")
    return min(max(round(share * epochs), 1), epochs - 1)


def check_share(share: float, name: str) -> float:
    if not 0.0 < share < 1.0:
        raise ValueError(f"{name} is the first stage's share of the run's epochs, in (0, 1); got {share}")
    return float(share)


def signed(feature: str) -> bool:
    """Whether a feature can be negative under the models' naming convention (``X.pre`` before a ReLU, a WRN's
    raw ``.sum``, the logits); other conv features (``stageK``, ``convJ``) are ReLU outputs."""
    return feature == "logits" or feature.endswith(".pre") or feature.endswith(".sum")


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
