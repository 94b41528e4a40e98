"""CIFAR ResNets of depth 6n+2 (He et al. 2016, "Deep Residual Learning for Image
Recognition", section 4.2).

Structure: a 3x3 stem conv (16 channels) + BN + ReLU, then three stages of ``n``
BasicBlocks with widths 16/32/64 and strides 1/2/2 (32 -> 16 -> 8 px on CIFAR),
global average pooling and one linear layer. ``depth = 6n + 2`` counts the stem,
two convs per block and the classifier.

Shortcuts use "option B": a 1x1 conv + BN projection when the stride or width
changes, identity otherwise. This follows the KD code bases (RepDistiller,
mdistiller, torchdistill) rather than the parameter-free "option A" of the paper,
so counts are a few thousand parameters above the paper's (e.g. resnet20:
272,474 here vs 0.27M).

Features (``forward_features``): ``stem``, then for K = 1, 2, 3 ``stageK.pre``
(the residual sum of the stage's last block, before its ReLU) and ``stageK``
(= relu(stageK.pre), the stage output), then ``pooled`` (B, 64) and ``logits``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import FeatureModel, Features, conv1x1, conv3x3, global_avg_pool, init_weights, record

STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; the final ReLU is applied after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut: nn.Module = (
            nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
            if needs_projection
            else nn.Identity()
        )

    def residual_sum(self, x: Tensor) -> Tensor:
        """Block output before the final ReLU (the "pre-ReLU" feature)."""
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in-place: never exposed
        out = self.bn2(self.conv2(out))
        return out + self.shortcut(x)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.residual_sum(x))


def blocks_per_stage(depth: int) -> int:
    """``n`` such that ``depth == 6n + 2``; ValueError for other depths."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, 44, 56, 110, ...); got {depth}"
        )
    return (depth - 2) // 6


class CifarResNet(FeatureModel):
    """ResNet-(6n+2) for 32x32 (or 28x28) images; see the module docstring."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        self.name = f"resnet{depth}"
        self.config = {"num_classes": num_classes, "in_channels": in_channels}
        self.depth = depth

        self.stem = nn.Sequential(conv3x3(in_channels, STAGE_WIDTHS[0]), nn.BatchNorm2d(STAGE_WIDTHS[0]))
        stages = []
        width_in = STAGE_WIDTHS[0]
        for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES):
            blocks = [BasicBlock(width_in, width, stride)] + [BasicBlock(width, width, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            width_in = width
        self.stage1, self.stage2, self.stage3 = stages
        self.classifier = nn.Linear(STAGE_WIDTHS[-1], num_classes)

        self.feature_names = (
            "stem",
            "stage1.pre", "stage1",
            "stage2.pre", "stage2",
            "stage3.pre", "stage3",
            "pooled", "logits",
        )  # fmt: skip
        init_weights(self)

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = F.relu(self.stem(x))
        record(features, "stem", x)
        for stage_name, stage in (("stage1", self.stage1), ("stage2", self.stage2), ("stage3", self.stage3)):
            for block_index in range(len(stage) - 1):
                x = stage[block_index](x)
            # Run the last block in two steps so its pre-ReLU sum can be recorded at no extra cost.
            pre = stage[-1].residual_sum(x)
            x = F.relu(pre)
            record(features, f"{stage_name}.pre", pre)
            record(features, stage_name, x)
        pooled = global_avg_pool(x)
        record(features, "pooled", pooled)
        logits = self.classifier(pooled)
        record(features, "logits", logits)
        return logits
