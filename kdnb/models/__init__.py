"""Model zoo of the book: CIFAR ResNets, Wide ResNets, VGG, plain CNNs, an MLP, and the
FC-headed nets of Cheng et al. 2020 (section 4.1): ``alexnet_small``, ``vgg11-fc`` /
``vgg16-fc`` / ``vgg19-fc`` and ``resnet{6n+2}-fc``.

Build models by name::

    from kdnb import models
    teacher = models.create("resnet56", num_classes=100)
    student = models.create("wrn-16-2", num_classes=100, dropout=0.0)
    logits, feats = student.forward_features(x)   # feats["stage2.pre"], feats["pooled"], ...
    net = models.create("vgg11-fc", in_channels=1, dropout=0.5)
    frozen = net.prefixes_up_to("fc2")              # ("blocks", "fc1", "fc2")

Every model is a :class:`~kdnb.models.base.FeatureModel`; see that module for the
feature-naming convention and :meth:`~kdnb.models.base.FeatureModel.prefixes_up_to`,
and each family's module for its feature names.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from kdnb.models.alexnet_small import AlexNetSmall
from kdnb.models.base import FeatureModel, Features
from kdnb.models.cnn import CNN_CONFIGS, PlainCNN
from kdnb.models.mlp import MLP
from kdnb.models.mobilenet import MobileNet
from kdnb.models.resnet_cifar import CifarResNet, blocks_per_stage
from kdnb.models.resnet_fc import ResNetFC
from kdnb.models.vgg import VGG, VGG_CONFIGS
from kdnb.models.vgg_fc import VGG_FC_CONFIGS, VGGFC
from kdnb.models.wrn import WideResNet, blocks_per_group

__all__ = [
    "MLP",
    "MobileNet",
    "VGG",
    "VGGFC",
    "AlexNetSmall",
    "CifarResNet",
    "FeatureModel",
    "Features",
    "PlainCNN",
    "ResNetFC",
    "WideResNet",
    "available",
    "create",
]

RESNET_DEPTHS = (8, 14, 20, 26, 32, 44, 56, 110)
RESNET_FC_DEPTHS = (20, 56)
WRN_NAMES = ("wrn-16-1", "wrn-16-2", "wrn-40-1", "wrn-40-2", "wrn-28-10")
ALEXNET_SMALL = "alexnet_small"
MOBILENET = "mobilenet"

_RESNET_PATTERN = re.compile(r"resnet(\d+)")
_RESNET_FC_PATTERN = re.compile(r"resnet(\d+)-fc")
_WRN_PATTERN = re.compile(r"wrn-(\d+)-(\d+)")
# Constructor arguments fixed by the model name or by ``create``'s own parameters; the rest are options.
_NOT_OPTIONS = {"variant", "depth", "widen_factor", "num_classes", "in_channels"}


def available() -> list[str]:
    """Canonical model names. ``resnet{6n+2}``, ``resnet{6n+2}-fc`` and ``wrn-d-k`` also accept
    other depths/widths."""
    return (
        [f"resnet{depth}" for depth in RESNET_DEPTHS]
        + list(WRN_NAMES)
        + list(VGG_CONFIGS)
        + list(CNN_CONFIGS)
        + ["mlp", MOBILENET]
        + [ALEXNET_SMALL]
        + list(VGG_FC_CONFIGS)
        + [f"resnet{depth}-fc" for depth in RESNET_FC_DEPTHS]
    )


def _choices() -> str:
    resnets = ", ".join(f"resnet{depth}" for depth in RESNET_DEPTHS)
    others = ", ".join([*VGG_CONFIGS, *CNN_CONFIGS, "mlp", MOBILENET, ALEXNET_SMALL, *VGG_FC_CONFIGS])
    resnet_fc = ", ".join(f"resnet{depth}-fc" for depth in RESNET_FC_DEPTHS)
    return (
        f"{resnets} (any resnet{{6n+2}}), wrn-d-k (e.g. {', '.join(WRN_NAMES)}), {others}, "
        f"{resnet_fc} (any resnet{{6n+2}}-fc)"
    )


def create(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> FeatureModel:
    """Build a freshly initialised model by name.

    Args:
        name: one of :func:`available`, or any ``resnet{6n+2}`` / ``resnet{6n+2}-fc`` /
            ``wrn-{d}-{k}`` with ``(d - 4) % 6 == 0``. Case-insensitive.
        num_classes: number of logits.
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        **kwargs: family-specific options: ``dropout`` (wrn, mlp, alexnet_small,
            vgg*-fc, resnet*-fc; and resnet{6n+2} and cnn6/8/10, after each stage or
            conv group, Gu et al. 2020 §5.1); ``fc_width`` (alexnet_small, vgg*-fc,
            resnet*-fc); ``image_size`` and ``hidden`` (mlp); ``width`` (mobilenet: the width
            multiplier α; alexnet_small, vgg*-fc, resnet*-fc: the conv trunk's). VGG accepts none.

    ``create(model.name, **model.config)`` rebuilds the same architecture.

    Raises:
        ValueError: for an unknown name (the message lists the choices) or an
            impossible depth.
        TypeError: for an option the family does not accept (the message names it
            and lists the options the family has).
    """
    key = name.strip().lower()
    common = {"num_classes": num_classes, "in_channels": in_channels}

    resnet = _RESNET_PATTERN.fullmatch(key)
    if resnet:
        depth = int(resnet.group(1))
        _check_depth(name, blocks_per_stage, depth)
        return _build(key, CifarResNet, (depth,), common, kwargs)
    resnet_fc = _RESNET_FC_PATTERN.fullmatch(key)
    if resnet_fc:
        depth = int(resnet_fc.group(1))
        _check_depth(name, blocks_per_stage, depth)
        return _build(key, ResNetFC, (depth,), common, kwargs)
    wrn = _WRN_PATTERN.fullmatch(key)
    if wrn:
        depth, widen_factor = int(wrn.group(1)), int(wrn.group(2))
        _check_depth(name, blocks_per_group, depth)
        if widen_factor < 1:
            raise ValueError(f"unknown model {name!r}: WRN widen factor k must be >= 1; choose one of: {_choices()}")
        return _build(key, WideResNet, (depth, widen_factor), common, kwargs)
    if key in VGG_CONFIGS:
        return _build(key, VGG, (key,), common, kwargs)
    if key in VGG_FC_CONFIGS:
        return _build(key, VGGFC, (key,), common, kwargs)
    if key in CNN_CONFIGS:
        return _build(key, PlainCNN, (key,), common, kwargs)
    if key == "mlp":
        return _build(key, MLP, (), common, kwargs)
    if key == MOBILENET:
        return _build(key, MobileNet, (), common, kwargs)
    if key == ALEXNET_SMALL:
        return _build(key, AlexNetSmall, (), common, kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of: {_choices()}")


def _build(
    name: str, family: type[FeatureModel], fixed: tuple[Any, ...], common: dict[str, Any], options: dict[str, Any]
) -> FeatureModel:
    """``family(*fixed, **common, **options)`` after checking ``options`` against its signature."""
    accepted = [p for p in inspect.signature(family).parameters if p not in _NOT_OPTIONS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        has = f"its options are: {', '.join(accepted)}" if accepted else "it takes no options"
        raise TypeError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; {has}")
    return family(*fixed, **common, **options)


def _check_depth(name: str, validate: Callable[[int], int], depth: int) -> None:
    """Re-raise a depth error with the list of valid names appended."""
    try:
        validate(depth)
    except ValueError as error:
        raise ValueError(f"unknown model {name!r}: {error}; choose one of: {_choices()}") from None
