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

Which parameters compute a feature: every family describes itself as a *layout*, an
ordered list of steps ``(module prefix, features available once it has run)``, from
which both ``feature_names`` and :meth:`FeatureModel.prefixes_up_to` are derived, so
the two cannot disagree. ``model.prefixes_up_to("fc2")`` returns the module-name
prefixes (as in ``named_parameters()``) whose parameters compute ``"fc2"``; freezing
exactly those is "freeze everything up to FC2" (Cheng et al. 2020, section 4.1:
the layers under the distilled layer are frozen, the layers above it trained). A prefix
names a module and its children: ``name == p or name.startswith(p + ".")``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

Features = dict[str, Tensor]

# One step of a layout: the prefix of the module that runs (None for parameter-free
# operations such as pooling) and the features available once it has run, in the
# order ``forward_features`` records them.
Step = tuple[str | None, tuple[str, ...]]
Layout = list[Step]


class FeatureModel(nn.Module):
    """Base class: a classifier that can also expose named intermediate features.

    Subclasses implement :meth:`_run` and :meth:`_layout` and set, in ``__init__``:
    ``name`` (str), ``config`` (dict of creation keyword arguments) and
    ``classifier`` (the final ``nn.Linear``); they end ``__init__`` with
    :meth:`_set_feature_names`, which derives ``feature_names`` (the keys
    :meth:`forward_features` returns, in order) from the layout.
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

    def _layout(self) -> Layout:
        """The network as ordered steps ``(module prefix or None, features it makes available)``."""
        raise NotImplementedError

    def _set_feature_names(self) -> None:
        self.feature_names = tuple(name for _, produced in self._layout() for name in produced)

    def prefixes_up_to(self, feature: str) -> tuple[str, ...]:
        """Module-name prefixes whose parameters compute ``feature``, in module (= forward) order.

        The gradient of ``feature`` is zero for every parameter outside them, and every
        returned prefix holds parameters that ``feature`` depends on. Whole modules are
        named where a module is entirely needed (``("stem", "stage1", "stage2.0")``);
        ``"logits"`` gives every top-level module with parameters. Use it to freeze
        "everything up to FC2" (Cheng et al. 2020, section 4.1).

        Raises:
            ValueError: ``feature`` is not one of :attr:`feature_names` (the message lists them).
        """
        if feature not in self.feature_names:
            raise ValueError(
                f"{self.name} has no feature {feature!r}; its features are: {', '.join(self.feature_names)}"
            )
        needed = []
        for prefix, produced in self._layout():
            if prefix is not None:
                needed.append(prefix)
            if feature in produced:
                break
        return collapse_prefixes(self, needed)

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


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def collapse_prefixes(model: nn.Module, prefixes: Iterable[str]) -> tuple[str, ...]:
    """The shortest equivalent list of module names: a module whose children with
    parameters are all selected replaces them (up to, not including, the root), and
    a name inside another selected one is dropped. Ordered as ``model.named_modules()``."""
    chosen = set(prefixes)
    modules = list(model.named_modules())
    # Reversed pre-order visits every module after all of its descendants.
    for name, module in reversed(modules):
        if not name or name in chosen or any(True for _ in module.parameters(recurse=False)):
            continue
        children = [f"{name}.{child}" for child, sub in module.named_children() if _has_parameters(sub)]
        if children and all(child in chosen for child in children):
            chosen.add(name)

    def inside_another(name: str) -> bool:
        return any(name.startswith(other + ".") for other in chosen)

    return tuple(name for name, _ in modules if name in chosen and not inside_another(name))


def flatten_pairs(pairs: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """``((a.pre, a), (b.pre, b))`` -> ``(a.pre, a, b.pre, b)``."""
    return tuple(name for pair in pairs for name in pair)


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
