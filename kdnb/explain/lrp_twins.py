"""LRP twins: the same network, written so that a rule-based LRP propagates relevance correctly through it.

Why a twin. Captum's ``LRP`` finds the leaf modules of a network and hooks the tensors going in and out of each;
whatever happens between two hooked leaves (a functional op) is seen as a plain gradient. On kdnb's models that
goes wrong three ways (``explanations.md`` §4.2, checked again by ``tests/test_lrp.py``):

* the identity shortcut is an ``nn.Identity`` leaf with no rule: ``TypeError``;
* the residual sum ``out + shortcut(x)`` is functional: the gradient copies the whole relevance into both
  branches instead of splitting it in proportion to their contributions (relevance sums grow by orders);
* global average pooling is functional (``F.adaptive_avg_pool2d``): every position gets ``R / HW`` instead of its
  share ``A_ij / ΣA · R``.

A twin computes the same function from the same parameters and adds only parameter-free modules:
:class:`~captum.attr._utils.custom_modules.Addition_Module` for each residual sum (Captum's proportional split,
LRP-0 on a sum), one ``nn.ReLU`` per use (relevance passes a ReLU unchanged), ``nn.AdaptiveAvgPool2d(1)`` and
``nn.MaxPool2d`` modules for pooling, and a flatten by ``.view`` (no ``nn.Flatten`` leaf). A tensor read by two
hooked modules (a block input feeding the residual branch and the skip) is cloned once per reader: Captum hooks
the *input tensor* of each ruled module, and a shared tensor would see the summed relevance of both readers and
multiply it by the input twice (§4.2: a 100 % error without the clones). The dropout of the source models is
left out: a twin computes the eval-mode network, the one LRP explains.

State dict. :func:`lrp_twin` deep-copies the trained model and re-parents its own submodules under the same
names (``stem``, ``stage2.0.conv1``, ``classifier``, ...), so the twin's ``state_dict`` has exactly the model's
keys and ``twin.load_state_dict(model.state_dict(), strict=True)`` works; in eval mode its logits equal the
model's bit for bit (``torch.equal``, tested for every supported family: the same ops in the same order).

Layer groups. Each twin names which weight layers are the *first* (the pixel layer), *lower*, *middle* and
*upper* layers (:meth:`LRPTwin.layer_groups`), for the composite rules of :mod:`kdnb.explain.lrp`
(Montavon et al. 2019: LRP-0 in upper layers, LRP-ε in the middle, LRP-γ in lower layers).

Batch-norm folding. :func:`fold_batchnorm` returns a copy in which every BatchNorm that directly follows a
convolution is merged into it (``torch.nn.utils.fusion.fuse_conv_bn_eval``), so a rule sees conv + BN as the
one affine map it is in eval mode (as zennit's ``SequentialMergeBatchNorm`` does). The merged BN is replaced by a
plain identity function, invisible to Captum. A BN that follows no convolution (the pre-activation BNs of a WRN)
stays a module: LRP-0 as a per-channel affine layer.

Who uses the twin. :func:`kdnb.explain.lrp.lrp` runs on the BN-merged twin: its one-backward engine would handle
functional sums and pooling by itself, but takes the merged convolutions, the masked head and the layer groups
from the twin; and the twin keeps Captum's ``LRP`` usable as the tests' oracle.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from captum.attr._utils.custom_modules import Addition_Module
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..models import VGG, CifarResNet, MobileNet, PlainCNN, WideResNet
from ..models.base import FeatureModel
from ..models.vgg import MIN_WIDTH_FOR_FOURTH_POOL

__all__ = ["GROUPS", "LRPTwin", "fold_batchnorm", "lrp_twin", "last_feature_map", "weight_layers"]

#: Layer groups of :meth:`LRPTwin.layer_groups`, bottom to top.
GROUPS = ("first", "lower", "middle", "upper")


def _identity(x: Tensor) -> Tensor:
    """Stands in for a BatchNorm merged into its convolution (a function, so Captum does not see it)."""
    return x


def _adopt(target: nn.Module, source: nn.Module, names: tuple[str, ...]) -> None:
    """Register ``source``'s children ``names`` under the same names in ``target``."""
    for name in names:
        target.add_module(name, getattr(source, name))


