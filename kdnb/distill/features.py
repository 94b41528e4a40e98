"""Feature helpers shared by the feature-based methods: shapes from a probe, the parts of a network above a
feature, which features a family calls its stages, and the rule for pairing features across families.

The cross-family pairing rule (stated once, used by AT, FT and the IE family, tested in
``tests/test_distill_features.py``):

1. **Which features pair.** A method that transfers at several positions (AT) pairs each of the teacher's stage
   outputs (:func:`stage_outputs`) with the student's stage output of the *same spatial size* (at a probe
   image; the deepest one if several have it); teacher stages without a student map of their size are left
   out (:func:`stage_pairs`). WRN-46-4 → VGG-13 on 32 px: (stage1, block1), (stage2, block2), (stage3, block3).
   Methods that transfer at the last stage (FT, IE-FT/AT/OD) pair the two networks' last stages
   (:func:`last_stage`) whatever their sizes.
2. **How sizes meet.** Where two paired maps differ in height or width, the larger one is average-pooled to the
   smaller one's size (adaptive average pooling, each dimension separately: :func:`match_size`), so a 7×7
   teacher factor meets a 3×3 student factor at 3×3. Channels never need to agree: the methods compare
   channel-free maps (AT) or encode both sides to one factor width (FT, IE). Pooling the larger map is
   RepDistiller's choice for AT between maps of different sizes; it keeps every teacher position's
   contribution (interpolating the smaller map up would invent positions).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import collapse_prefixes
from ..modules import under_any

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


def signed(feature: str) -> bool:
    """Whether a feature can be negative under the models' naming convention (``X.pre`` before a ReLU, a WRN's
    raw ``.sum``, the logits); other conv features (``stageK``, ``convJ``) are ReLU outputs."""
    return feature == "logits" or feature.endswith(".pre") or feature.endswith(".sum")


_STAGE_PATTERNS = (r"stage\d+", r"block\d+", r"conv\d+")


def stage_outputs(net: nn.Module) -> tuple[str, ...]:
    """The activated outputs of ``net``'s stages, in forward order: ``stageK`` where the family has stages
    (ResNet, WRN, MobileNet), else ``blockK`` (VGG's conv blocks), else ``convK`` (the plain CNNs, AlexNet)."""
    names = getattr(net, "feature_names", ())
    for pattern in _STAGE_PATTERNS:
        found = tuple(n for n in names if re.fullmatch(pattern, n))
        if found:
            return found
    raise ValueError(f"{getattr(net, 'name', type(net).__name__)} has no stage outputs (stageK, blockK or convK) "
                     f"among its features: {', '.join(names)}")


def last_stage(net: nn.Module) -> str:
    """The last stage output (:func:`stage_outputs`): ResNet/WRN ``stage3``, VGG ``block5``, MobileNet
    ``stage5``, CNN ``conv5`` — the "last-stage features" of FT and IE-KD (Huang et al. §3.2)."""
    return stage_outputs(net)[-1]


def stage_pairs(student: nn.Module, teacher: nn.Module) -> tuple[tuple[str, str], ...]:
    """``(student feature, teacher feature)`` pairs by rule 1 of the module docstring: each teacher stage output
    with the deepest student stage output of the same spatial size; ValueError when no size is shared."""
    s_names, t_names = stage_outputs(student), stage_outputs(teacher)
    s_shapes, t_shapes = feature_shapes(student, s_names), feature_shapes(teacher, t_names)
    pairs = []
    for t in t_names:
        same = [s for s in s_names if s_shapes[s][1:] == t_shapes[t][1:]]
        if same:
            pairs.append((same[-1], t))
    if not pairs:
        raise ValueError(f"{student.name} and {teacher.name} share no stage-output size: student "
                         f"{ {s: s_shapes[s][1:] for s in s_names} }, teacher { {t: t_shapes[t][1:] for t in t_names} }")
    return tuple(pairs)


def match_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Rule 2 of the module docstring: maps ``(B, C, H, W)`` (any C) brought to a common spatial size, the larger
    average-pooled (adaptive) to ``(min H, min W)``; maps of equal size are returned as they are."""
    if a.shape[2:] == b.shape[2:]:
        return a, b
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    return (a if tuple(a.shape[2:]) == size else F.adaptive_avg_pool2d(a, size),
            b if tuple(b.shape[2:]) == size else F.adaptive_avg_pool2d(b, size))


def layer_pairs(student: nn.Module, teacher: nn.Module,
                layers: str | Iterable[str | tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``(student feature, teacher feature)`` pairs from a method's ``layers`` argument: a name (the same on both
    sides), a ``(student, teacher)`` pair, or ``"stages"`` for :func:`stage_pairs`. Unknown names are errors."""
    if layers == "stages":
        return stage_pairs(student, teacher)
    if isinstance(layers, str):
        layers = (layers,)
    pairs = tuple((item, item) if isinstance(item, str) else (str(item[0]), str(item[1])) for item in layers)
    if not pairs:
        raise ValueError("layers names at least one feature (or 'stages')")
    feature_shapes(student, [s for s, _ in pairs])
    feature_shapes(teacher, [t for _, t in pairs])
    return pairs
