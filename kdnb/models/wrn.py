"""Wide Residual Networks WRN-d-k (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

Structure: a 3x3 stem conv (16 channels), three groups of ``n = (d - 4) / 6``
pre-activation basic blocks with widths 16k/32k/64k and strides 1/2/2, a final
BN + ReLU, global average pooling and one linear layer.

Each block is ``BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3`` plus a shortcut. When
the width changes the shortcut is a 1x1 conv applied to the *activated* input
relu(bn1(x)) (as in the reference implementation); otherwise it is the identity
on the raw input.

Features. In a pre-activation network a stage ends with a raw residual sum; the
BN + ReLU that activates it belongs to the next stage's first block (or to the
final BN for the last stage). To keep the convention shared by all models in
this package -- ``relu(X.pre) == X`` -- the features are:

* ``stem``: output of the stem convolution (no BN/ReLU follow it directly).
* ``stageK.sum``: the raw residual sum leaving stage K (what the attention-transfer
  paper uses as the "group output").
* ``stageK.pre``: BN(stageK.sum) with the BN the network applies next, i.e. the
  tensor right before the ReLU (what OD/AB-style losses call "pre-activation").
* ``stageK``: relu(stageK.pre), the activated tensor the next layer consumes.
  For stage 3 this is the final BN-ReLU output that is pooled.
* ``pooled`` (B, 64k) and ``logits``.

Per-block features follow the same pattern, for K = 1, 2, 3 and J = 1..n (block J is
the module ``stageK.{J-1}``):

* ``stageK.blockJ.sum``: the raw output of block J;
* ``stageK.blockJ.pre``: BN of it with the BN applied next (``bn1`` of the following
  block; for the last block of a stage, the same tensor as ``stageK.pre``);
* ``stageK.blockJ``: relu(stageK.blockJ.pre).

So the last block of a stage gives the stage features (``stageK.blockN.sum`` is
``stageK.sum``), and ``stageK.block1`` and ``stageK.blockN`` have equal spatial size:
the first and last maps of a stage, as FSP (Yim et al. 2017) pairs them. Features are
ordered as computed: a block's ``.pre`` and activated output come after its ``.sum``
(and after the stage's ``.sum`` for the last block), since the next block computes them.

``model.prefixes_up_to("stage1")`` is ``("stem", "stage1", "stage2.0.bn1")``: the BN
that activates stage 1's sum lives in stage 2's first block.
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

STEM_WIDTH = 16
BASE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


class PreActBlock(nn.Module):
    """Pre-activation basic block. ``forward`` = ``activate`` then ``finish``; the split
    lets the network record a block's BN output as the previous block's (or stage's) feature."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.dropout = dropout
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut: nn.Module | None = conv1x1(in_channels, out_channels, stride) if needs_projection else None

    def activate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(bn1(x), relu(bn1(x)))``."""
        pre = self.bn1(x)
        return pre, F.relu(pre)

    def finish(self, x: Tensor, activated: Tensor) -> Tensor:
        """Residual branch on the activated input plus the shortcut: the raw block output."""
        out = self.conv1(activated)
        out = F.relu(self.bn2(out), inplace=True)  # in-place: never exposed
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        # Projection shortcuts see the activated input; identity shortcuts the raw one.
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        return out + shortcut

    def forward(self, x: Tensor) -> Tensor:
        _, activated = self.activate(x)
        return self.finish(x, activated)


def blocks_per_group(depth: int) -> int:
    """``n`` such that ``depth == 6n + 4``; ValueError for other depths."""
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(f"WRN depth d must satisfy (d - 4) % 6 == 0 with d >= 10 (e.g. 16, 28, 40); got {depth}")
    return (depth - 4) // 6


class WideResNet(FeatureModel):
    """WRN-d-k with optional dropout inside the blocks; see the module docstring."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = blocks_per_group(depth)
        if widen_factor < 1:
            raise ValueError(f"WRN widen factor k must be >= 1; got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.name = f"wrn-{depth}-{widen_factor}"
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "dropout": dropout}
        self.depth, self.widen_factor = depth, widen_factor

        widths = [w * widen_factor for w in BASE_WIDTHS]
        self.stem = conv3x3(in_channels, STEM_WIDTH)
        stages = []
        width_in = STEM_WIDTH
        for width, stride in zip(widths, STAGE_STRIDES):
            blocks = [PreActBlock(width_in, width, stride, dropout)]
            blocks += [PreActBlock(width, width, 1, dropout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            width_in = width
        self.stage1, self.stage2, self.stage3 = stages
        self.final_bn = nn.BatchNorm2d(widths[-1])
        self.classifier = nn.Linear(widths[-1], num_classes)

        # Names built once, so the forward pass formats no strings. For block J of stage K:
        # the names of its raw sum, and the (pre, activated) pairs the next BN-ReLU provides.
        self._sum_names = [
            [(f"stage{k}.block{j}.sum",) + ((f"stage{k}.sum",) if j == n else ()) for j in range(1, n + 1)]
            for k in (1, 2, 3)
        ]
        self._activation_names = [
            [
                ((f"stage{k}.block{j}.pre", f"stage{k}.block{j}"),)
                + (((f"stage{k}.pre", f"stage{k}"),) if j == n else ())
                for j in range(1, n + 1)
            ]
            for k in (1, 2, 3)
        ]
        self._set_feature_names()
        init_weights(self)

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = self.stem(x)
        record(features, "stem", x)
        pending: tuple[tuple[str, str], ...] = ()  # names of what the next BN-ReLU activates (none for the stem)
        stages = (self.stage1, self.stage2, self.stage3)
        for stage, sum_names, activation_names in zip(stages, self._sum_names, self._activation_names):
            for block, block_sums, block_activations in zip(stage, sum_names, activation_names):
                # ``activate`` then ``finish`` is exactly ``block(x)``; the split exposes bn1's output,
                # which belongs to the previous block's features.
                pre, activated = block.activate(x)
                x = block.finish(x, activated)
                if features is not None:
                    for pre_name, name in pending:
                        features[pre_name] = pre
                        features[name] = activated
                    for name in block_sums:
                        features[name] = x
                pending = block_activations
        pre = self.final_bn(x)
        x = F.relu(pre)
        if features is not None:
            for pre_name, name in pending:
                features[pre_name] = pre
                features[name] = x
        pooled = global_avg_pool(x)
        record(features, "pooled", pooled)
        logits = self.classifier(pooled)
        record(features, "logits", logits)
        return logits

    def _layout(self) -> Layout:
        layout: Layout = [("stem", ("stem",))]
        pending: tuple[str, ...] = ()
        for k, (sum_names, activation_names) in enumerate(zip(self._sum_names, self._activation_names), start=1):
            for j, (block_sums, block_activations) in enumerate(zip(sum_names, activation_names)):
                layout.append((f"stage{k}.{j}.bn1", pending))
                layout.append((f"stage{k}.{j}", block_sums))
                pending = flatten_pairs(block_activations)
        return [*layout, ("final_bn", pending), (None, ("pooled",)), ("classifier", ("logits",))]