def last_feature_map(model: FeatureModel) -> str:
    """The name of the last spatial feature map, the one global average pooling reads (the feature recorded
    just before ``"pooled"``): ``"stage3"`` in ResNets and WRNs, ``"block5"`` in VGGs, ``"stage5"`` in the
    MobileNet, the last ``convJ`` in plain CNNs. This is the map whose channels IE-KD splits into inheritance and
    exploration halves (Huang et al. 2021, §3.2)."""
    names = model.feature_names
    if "pooled" not in names or names.index("pooled") == 0:
        raise ValueError(f"{model.name} has no global-pooling head (features: {', '.join(names)})")
    return names[names.index("pooled") - 1]


class LRPTwin(nn.Module):
    """Base of the twins: a global-pooling head shared by all families, the optional head mask (see
    :meth:`masked_head`) and the layer groups. Subclasses set ``source`` (the model's ``name``), build their
    modules in ``__init__`` and implement :meth:`features` (input -> last feature map) and :meth:`_groups`."""

    source: str
    classifier: nn.Linear

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._head_mask: Tensor | None = None  # a plain attribute: not in the state dict
        self._extras: tuple[str, ...] = ()  # children of the source model the forward does not use

    def features(self, x: Tensor) -> Tensor:
        """The last feature map (what global pooling reads), ``(B, C, h, w)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(self.features(x))
        pooled = pooled.view(pooled.shape[0], -1)
        if self._head_mask is not None:
            pooled = pooled * self._head_mask.to(pooled)
        return self.classifier(pooled)

    def masked_head(self, channels: Tensor | None) -> "_HeadMask":
        """``with twin.masked_head(channels): ...``: the classifier sees only ``channels`` of the pooled last
        feature map (the others are multiplied by 0), so the target logit is that group's share
        :math:`\\sum_{c \\in G} W_{kc} \\bar A_c + b_k`. ``channels`` is a 1-D index tensor or a boolean mask over
        the channels; ``None`` leaves the head whole. The mask is a function between the pooling and the
        classifier, not a module: relevance reaching a masked channel is zero, the rest passes unchanged."""
        return _HeadMask(self, channels)

    def layer_groups(self) -> dict[str, list[str]]:
        """Module names of the weight layers (convolutions and the classifier) by group: ``"first"`` (the layer
        reading the pixels), ``"lower"``, ``"middle"``, ``"upper"`` (the classifier is upper). Every conv and
        linear leaf is in exactly one group."""
        groups: dict[str, list[str]] = {group: [] for group in GROUPS}
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and name.split(".")[0] not in self._extras:
                groups[self._group(name)].append(name)
        return groups

    def _group(self, name: str) -> str:
        raise NotImplementedError

    def bn_pairs(self) -> list[tuple[str, str]]:
        """``(conv name, BN name)`` pairs where the BN directly follows the convolution (foldable)."""
        raise NotImplementedError


class _HeadMask:
    def __init__(self, twin: LRPTwin, channels: Tensor | None) -> None:
        self.twin = twin
        self.mask = None
        if channels is not None:
            width = twin.classifier.in_features
            channels = torch.as_tensor(channels)
            if channels.dtype == torch.bool:
                if channels.shape != (width,):
                    raise ValueError(f"a boolean channel mask needs shape ({width},), got {tuple(channels.shape)}")
                mask = channels.float()
            else:
                if channels.numel() and (int(channels.min()) < 0 or int(channels.max()) >= width):
                    raise ValueError(f"channel indices must lie in [0, {width}); got {channels.tolist()}")
                mask = torch.zeros(width)
                mask[channels.long()] = 1.0
            self.mask = mask

    def __enter__(self) -> LRPTwin:
        self.previous = self.twin._head_mask
        self.twin._head_mask = self.mask
        return self.twin

    def __exit__(self, *exc: object) -> None:
        self.twin._head_mask = self.previous


# ------------------------------------------------------------------------------------------------ ResNet
class _ResNetBlockTwin(nn.Module):
    """A CIFAR ResNet BasicBlock: ``relu_out(add(bn2(conv2(relu1(bn1(conv1(x))))), shortcut(x)))``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        _adopt(self, block, ("conv1", "bn1", "conv2", "bn2"))
        self.projection = not isinstance(block.shortcut, nn.Identity)
        if self.projection:
            self.shortcut = block.shortcut  # Sequential(conv1x1, BN): two ruled leaves
        self.relu1 = nn.ReLU()
        self.add = Addition_Module()
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x.clone())))))
        skip = self.shortcut(x.clone()) if self.projection else x.clone()
        return self.relu_out(self.add(out, skip))


