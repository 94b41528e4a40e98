"""MobileNet (v1) for CIFAR-sized images (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural
Networks for Mobile Vision Applications", Table 1), the MobileNet of Huang et al. (2021) Table 4 and Fig. 4c.

Structure: a 3x3 stem conv (32 channels, stride 1, not ImageNet's 2: CIFAR images are 32 px) + BN + ReLU, then
13 depthwise-separable blocks — a 3x3 depthwise conv + BN + ReLU followed by a 1x1 pointwise conv + BN + ReLU —
with output widths 64, 128, 128, 256, 256, 512 (×6), 1024, 1024 and stride 2 in the depthwise conv of blocks 2, 4,
6 and 12 (32 -> 16 -> 8 -> 4 -> 2 px on CIFAR; 28 -> 14 -> 7 -> 4 -> 2 on Fashion-MNIST), global average pooling
and one linear layer. This is Table 1 of the paper with ImageNet's first stride removed (and so one resolution
fewer before the last stage), the layout the CIFAR KD code bases use (the IE-KD release's ``model/mobilenet.py``
pairs its 1024-channel last stage with a 32-channel factor, kd-methods.md).

``width`` is the paper's width multiplier α (§3.3): every layer's channels are ``round(α × c)`` (at least 8), so
cost falls roughly as α². ``width=1`` is the network above: 3,217,226 parameters with 10 classes.

Features (``forward_features``), in order: ``stem``; for J = 1..13 ``blockJ.pre`` (the pointwise BN output,
before its ReLU) and ``blockJ`` (= relu of it); the last block at each resolution is also ``stageK.pre`` /
``stageK`` for K = 1..5 (blocks 1, 3, 5, 11, 13: widths 64, 128, 256, 512, 1024 at α = 1); then ``pooled`` and
``logits``. Block J is the module ``blocks.{J-1}``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import FeatureModel, Features, Layout, global_avg_pool, init_weights, record

#: (output width at α = 1, stride) of the 13 depthwise-separable blocks.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1))
STEM_WIDTH = 32


def scaled(channels: int, width: float) -> int:
    """``round(width × channels)``, at least 8 channels."""
    return max(8, int(round(channels * width)))


class SeparableBlock(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU, then pointwise 1x1 conv + BN (the ReLU after it is applied by the model,
    so that the pre-activation can be recorded)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels,
                                   bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """The block's output before its last ReLU."""
        return self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x)))))


class MobileNet(FeatureModel):
    """MobileNet v1 for 32x32 (or 28x28) images; see the module docstring."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width (the width multiplier α) must be > 0; got {width}")
        self.name = "mobilenet"
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "width": width}
        stem = scaled(STEM_WIDTH, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        blocks, width_in = [], stem
        for out, stride in BLOCKS:
            blocks.append(SeparableBlock(width_in, scaled(out, width), stride))
            width_in = scaled(out, width)
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(width_in, num_classes)
        # A stage ends where the next block changes the resolution (and at the last block).
        ends = [j for j in range(1, len(BLOCKS) + 1) if j == len(BLOCKS) or BLOCKS[j][1] == 2]
        self._stage_of_block = {j: k for k, j in enumerate(ends, start=1)}
        self._set_feature_names()
        init_weights(self)

    def _names(self, j: int) -> tuple[str, ...]:
        names = (f"block{j}.pre", f"block{j}")
        if j in self._stage_of_block:
            k = self._stage_of_block[j]
            names += (f"stage{k}.pre", f"stage{k}")
        return names

    def _layout(self) -> Layout:
        blocks = [(f"blocks.{j - 1}", self._names(j)) for j in range(1, len(self.blocks) + 1)]
        return [("stem", ("stem",)), *blocks, (None, ("pooled",)), ("classifier", ("logits",))]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = F.relu(self.stem(x))
        record(features, "stem", x)
        for j, block in enumerate(self.blocks, start=1):
            pre = block(x)
            x = F.relu(pre)
            if features is not None:
                for name in self._names(j):
                    features[name] = pre if name.endswith(".pre") else x
        pooled = global_avg_pool(x)
        record(features, "pooled", pooled)
        logits = self.classifier(pooled)
        record(features, "logits", logits)
        return logits
