"""VGG with three FC layers, ``vgg11-fc``, ``vgg16-fc`` and ``vgg19-fc``: the VGG-11,
VGG-16 and VGG-19 of Cheng et al. 2020 (section 4.1, FC1-FC3 measured and distilled),
sized for 28x28 and 32x32 images (Simonyan & Zisserman 2015, configurations A, D, E).

The conv trunk is that of :mod:`kdnb.models.vgg` (3x3 conv + BN + ReLU, convolutions
without bias, 2x2 max-pools after blocks 1-3 and after block 4 on inputs of 64 px and
more), then global average pooling to a 512-vector, and the FC1-FC2-FC3 head of
:mod:`kdnb.models.fc_head` in place of the 4096-wide ImageNet head:
``512 -> fc_width -> fc_width -> num_classes`` with ``fc_width`` 512 by default, the
three-FC CIFAR VGG of the common PyTorch CIFAR code. ``dropout`` (default 0.5, VGG's)
follows the ReLUs of FC1 and FC2. ``width`` (default 1.0) multiplies every conv width (rounded, at least 1;
FC1's input is then the last conv's width): a narrower trunk for CPU budgets.

* ``vgg11-fc``: blocks [[64], [128], [256, 256], [512, 512], [512, 512]]
* ``vgg16-fc``: blocks [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3]
* ``vgg19-fc``: blocks [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4]

Features: ``blockK.pre`` and ``blockK`` for K = 1..5 (as in :mod:`kdnb.models.vgg`;
``block5.pre`` is the last conv before its ReLU, the released code's "conv" layer),
then ``fc1.pre``, ``fc1``, ``fc2.pre``, ``fc2``, ``pooled``, ``fc3``, ``logits``.
Modules: ``blocks.{K-1}.{i}``, ``fc1``, ``fc2``, ``classifier``;
``prefixes_up_to("fc1")`` is ``("blocks", "fc1")``.

Parameters with 10 classes, fc_width 512 and 3 input channels: vgg11-fc 9,753,674;
vgg16-fc 15,249,354; vgg19-fc 20,560,330 (1 input channel: 1,152 fewer).
"""

from __future__ import annotations

from torch import Tensor

from kdnb.models.alexnet_small import scaled_width
from kdnb.models.base import Features, Layout, conv_bn_groups, global_avg_pool, init_weights
from kdnb.models.fc_head import FCHeadModel, check_head_options
from kdnb.models.vgg import blocks_layout, run_blocks

VGG_FC_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11-fc": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16-fc": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19-fc": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGGFC(FCHeadModel):
    """VGG-BN trunk with an FC1-FC3 head; ``variant`` is a key of ``VGG_FC_CONFIGS``."""

    def __init__(
        self,
        variant: str,
        num_classes: int = 10,
        in_channels: int = 3,
        fc_width: int = 512,
        dropout: float = 0.5,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if variant not in VGG_FC_CONFIGS:
            raise ValueError(f"unknown VGG-FC variant {variant!r}; choose one of: {', '.join(VGG_FC_CONFIGS)}")
        check_head_options(fc_width, dropout)
        self.name = variant
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "fc_width": fc_width, "dropout": dropout,
                       "width": width}
        config = tuple(tuple(scaled_width(c, width) for c in group) for group in VGG_FC_CONFIGS[variant])
        self.blocks, width_out = conv_bn_groups(in_channels, config)
        self._build_fc_head(width_out, fc_width, num_classes, dropout)
        self._set_feature_names()
        init_weights(self)

    def _layout(self) -> Layout:
        return [*blocks_layout(self.blocks), *self._fc_head_layout()]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        x = run_blocks(self.blocks, x, features)
        return self._run_fc_head(global_avg_pool(x), features)
