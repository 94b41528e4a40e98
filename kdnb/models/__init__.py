"""Model zoo of the book: CIFAR ResNets, Wide ResNets, VGG, plain CNNs and an MLP.

Build models by name::

    from kdnb import models
    teacher = models.create("resnet56", num_classes=100)
    student = models.create("wrn-16-2", num_classes=100, dropout=0.0)
    logits, feats = student.forward_features(x)   # feats["stage2.pre"], feats["pooled"], ...

Every model is a :class:`~kdnb.models.base.FeatureModel`; see that module for the
feature-naming convention and each family's module for its feature names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kdnb.models.base import FeatureModel, Features
from kdnb.models.cnn import CNN_CONFIGS, PlainCNN
from kdnb.models.mlp import MLP
from kdnb.models.resnet_cifar import CifarResNet, blocks_per_stage
from kdnb.models.vgg import VGG, VGG_CONFIGS
from kdnb.models.wrn import WideResNet, blocks_per_group

__all__ = [
    "MLP",
    "VGG",
    "CifarResNet",
    "FeatureModel",
    "Features",
    "PlainCNN",
    "WideResNet",
    "available",
    "create",
]

RESNET_DEPTHS = (8, 14, 20, 26, 32, 44, 56, 110)
WRN_NAMES = ("wrn-16-1", "wrn-16-2", "wrn-40-1", "wrn-40-2", "wrn-28-10")

_RESNET_PATTERN = re.compile(r"resnet(\d+)")
_WRN_PATTERN = re.compile(r"wrn-(\d+)-(\d+)")


def available() -> list[str]:
    """Canonical model names. ``resnet{6n+2}`` and ``wrn-d-k`` also accept other depths/widths."""
    return (
        [f"resnet{depth}" for depth in RESNET_DEPTHS]
        + list(WRN_NAMES)
        + list(VGG_CONFIGS)
        + list(CNN_CONFIGS)
        + ["mlp"]
    )


def _choices() -> str:
    resnets = ", ".join(f"resnet{depth}" for depth in RESNET_DEPTHS)
    others = ", ".join([*VGG_CONFIGS, *CNN_CONFIGS, "mlp"])
    return f"{resnets} (any resnet{{6n+2}}), wrn-d-k (e.g. {', '.join(WRN_NAMES)}), {others}"


def create(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> FeatureModel:
    """Build a freshly initialised model by name.

    Args:
        name: one of :func:`available`, or any ``resnet{6n+2}`` / ``wrn-{d}-{k}``
            with ``(d - 4) % 6 == 0``. Case-insensitive.
        num_classes: number of logits.
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        **kwargs: family-specific options: ``dropout`` (wrn, mlp); ``image_size``
            and ``hidden`` (mlp). Other families accept none.

    ``create(model.name, **model.config)`` rebuilds the same architecture.

    Raises:
        ValueError: for an unknown name (the message lists the choices) or an
            impossible depth.
        TypeError: for an option the family does not accept.
    """
    key = name.strip().lower()
    common = {"num_classes": num_classes, "in_channels": in_channels}

    resnet = _RESNET_PATTERN.fullmatch(key)
    if resnet:
        _reject_options(key, kwargs)
        depth = int(resnet.group(1))
        _check_depth(name, blocks_per_stage, depth)
        return CifarResNet(depth, **common)
    wrn = _WRN_PATTERN.fullmatch(key)
    if wrn:
        depth, widen_factor = int(wrn.group(1)), int(wrn.group(2))
        _check_depth(name, blocks_per_group, depth)
        if widen_factor < 1:
            raise ValueError(f"unknown model {name!r}: WRN widen factor k must be >= 1; choose one of: {_choices()}")
        return WideResNet(depth, widen_factor, **common, **kwargs)
    if key in VGG_CONFIGS:
        _reject_options(key, kwargs)
        return VGG(key, **common)
    if key in CNN_CONFIGS:
        _reject_options(key, kwargs)
        return PlainCNN(key, **common)
    if key == "mlp":
        return MLP(**common, **kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of: {_choices()}")


def _check_depth(name: str, validate: Callable[[int], int], depth: int) -> None:
    """Re-raise a depth error with the list of valid names appended."""
    try:
        validate(depth)
    except ValueError as error:
        raise ValueError(f"unknown model {name!r}: {error}; choose one of: {_choices()}") from None


def _reject_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise TypeError(f"model {name!r} takes no extra options; got {sorted(options)}")

