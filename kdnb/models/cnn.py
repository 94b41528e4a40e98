"""Plain (non-residual) convolutional networks: simple students for the early chapters.

``cnnD`` has ``D`` weight layers: ``D - 1`` conv3x3 + BN + ReLU layers arranged in
three groups of widths 32 / 64 / 128, a 2x2 max-pool between groups
(32 -> 16 -> 8 px on CIFAR, 28 -> 14 -> 7 on Fashion-MNIST), global average pooling
and one linear layer:

* ``cnn6``:  groups [32] [64, 64] [128, 128]            (5 convs)
* ``cnn8``:  groups [32, 32] [64, 64] [128, 128, 128]   (7 convs)
* ``cnn10``: groups [32, 32, 32] [64, 64, 64] [128, 128, 128] (9 convs)

Each deeper variant adds layers to the smaller one, so depth and parameter count
both grow: cnn6 < cnn8 < cnn10.

Features: ``convJ.pre`` (BN output of the J-th conv, before ReLU) and ``convJ``
(= relu(convJ.pre), before any pooling) for J = 1..D-1, numbered through the
whole network; then ``pooled`` (B, 128) and ``logits``. Conv J is the module
``groups.{g}.{i}`` (layer i of group g), so for cnn6 ``prefixes_up_to("conv2")`` is
``("groups.0", "groups.1.0")``.

Dropout (``dropout``, default 0): after each group's output (Gu et al. 2020, §5.1: "the last layer of each
block-layer"), before the next max-pool (or the global pooling). The features record the conv outputs before
dropout; the dropout belongs to the group's last layer, so it is off in eval mode and when that layer is
frozen. With 0 the network is exactly the one built without the option.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import FeatureModel, Features, Layout, conv_bn_groups, global_avg_pool, init_weights, record

CNN_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "cnn6": ((32,), (64, 64), (128, 128)),
    "cnn8": ((32, 32), (64, 64), (128, 128, 128)),
    "cnn10": ((32, 32, 32), (64, 64, 64), (128, 128, 128)),
}


class PlainCNN(FeatureModel):
    """Conv-BN-ReLU stack with pooling between groups; ``variant`` is a key of ``CNN_CONFIGS``."""

    def __init__(self, variant: str, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if variant not in CNN_CONFIGS:
            raise ValueError(f"unknown CNN variant {variant!r}; choose one of: {', '.join(CNN_CONFIGS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout (a drop probability) must be in [0, 1); got {dropout}")
        self.name = variant
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "dropout": dropout}
        self.dropout = float(dropout)

        self.groups, width_out = conv_bn_groups(in_channels, CNN_CONFIGS[variant])
        self.classifier = nn.Linear(width_out, num_classes)

        self._set_feature_names()
        init_weights(self)

    def _layout(self) -> Layout:
        modules = [f"groups.{g}.{i}" for g, group in enumerate(self.groups) for i in range(len(group))]
        convs: Layout = [(module, (f"conv{j}.pre", f"conv{j}")) for j, module in enumerate(modules, start=1)]
        return [*convs, (None, ("pooled",)), ("classifier", ("logits",))]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        conv_index = 0
        for group_index, group in enumerate(self.groups):
            if group_index > 0:
                x = F.max_pool2d(x, 2)
            for layer in group:
                conv_index += 1
                pre = layer(x)
                x = F.relu(pre)
                record(features, f"conv{conv_index}.pre", pre)
                record(features, f"conv{conv_index}", x)
            if self.dropout > 0:  # after the group's features are recorded (see the module docstring)
                x = F.dropout(x, p=self.dropout, training=group[-1].training)
        pooled = global_avg_pool(x)
        record(features, "pooled", pooled)
        logits = self.classifier(pooled)
        record(features, "logits", logits)
        return logits
