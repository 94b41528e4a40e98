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

Features (``forward_features``), in this order:

* ``stem``: relu(BN(stem conv)).
* for K = 1, 2, 3 and J = 1..n: ``stageK.blockJ.pre`` (block J's residual sum, before
  its ReLU) and ``stageK.blockJ`` (= relu of it, the block output). Block J is the
  module ``stageK.{J-1}``. ``stageK.block1`` and ``stageK.blockN`` have the same
  spatial size (the stride sits in block 1), the pair FSP (Yim et al. 2017, "A Gift
  from Knowledge Distillation") takes as the first and last map of a stage.
* ``stageK.pre`` and ``stageK``: the stage output, the same tensors as
  ``stageK.blockN.pre`` and ``stageK.blockN``.
* ``pooled`` (B, 64) and ``logits``.

``model.prefixes_up_to("stage2.block1")`` is ``("stem", "stage1", "stage2.0")``.

Dropout (``dropout``, the drop probability, default 0): Gu et al. (2020, §5.1, Table 2) "drop neurons of the
last layer of each block-layer", i.e. of each stage's output. The features record a stage's output before its
dropout (so ``relu(stageK.pre) == stageK`` still holds); what the next stage (or the pooling) receives is the
dropped-out tensor. The dropout belongs to the stage's last block: it is off when the model, or that block (a
frozen part), is in eval mode. With 0 the network, its parameters and their initialisation are exactly those
of a model built without the option.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import (
    FeatureModel,
    Features,
    Layout,
    conv1x1,
    conv3x3,
    flatten_pairs,
    global_avg_pool,
    init_weights,
    record,
)

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


def check_dropout(dropout: float) -> None:
    """ValueError for a drop probability outside [0, 1)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout (a drop probability) must be in [0, 1); got {dropout}")


def blocks_per_stage(depth: int) -> int:
    """``n`` such that ``depth == 6n + 2``; ValueError for other depths."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, 44, 56, 110, ...); got {depth}"
        )
    return (depth - 2) // 6


class ResNetBody(FeatureModel):
    """Stem and three stages of a CIFAR ResNet, shared by :class:`CifarResNet` and the
    FC-headed :class:`~kdnb.models.resnet_fc.ResNetFC`. Sets the modules ``stem``,
    ``stage1``, ``stage2``, ``stage3``."""

    def _build_body(self, depth: int, in_channels: int, dropout: float = 0.0) -> None:
        n = blocks_per_stage(depth)
        check_dropout(dropout)
        self.depth = depth
        self.stage_dropout = float(dropout)
        self.stem = nn.Sequential(conv3x3(in_channels, STAGE_WIDTHS[0]), nn.BatchNorm2d(STAGE_WIDTHS[0]))
        stages = []
        width_in = STAGE_WIDTHS[0]
        for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES):
            blocks = [BasicBlock(width_in, width, stride)] + [BasicBlock(width, width, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            width_in = width
        self.stage1, self.stage2, self.stage3 = stages
        # (pre-ReLU name, name) pairs per stage and block, built once so the forward pass
        # formats no strings; the last block of a stage also provides the stage feature.
        self._block_names = [
            [
                ((f"stage{k}.block{j}.pre", f"stage{k}.block{j}"),)
                + (((f"stage{k}.pre", f"stage{k}"),) if j == n else ())
                for j in range(1, n + 1)
            ]
            for k in (1, 2, 3)
        ]

    def _run_body(self, x: Tensor, features: Features | None) -> Tensor:
        """Stem and stages; returns the stage-3 output. Every block runs as residual sum then ReLU,
        the same operations as ``block(x)``, so recording costs nothing when ``features`` is None."""
        x = F.relu(self.stem(x))
        record(features, "stem", x)
        for stage, stage_names in zip((self.stage1, self.stage2, self.stage3), self._block_names):
            for block, pairs in zip(stage, stage_names):
                pre = block.residual_sum(x)
                x = F.relu(pre)
                if features is not None:
                    for pre_name, name in pairs:
                        features[pre_name] = pre
                        features[name] = x
            if self.stage_dropout > 0:  # after the stage's features are recorded (see the module docstring)
                x = F.dropout(x, p=self.stage_dropout, training=stage[-1].training)
        return x

    def _body_layout(self) -> Layout:
        """Steps of :meth:`_run_body`: the stem, then one step per block (module ``stageK.{J-1}``)."""
        layout: Layout = [("stem", ("stem",))]
        for k, stage_names in enumerate(self._block_names, start=1):
            layout += [(f"stage{k}.{j}", flatten_pairs(pairs)) for j, pairs in enumerate(stage_names)]
        return layout


class CifarResNet(ResNetBody):
    """ResNet-(6n+2) for 32x32 (or 28x28) images; see the module docstring."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.name = f"resnet{depth}"
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "dropout": dropout}
        self._build_body(depth, in_channels, dropout)
        self.classifier = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        self._set_feature_names()
        init_weights(self)

    def _layout(self) -> Layout:
        return [*self._body_layout(), (None, ("pooled",)), ("classifier", ("logits",))]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = self._run_body(x, features)
        pooled = global_avg_pool(x)
        record(features, "pooled", pooled)
        logits = self.classifier(pooled)
        record(features, "logits", logits)
        return logits
