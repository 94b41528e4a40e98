"""Cheng et al. (CVPR 2020, §4.1 "Distillation"): the student's layers up to one FC layer learn to mimic the
teacher's feature there, alone; then they are frozen and the layers above learn the labels.

Stage ``"mimic"``: the student's parameters up to and including ``FC_l`` (``student.prefixes_up_to(layer)``)
learn from the distillation loss only,

    L_mimic = ‖f_T(x) − f_S(x)‖² / max(‖f_T(x)‖², D)     (§4.1's squared distance over the batch; D = batch ×
                                                          feature elements),

with ``f`` the layer's output **before its ReLU** (``fcl.pre``; for ``fc3`` the logits, which have no ReLU).
Everything above ``FC_l`` is frozen (no labels reach the layers being measured: "the learning process was not
affected by the information of additional human annotations"). Stage ``"classify"``: the mimicked layers are
frozen (no gradient, eval mode, BatchNorm statistics fixed) and the layers above train with cross-entropy; the
teacher is not run. For ``layer="fc3"`` there is nothing above: one stage, the mimic stage.

As the released code (``distillation/distillation.py``; ``shared/notes/estimator.md`` §4.1), with our choices:

- phase 1, the mimic, is 150 epochs and phase 2, the classifier, 100: ``mimic_share`` = 150/250 = 0.6 of the
  schedule's epochs (rounded, at least one epoch each) go to the mimic stage;
- the loss is the squared distance on the pre-ReLU feature divided by the larger of D and the teacher feature's
  squared norm over the batch (no gradient flows through it: the teacher is fixed). Where the teacher's features
  have a mean square of at most 1 this is the released code's mean-reduced MSE (the paper's squared norm up to
  the constant D). Where they are larger it is the distance relative to the teacher's feature energy, so the
  loss starts near 1. FC3's logits are large (mean square ≈ 28 for a trained ``alexnet_small`` teacher, against
  ≈ 5 and ≈ 2 at FC1/FC2): with the plain MSE their mimic diverged to NaN within a dozen steps at the book's
  learning rate. The loss is never scaled *up*: a barely trained teacher with tiny logits (mean square ≈ 0.01)
  made the purely relative loss diverge to inf;
- the two phases are separate trainings there, so here each stage restarts the learning-rate schedule; the
  learning rate itself is the schedule's (the released code's lr is not in our notes) — a difference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Context, Method, Stage

LAYERS = ("fc1", "fc2", "fc3")
# The feature each layer mimics: the FC layer's output before its ReLU (fc3, the logits, has none).
MIMIC_FEATURE = {"fc1": "fc1.pre", "fc2": "fc2.pre", "fc3": "fc3"}
RELEASED_SHARE = 150 / 250  # the released code's 150 mimic epochs then 100 classifier epochs


def mimic_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """§4.1's ‖f_T(x) − f_S(x)‖² over the batch divided by max(‖f_T(x)‖², D) (detached; D the number of
    elements): the released mean-reduced MSE for teacher features of mean square ≤ 1, the distance relative to
    the teacher's energy above that (1 for a student that outputs zeros). See the module docstring."""
    energy = teacher_feature.detach().pow(2).sum().clamp_min(teacher_feature.numel())
    return (student_feature - teacher_feature).pow(2).sum() / energy


def stage_epochs(epochs: int, mimic_share: float) -> tuple[int, int]:
    """(mimic epochs, classify epochs) of an ``epochs``-epoch schedule: ``round(mimic_share × epochs)``, at least
    one epoch in each stage (ValueError if ``epochs`` < 2 leaves no room for both)."""
    if epochs < 2:
        raise ValueError(f"the mimic and classify stages need at least 2 epochs; the schedule has {epochs}")
    mimic = min(max(1, round(mimic_share * epochs)), epochs - 1)
    return mimic, epochs - mimic


class Mimic(Method):
    """Mimic-then-freeze distillation at one FC layer (Cheng et al. 2020, §4.1); see the module docstring.

    ``layer``: ``"fc1"``, ``"fc2"`` or ``"fc3"`` of an FC-headed student (``alexnet_small``, ``vgg*-fc``,
    ``resnet*-fc``); the teacher has the same feature width there. ``mimic_share``: the fraction of the epochs
    in the mimic stage (0.6, the released 150 of 250); ignored for ``fc3`` (all epochs mimic)."""

    requires_teacher = True
    version = 2  # 2: the loss is relative to the teacher feature's energy where that is large (NaN at FC3)

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, layer: str = "fc1",
                 mimic_share: float = RELEASED_SHARE) -> None:
        super().__init__(student, teacher)
        if layer not in LAYERS:
            raise ValueError(f"unknown mimic layer {layer!r}; choose one of: {', '.join(LAYERS)}")
        if not 0.0 < mimic_share < 1.0:
            raise ValueError(f"mimic_share must be in (0, 1); got {mimic_share}")
        self.layer, self.feature, self.mimic_share = layer, MIMIC_FEATURE[layer], float(mimic_share)
        self.learned = tuple(student.prefixes_up_to(layer))  # the layers that mimic, then freeze
        tops = [name for name, child in student.named_children() if any(True for _ in child.parameters())]
        self.above = tuple(name for name in tops if not any(name == p or p.startswith(name + ".")
                                                             for p in self.learned))

    def stages(self, epochs: int) -> list[Stage]:
        learned = tuple(f"student.{p}" for p in self.learned)
        above = tuple(f"student.{p}" for p in self.above)
        if not above:  # fc3: the whole network mimics the teacher's logits
            return [Stage("mimic", epochs, terms=("mimic",))]
        mimic, classify = stage_epochs(epochs, self.mimic_share)
        return [Stage("mimic", mimic, terms=("mimic",), frozen=above, restart_schedule=True),
                Stage("classify", classify, terms=("ce",), frozen=learned, restart_schedule=True)]

    def forward(self, x: Tensor, y: Tensor, context: Context | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        context = context or Context.everything()
        logits, features = self.student.forward_features(x)
        terms: dict[str, Tensor] = {}
        if context.uses("mimic"):  # the classify stage never runs the teacher
            with torch.no_grad():
                target = self.teacher.forward_features(x)[1][self.feature]
            terms["mimic"] = mimic_loss(features[self.feature], target)
        if context.uses("ce"):
            terms["ce"] = F.cross_entropy(logits, y)
        return logits, terms
