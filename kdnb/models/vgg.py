"""VGG networks with BatchNorm for small images (Simonyan & Zisserman 2015, "Very Deep
Convolutional Networks for Large-Scale Image Recognition"), in the CIFAR form used by
the KD literature (RepDistiller / CRD, mdistiller).

Structure: five blocks of 3x3 conv + BN + ReLU layers, max-pooling between blocks,
global average pooling and a single ``Linear(512, num_classes)`` -- the 4096-wide
ImageNet head is dropped.

* ``vgg13``: blocks [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]
* ``vgg8``:  blocks [[64], [128], [256], [512], [512]]

Pooling: a 2x2 max-pool follows blocks 1-3. The pool after block 4 is applied only
when block 4's map is at least 8 px wide (inputs of 64 px and more); this mirrors the
CIFAR reference code, so on 32x32 inputs block 5 sees 4x4 maps (3x3 on 28x28) rather
than 2x2. Convolutions have no bias since BN follows each one.

Features: ``blockK.pre`` (the last BN output of block K, before its ReLU) and
``blockK`` (= relu(blockK.pre), before any pooling) for K = 1..5, then ``pooled``
(B, 512) and ``logits``. Block K is the module ``blocks.{K-1}`` (its layers
``blocks.{K-1}.{i}``), so ``prefixes_up_to("block2")`` is ``("blocks.0", "blocks.1")``.

The conv trunk (:func:`run_blocks`) is shared with the FC-headed ``vggD-fc`` nets of
:mod:`kdnb.models.vgg_fc`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import FeatureModel, Features, Layout, conv_bn_groups, global_avg_pool, init_weights, record

VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}

# Below this map width the optional pool after block 4 is skipped (see module docstring).
MIN_WIDTH_FOR_FOURTH_POOL = 8


def run_blocks(blocks: nn.ModuleList, x: Tensor, features: Features | None) -> Tensor:
    """The VGG conv trunk: each block's conv-BN-ReLU layers, recording ``blockK.pre`` and
    ``blockK``, with the pooling rule of the module docstring. Returns the last block's
    (unpooled) output."""
    for index, block in enumerate(blocks):
        for layer_index in range(len(block) - 1):
            x = F.relu(block[layer_index](x), inplace=True)  # in-place: never exposed
        pre = block[-1](x)
        x = F.relu(pre)
        record(features, f"block{index + 1}.pre", pre)
        record(features, f"block{index + 1}", x)
        if index < 3 or (index == 3 and x.shape[-1] >= MIN_WIDTH_FOR_FOURTH_POOL):
            x = F.max_pool2d(x, 2)
    return x


def blocks_layout(blocks: nn.ModuleList) -> Layout:
    """Steps of :func:`run_blocks`: one per block, module ``blocks.{K-1}``."""
    return [(f"blocks.{k}", (f"block{k + 1}.pre", f"block{k + 1}")) for k in range(len(blocks))]


class VGG(FeatureModel):
    """VGG-BN for small inputs; ``variant`` is a key of ``VGG_CONFIGS``."""

    def __init__(self, variant: str, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if variant not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG variant {variant!r}; choose one of: {', '.join(VGG_CONFIGS)}")
        self.name = variant
        self.config = {"num_classes": num_classes, "in_channels": in_channels}

        self.blocks, width_out = conv_bn_groups(in_channels, VGG_CONFIGS[variant])
        self.classifier = nn.Linear(width_out, num_classes)
        self._set_feature_names()
        init_weights(self)

    def _layout(self) -> Layout:
        return [*blocks_layout(self.blocks), (None, ("pooled",)), ("classifier", ("logits",))]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = run_blocks(self.blocks, x, features)
        pooled = global_avg_pool(x)
        record(features, "pooled", pooled)
        logits = self.classifier(pooled)
        record(features, "logits", logits)
        return logits
