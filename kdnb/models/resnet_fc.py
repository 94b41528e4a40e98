"""CIFAR ResNets with a two-conv, three-FC head, ``resnet{6n+2}-fc``: the ResNets of
Cheng et al. 2020 (section 4.1), where "the only FC layer" is replaced "into a block
with two convolutional and three FC layers", so concepts can be measured at each FC
layer as in AlexNet and VGG.

Structure: the stem and three stages of :class:`~kdnb.models.resnet_cifar.CifarResNet`
(same widths, blocks, option-B shortcuts), then

* ``head_conv1``, ``head_conv2``: 3x3 conv (64 -> 64, stride 1, no bias) + BN + ReLU
  each, on the stage-3 map (8x8 on CIFAR, 7x7 on Fashion-MNIST). The released code
  likewise appends two conv + BN blocks after the last stage;
* global average pooling to a 64-vector;
* the head of :mod:`kdnb.models.fc_head`: ``64 -> fc_width -> fc_width -> num_classes``,
  ``fc_width`` 256 by default. FC3 gives the logits (no ReLU, see that module).
  ``dropout`` after the ReLUs of FC1 and FC2 defaults to 0: ResNets use none.

Features: those of :class:`~kdnb.models.resnet_cifar.CifarResNet` up to ``stage3``
(``stem``, ``stageK.blockJ.pre``/``stageK.blockJ``, ``stageK.pre``/``stageK``), then
``head_conv1.pre``, ``head_conv1``, ``head_conv2.pre``, ``head_conv2``, ``fc1.pre``,
``fc1``, ``fc2.pre``, ``fc2``, ``pooled``, ``fc3``, ``logits``. Modules: ``stem``,
``stage1``-``stage3``, ``head_conv1``, ``head_conv2``, ``fc1``, ``fc2``, ``classifier``.

``width`` (default 1.0) multiplies the conv widths of the stem, the stages and the head convs (16/32/64 and 64,
rounded, at least 1; FC1's input is then the last width): a narrower trunk for CPU budgets. At 1.0 the net is
built exactly as :class:`~kdnb.models.resnet_cifar.CifarResNet`'s body.

Parameters with 10 classes, fc_width 256 and 3 input channels: resnet20-fc 430,810
(resnet20: 272,474); resnet56-fc 1,014,106 (1 input channel: 288 fewer).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.alexnet_small import scaled_width
from kdnb.models.base import Features, Layout, conv3x3, global_avg_pool, init_weights, record
from kdnb.models.fc_head import FCHeadModel, check_head_options
from kdnb.models.resnet_cifar import STAGE_STRIDES, STAGE_WIDTHS, BasicBlock, ResNetBody

HEAD_CONVS = ("head_conv1", "head_conv2")


class ResNetFC(ResNetBody, FCHeadModel):
    """ResNet-(6n+2) body, two conv-BN-ReLU layers and an FC1-FC3 head; see the module docstring."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        fc_width: int = 256,
        dropout: float = 0.0,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        check_head_options(fc_width, dropout)
        self.name = f"resnet{depth}-fc"
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "fc_width": fc_width, "dropout": dropout,
                       "width": width}
        widths = tuple(scaled_width(c, width) for c in STAGE_WIDTHS)
        self._build_body(depth, in_channels)
        if widths != STAGE_WIDTHS:
            self._narrow_body(in_channels, widths)
        last = widths[-1]
        self.head_conv1 = nn.Sequential(conv3x3(last, last), nn.BatchNorm2d(last))
        self.head_conv2 = nn.Sequential(conv3x3(last, last), nn.BatchNorm2d(last))
        self._build_fc_head(last, fc_width, num_classes, dropout)
        self._set_feature_names()
        init_weights(self)

    def _narrow_body(self, in_channels: int, widths: tuple[int, ...]) -> None:
        """Replace the stem and stages that ``_build_body`` made at the standard widths by ones of ``widths``
        (same blocks, strides and shortcut rule; names and feature layout unchanged). ``init_weights`` runs after."""
        self.stem = nn.Sequential(conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]))
        width_in = widths[0]
        for k, (stage, width, stride) in enumerate(zip((self.stage1, self.stage2, self.stage3), widths, STAGE_STRIDES),
                                                   start=1):
            blocks = [BasicBlock(width_in if j == 0 else width, width, stride if j == 0 else 1)
                      for j in range(len(stage))]
            setattr(self, f"stage{k}", nn.Sequential(*blocks))
            width_in = width

    def _layout(self) -> Layout:
        head_convs: Layout = [(name, (f"{name}.pre", name)) for name in HEAD_CONVS]
        return [*self._body_layout(), *head_convs, *self._fc_head_layout()]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = self._run_body(x, features)
        for name, layer in zip(HEAD_CONVS, (self.head_conv1, self.head_conv2)):
            pre = layer(x)
            x = F.relu(pre)
            record(features, f"{name}.pre", pre)
            record(features, name, x)
        return self._run_fc_head(global_avg_pool(x), features)
