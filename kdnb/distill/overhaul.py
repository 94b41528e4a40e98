"""OD, "A comprehensive overhaul of feature distillation" (Heo et al., ICCV 2019): the student's pre-ReLU stage
outputs, through a connector, learn the teacher's pre-ReLU outputs with a partial L2 distance that ignores
negative responses below a margin derived from the teacher's BatchNorm.

As the official code (``clovaai/overhaul-distillation``; ``shared/notes/kd-methods.md`` §2.4):

- positions: the pre-ReLU output at the end of each stage (``X.pre`` of the stage outputs paired by
  :func:`.features.stage_pairs`: the three stages for CIFAR ResNets/WRNs);
- margin per teacher channel: the expectation of the teacher's pre-ReLU response given that it is negative,
  assuming it is Gaussian with the BatchNorm's scale and shift, :math:`m = \\beta - |\\gamma|\\,\\phi(\\beta/|\\gamma|)
  / \\Phi(-\\beta/|\\gamma|)` (−3|γ| where :math:`\\Phi(-\\beta/|\\gamma|) \\le 0.001`), :func:`bn_margin`;
- distance: :func:`partial_l2`, the squared difference to :math:`\\max(t, m)` where the student exceeds it or it
  is positive, summed;
- connector: 1×1 conv (no bias) + BatchNorm from the student's channels to the teacher's (normal(0, √(2/n))
  initialisation, n = k²·out);
- weights :math:`1/2^{N-i-1}` over the N positions (¼, ½, 1), the sum divided by the batch size and by 1000
  (``beta``);
- the teacher's BatchNorm in training mode (batch statistics) by default, as the official code does on purpose
  (their Table 8; its running statistics are not updated here), ``teacher_bn="eval"`` for the running ones.

Which BatchNorm gives each position's margin, per model family (:func:`preact_batchnorm`): where a BatchNorm's
output *is* the pre-ReLU feature, that one — WRN: the next block's ``bn1`` (``final_bn`` for the last stage);
VGG and the plain CNNs: the block's last conv-BN; MobileNet: the last block's pointwise ``bn2``. CIFAR ResNets
add the shortcut after the BatchNorm: the residual branch's ``bn2`` of the stage's last block, the shortcut
ignored (an approximation, as the official code makes for its ResNets).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..modules import batchnorm_statistics_fixed
from .base import Context, Method
from .features import PROBE_SIZE, feature_shapes, layer_pairs, match_size

TEACHER_BN = ("train", "eval")


def preact_batchnorm(net: nn.Module, feature: str) -> tuple[str, nn.BatchNorm2d]:
    """``(module name, BatchNorm)`` whose scale and shift give the margin of pre-ReLU ``feature`` (see the module
    docstring for the rule per family): the BatchNorm whose output is the feature itself, found on a probe
    forward; for a residual sum (CIFAR ResNet ``.pre``) the ``bn2`` of the block that makes it."""
    hooks, outputs = [], {}

    def keep(name: str, output: Tensor) -> None:  # returns None: the hook must not replace the output
        outputs.setdefault(id(output), (name, output))  # kept alive, so no other tensor can reuse the id

    for name, module in net.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: keep(name, o)))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            probe = torch.zeros(2, net.config["in_channels"], PROBE_SIZE, PROBE_SIZE,
                                device=next(net.parameters()).device)
            features = net.forward_features(probe)[1]
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    if feature not in features:
        raise ValueError(f"{net.name} has no feature {feature!r}")
    modules = dict(net.named_modules())
    name = outputs.get(id(features[feature]), (None,))[0]
    if name is None:  # a residual sum: the residual branch's last BatchNorm of the block that makes it
        producer = next((prefix for prefix, produced in net._layout() if feature in produced), None)
        if producer is None or not isinstance(getattr(modules.get(producer), "bn2", None), nn.BatchNorm2d):
            raise ValueError(f"no BatchNorm precedes {net.name}'s {feature!r}: OD needs a pre-ReLU feature "
                             "right after a BatchNorm (or a residual sum)")
        name = f"{producer}.bn2"
    return name, modules[name]


def bn_margin(bn: nn.BatchNorm2d) -> Tensor:
    """Per channel, :math:`E[x \\mid x < 0]` for :math:`x \\sim N(\\beta, \\gamma^2)` of a BatchNorm's shift β and
    scale γ: :math:`\\beta - |\\gamma|\\phi(\\beta/|\\gamma|)/\\Phi(-\\beta/|\\gamma|)`, or −3|γ| where
    :math:`\\Phi(-\\beta/|\\gamma|) \\le 0.001` (Heo et al. §3.2; the official code's cut-off)."""
    s, m = bn.weight.detach().abs().double(), bn.bias.detach().double()
    z = m / s
    below = torch.special.ndtr(-z)
    density = torch.exp(-z.pow(2) / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(below > 0.001, m - s * density / below.clamp_min(1e-12), -3 * s)
    return margin.float()


def partial_l2(student: Tensor, teacher: Tensor, margin: Tensor) -> Tensor:
    """Heo et al. Eq. 6: with :math:`t' = \\max(t, m)` (``margin`` per channel), the sum of :math:`(s - t')^2` over
    the elements where :math:`s > t'` or :math:`t' > 0` (a student response below a negative target is not
    penalised)."""
    target = torch.max(teacher, margin.view(1, -1, 1, 1))
    mask = (student > target) | (target > 0)
    return ((student - target).pow(2) * mask).sum()


def connector(in_channels: int, out_channels: int) -> nn.Sequential:
    """OD's connector: 1×1 conv without bias, normal(0, √(2/n)) with n = 1·1·out, then BatchNorm (1, 0)."""
    conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / out_channels))
    bn = nn.BatchNorm2d(out_channels)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn)


