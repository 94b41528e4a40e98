"""Shared pieces of every model in :mod:`kdnb.models`.

:class:`FeatureModel` fixes the interface the distillation chapters rely on:

* ``model(x)`` returns logits and does nothing else (training speed matters);
* ``model.forward_features(x)`` returns ``(logits, features)`` where ``features``
  maps stable names (``"stage2"``, ``"stage2.pre"``, ``"pooled"``, ...) to tensors;
* ``model.classifier`` is the final :class:`torch.nn.Linear` and
  ``model.feature_dim`` its input width;
* ``model.name`` / ``model.config`` record how the model was built, so that
  ``kdnb.models.create(model.name, **model.config)`` rebuilds the same architecture.

Both entry points share one implementation, :meth:`FeatureModel._run`, which
records intermediate tensors only when it is handed a dict. That keeps the two
code paths from drifting apart: the logits are bit-identical by construction.

Naming convention shared by all families: ``"X.pre"`` is the tensor right before
the ReLU that produces ``"X"``, so ``relu(features["X.pre"]) == features["X"]``.
Pre-ReLU features keep the negative responses that post-ReLU features discard,
which some feature-distillation losses need (e.g. Heo et al. 2019's overhaul loss).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

Features = dict[str, Tensor]


class FeatureModel(nn.Module):
    """Base class: a classifier that can also expose named intermediate features.

    Subclasses implement :meth:`_run` and set, in ``__init__``:
    ``name`` (str), ``config`` (dict of creation keyword arguments),
    ``classifier`` (the final ``nn.Linear``) and ``feature_names`` (the keys
    :meth:`forward_features` returns, in order).
    """

    name: str
    config: dict[str, Any]
    classifier: nn.Linear
    feature_names: tuple[str, ...]

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits, shape ``(batch, num_classes)``."""
        return self._run(x, None)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Features]:
        """Return ``(logits, features)``; ``features`` is ordered as ``feature_names``."""
        features: Features = {}
        logits = self._run(x, features)
        return logits, features

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        """Compute the logits; when ``features`` is a dict, store intermediates in it."""
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        """Width of the penultimate (``"pooled"``) vector fed to the classifier."""
        return self.classifier.in_features

    @property
    def num_classes(self) -> int:
        """Number of output logits."""
        return self.classifier.out_features

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def record(features: Features | None, name: str, value: Tensor) -> None:
    """Store ``value`` under ``name`` when features are being collected."""
    if features is not None:
        features[name] = value


def global_avg_pool(x: Tensor) -> Tensor:
    """Average over all spatial positions: ``(B, C, H, W) -> (B, C)``.

    Adaptive pooling (rather than the fixed ``avg_pool2d(8)`` of the original
    CIFAR code) lets one architecture accept both 28x28 and 32x32 inputs.
    """
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a following BN makes a bias redundant)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias, used by projection shortcuts."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv followed by BatchNorm; the ReLU is left to the caller so the
    pre-activation output can be recorded."""
    return nn.Sequential(conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels))


def conv_bn_groups(in_channels: int, config: tuple[tuple[int, ...], ...]) -> tuple[nn.ModuleList, int]:
    """Groups of :func:`conv_bn` layers, one group per tuple of widths in ``config`` (the plain-CNN and VGG
    layout); returns the groups and the width of the last layer."""
    groups = []
    width_in = in_channels
    for widths in config:
        layers = []
        for width in widths:
            layers.append(conv_bn(width_in, width))
            width_in = width
        groups.append(nn.ModuleList(layers))
    return nn.ModuleList(groups), width_in


def init_weights(model: nn.Module) -> None:
    """The initialisation shared by all models.

    Convolutions: Kaiming-normal with ``fan_out`` (He et al. 2015), the choice of
    the common CIFAR KD code bases. BatchNorm: weight 1, bias 0. Linear layers
    keep PyTorch's default initialisation.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