class ResNetTwin(LRPTwin):
    """Twin of :class:`~kdnb.models.CifarResNet`. Groups: the stem conv is first; stage 1 lower, stage 2
    middle, stage 3 and the classifier upper."""

    def __init__(self, model: CifarResNet) -> None:
        super().__init__()
        self.source = model.name
        self.stem = model.stem  # Sequential(conv, BN)
        self.relu_stem = nn.ReLU()
        for k in (1, 2, 3):
            self.add_module(f"stage{k}", nn.Sequential(*[_ResNetBlockTwin(b) for b in getattr(model, f"stage{k}")]))
        self.classifier = model.classifier

    def features(self, x: Tensor) -> Tensor:
        return self.stage3(self.stage2(self.stage1(self.relu_stem(self.stem(x)))))

    def _group(self, name: str) -> str:
        if name.startswith("stem"):
            return "first"
        return {"stage1": "lower", "stage2": "middle"}.get(name.split(".")[0], "upper")

    def bn_pairs(self) -> list[tuple[str, str]]:
        pairs = [("stem.0", "stem.1")]
        for k in (1, 2, 3):
            for j, block in enumerate(getattr(self, f"stage{k}")):
                prefix = f"stage{k}.{j}"
                pairs += [(f"{prefix}.conv1", f"{prefix}.bn1"), (f"{prefix}.conv2", f"{prefix}.bn2")]
                if block.projection:
                    pairs.append((f"{prefix}.shortcut.0", f"{prefix}.shortcut.1"))
        return pairs