@contextlib.contextmanager
def teacher_batchnorm(teacher: nn.Module, mode: str) -> Iterator[None]:
    """The teacher's BatchNorm layers in training mode (batch statistics, running ones not updated) for
    ``mode="train"``; nothing changes for ``"eval"``."""
    if mode == "eval":
        yield
        return
    norms = [m for m in teacher.modules() if isinstance(m, _BatchNorm)]
    for m in norms:
        m.train()
    try:
        with batchnorm_statistics_fixed(teacher):
            yield
    finally:
        for m in norms:
            m.eval()


class OD(Method):
    """Heo et al. (2019) OD: :math:`\\mathcal{L} = \\mathrm{CE} + \\beta \\sum_i 2^{-(N-i-1)}
    d_p(r_i(s_i), t_i) / B` with :func:`partial_l2` d_p and a connector r_i per position; see the module docstring.

    ``layers``: stage outputs to pair (``"stages"``, :func:`.features.stage_pairs`, or names / (student, teacher)
    pairs of activated features); the pre-ReLU ``X.pre`` of each is used. ``beta``: 1/1000 (CIFAR; ImageNet
    1/10000). ``teacher_bn``: ``"train"`` (the official code) or ``"eval"``. Terms ``"ce"`` and ``"od"``.
    """

    requires_teacher = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, layers: str | tuple = "stages",
                 beta: float = 1e-3, teacher_bn: str = "train") -> None:
        super().__init__(student, teacher)
        if teacher_bn not in TEACHER_BN:
            raise ValueError(f"teacher_bn must be one of {TEACHER_BN}; got {teacher_bn!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        self.beta, self.teacher_bn = float(beta), teacher_bn
        pairs = layer_pairs(student, teacher, layers)
        self.pairs = tuple((f"{s}.pre", f"{t}.pre") for s, t in pairs)
        s_shapes = feature_shapes(student, [s for s, _ in self.pairs])
        t_shapes = feature_shapes(teacher, [t for _, t in self.pairs])
        self.connectors = nn.ModuleList(connector(s_shapes[s][0], t_shapes[t][0]) for s, t in self.pairs)
        self.bn_names = tuple(preact_batchnorm(teacher, t)[0] for _, t in self.pairs)
        for i, (_, t) in enumerate(self.pairs):
            self.register_buffer(f"margin{i}", bn_margin(preact_batchnorm(teacher, t)[1]))
        n = len(self.pairs)
        self.position_weights = tuple(1.0 / 2 ** (n - i - 1) for i in range(n))

    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{i}") for i in range(len(self.pairs))]

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        if not context.uses("od"):
            logits = self.student(x)
            return logits, {"ce": F.cross_entropy(logits, y)}
        logits, features = self.student.forward_features(x)
        with torch.no_grad(), teacher_batchnorm(self.teacher, self.teacher_bn):
            teacher_features = self.teacher.forward_features(x)[1]
        distance = logits.new_zeros(())
        for (s, t), connect, margin, weight in zip(self.pairs, self.connectors, self.margins(),
                                                   self.position_weights):
            mapped, target = match_size(connect(features[s]), teacher_features[t])
            distance = distance + weight * partial_l2(mapped, target, margin)
        return logits, {"ce": F.cross_entropy(logits, y), "od": self.beta * distance / x.shape[0]}