# ------------------------------------------------------------------------------------------------ WRN
class _PreActBlockTwin(nn.Module):
    """A WRN pre-activation block: ``add(conv2(relu2(bn2(conv1(relu1(bn1(x)))))), skip)`` with the skip the
    raw input (identity) or ``shortcut(relu1(bn1(x)))`` (projection)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        _adopt(self, block, ("bn1", "conv1", "bn2", "conv2"))
        self.projection = block.shortcut is not None
        if self.projection:
            self.shortcut = block.shortcut
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.add = Addition_Module()

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x.clone()))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated.clone()))))
        skip = self.shortcut(activated.clone()) if self.projection else x.clone()
        return self.add(out, skip)


class WideResNetTwin(LRPTwin):
    """Twin of :class:`~kdnb.models.WideResNet` (without its in-block dropout: eval mode). Groups as for the
    ResNet; the final BN is upper. Only ``bn2`` follows a convolution; ``bn1`` and ``final_bn`` act on residual
    sums and stay affine layers (ε rule)."""

    def __init__(self, model: WideResNet) -> None:
        super().__init__()
        self.source = model.name
        self.stem = model.stem
        for k in (1, 2, 3):
            self.add_module(f"stage{k}", nn.Sequential(*[_PreActBlockTwin(b) for b in getattr(model, f"stage{k}")]))
        self.final_bn = model.final_bn
        self.relu_final = nn.ReLU()
        self.classifier = model.classifier

    def features(self, x: Tensor) -> Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.relu_final(self.final_bn(x))

    def _group(self, name: str) -> str:
        if name == "stem":
            return "first"
        return {"stage1": "lower", "stage2": "middle"}.get(name.split(".")[0], "upper")

    def bn_pairs(self) -> list[tuple[str, str]]:
        return [(f"stage{k}.{j}.conv1", f"stage{k}.{j}.bn2")
                for k in (1, 2, 3) for j in range(len(getattr(self, f"stage{k}")))]


# ------------------------------------------------------------------------------------------------ VGG / CNN
class _ConvStackTwin(LRPTwin):
    """Shared by the VGG and plain-CNN twins: groups of ``Sequential(conv, BN)`` layers, each followed by its own
    ``nn.ReLU``, with ``nn.MaxPool2d`` modules where the source model max-pools."""

    container: str  # "blocks" (VGG) or "groups" (CNN)

    def __init__(self, model: FeatureModel, container: str) -> None:
        super().__init__()
        self.source = model.name
        self.container = container
        self.add_module(container, getattr(model, container))
        groups = getattr(model, container)
        self.relus = nn.ModuleList(nn.ModuleList(nn.ReLU() for _ in group) for group in groups)
        self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in groups)
        self.classifier = model.classifier

    def _conv_names(self) -> list[list[str]]:
        return [[f"{self.container}.{g}.{i}.0" for i in range(len(group))]
                for g, group in enumerate(getattr(self, self.container))]

    def bn_pairs(self) -> list[tuple[str, str]]:
        return [(conv, conv[:-1] + "1") for group in self._conv_names() for conv in group]

    def _group(self, name: str) -> str:
        if name == "classifier":
            return "upper"
        convs = [conv for group in self._conv_names() for conv in group]
        position = convs.index(name)
        if position == 0:
            return "first"
        # the other layers by their group g of G: lower, middle, upper for 3g // G = 0, 1, 2
        group = int(name.split(".")[1])
        count = len(getattr(self, self.container))
        return ("lower", "middle", "upper")[min(2, 3 * group // count)]


class VGGTwin(_ConvStackTwin):
    """Twin of :class:`~kdnb.models.VGG`: max-pool after blocks 1-3, and after block 4 when its map is at least
    8 px wide (the source model's rule). Groups: the first conv; then blocks 1-2 lower, 3-4 middle, 5 upper."""

    def __init__(self, model: VGG) -> None:
        super().__init__(model, "blocks")

    def features(self, x: Tensor) -> Tensor:
        for index, (block, relus, pool) in enumerate(zip(self.blocks, self.relus, self.pools)):
            for layer, relu in zip(block, relus):
                x = relu(layer(x))
            if index < 3 or (index == 3 and x.shape[-1] >= MIN_WIDTH_FOR_FOURTH_POOL):
                x = pool(x)
        return x


class PlainCNNTwin(_ConvStackTwin):
    """Twin of :class:`~kdnb.models.PlainCNN` (without its dropout: eval mode): a max-pool before groups 2 and 3.
    Groups: the first conv; then group 1 lower, group 2 middle, group 3 upper."""

    def __init__(self, model: PlainCNN) -> None:
        super().__init__(model, "groups")

    def features(self, x: Tensor) -> Tensor:
        for index, (group, relus, pool) in enumerate(zip(self.groups, self.relus, self.pools)):
            if index > 0:
                x = pool(x)
            for layer, relu in zip(group, relus):
                x = relu(layer(x))
        return x


# ------------------------------------------------------------------------------------------------ MobileNet
class _SeparableTwin(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        _adopt(self, block, ("depthwise", "bn1", "pointwise", "bn2"))
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(self.bn2(self.pointwise(self.relu1(self.bn1(self.depthwise(x))))))


class MobileNetTwin(LRPTwin):
    """Twin of :class:`~kdnb.models.MobileNet`. Groups: the stem conv; blocks 1-3 (the 32 and 16 px stages on
    CIFAR) lower, blocks 4-11 middle, blocks 12-13 and the classifier upper."""

    def __init__(self, model: MobileNet) -> None:
        super().__init__()
        self.source = model.name
        self.stem = model.stem
        self.relu_stem = nn.ReLU()
        self.blocks = nn.ModuleList(_SeparableTwin(block) for block in model.blocks)
        self.classifier = model.classifier

    def features(self, x: Tensor) -> Tensor:
        x = self.relu_stem(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return x

    def _group(self, name: str) -> str:
        if name.startswith("stem"):
            return "first"
        if name == "classifier":
            return "upper"
        index = int(name.split(".")[1])
        return "lower" if index < 3 else "middle" if index < 11 else "upper"

    def bn_pairs(self) -> list[tuple[str, str]]:
        pairs = [("stem.0", "stem.1")]
        for j in range(len(self.blocks)):
            pairs += [(f"blocks.{j}.depthwise", f"blocks.{j}.bn1"), (f"blocks.{j}.pointwise", f"blocks.{j}.bn2")]
        return pairs


# ------------------------------------------------------------------------------------------------ factory
_TWINS: dict[type, Callable[[nn.Module], LRPTwin]] = {
    CifarResNet: ResNetTwin,
    WideResNet: WideResNetTwin,
    VGG: VGGTwin,
    PlainCNN: PlainCNNTwin,
    MobileNet: MobileNetTwin,
}


def lrp_twin(model: nn.Module) -> LRPTwin:
    """The LRP twin of a trained model (see the module docstring): same parameters and buffers (copied, so the
    model is never touched), same ``state_dict`` keys, same eval-mode logits, in eval mode. Children of the model
    that its forward does not use (a buffer-only module, e.g. a stored channel split) are carried along unused.

    Supported: :class:`~kdnb.models.CifarResNet` (the paper's Figs. 1 and 3 networks),
    :class:`~kdnb.models.WideResNet`, :class:`~kdnb.models.VGG`, :class:`~kdnb.models.PlainCNN`,
    :class:`~kdnb.models.MobileNet`. A twin passed in is returned as it is.

    Raises:
        TypeError: for any other model (the message lists the supported classes).
    """
    if isinstance(model, LRPTwin):
        return model
    build = _TWINS.get(type(model))
    if build is None:
        supported = ", ".join(cls.__name__ for cls in _TWINS)
        raise TypeError(f"no LRP twin for {type(model).__name__}; supported: {supported}")
    source = copy.deepcopy(model)
    twin = build(source)
    # Children the forward does not use (e.g. a channel split kept as a buffer module) travel along, so the
    # state dicts keep the same keys.
    own = dict(twin.named_children())
    extras = tuple(name for name, _ in source.named_children() if name not in own)
    for name in extras:
        twin.add_module(name, getattr(source, name))
    twin._extras = extras
    return twin.eval()


def _split(name: str) -> tuple[str, str]:
    parent, _, child = name.rpartition(".")
    return parent, child


def fold_batchnorm(twin: LRPTwin) -> LRPTwin:
    """A copy of ``twin`` with each BatchNorm of :meth:`LRPTwin.bn_pairs` merged into the convolution before it
    (eval-mode statistics: :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) and replaced by an identity function.
    The copy computes the same function up to float rounding; its state dict differs (merged conv biases, no BN
    entries), so it is for attribution only. ``twin`` is not modified."""
    folded = copy.deepcopy(twin).eval()
    modules = dict(folded.named_modules())
    for conv_name, bn_name in twin.bn_pairs():
        conv, bn = modules[conv_name], modules[bn_name]
        fused = fuse_conv_bn_eval(conv, bn)
        conv_parent, conv_child = _split(conv_name)
        modules[conv_parent].add_module(conv_child, fused) if conv_parent else folded.add_module(conv_child, fused)
        bn_parent_name, bn_child = _split(bn_name)
        bn_parent = modules[bn_parent_name] if bn_parent_name else folded
        del bn_parent._modules[bn_child]
        if not isinstance(bn_parent, nn.Sequential):
            object.__setattr__(bn_parent, bn_child, _identity)
    return folded


def weight_layers(twin: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every convolution and linear layer, in module order."""
    for name, module in twin.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            yield name, module
