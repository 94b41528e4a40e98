"""``alexnet_small``: AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet
Classification with Deep Convolutional Neural Networks") scaled to 28x28 and 32x32
images, with the three FC layers that Cheng et al. 2020 (section 4.1) measure.

AlexNet's shape is kept: five convolutions (5x5, 5x5, 3x3, 3x3, 3x3), overlapping
3x3/stride-2 max-pooling after conv1, conv2 and conv5, and three FC layers holding most
of the parameters. Scaled for small images:

* conv1 is 5x5 with stride 1 (not 11x11 with stride 4): 32 px images are 7x smaller
  than 224 px ones;
* widths are half of torchvision's AlexNet: 32, 96, 192, 192, 128 (torchvision: 64,
  192, 384, 384, 256);
* BatchNorm after every conv in place of local response normalisation (as the
  ``vgg*`` nets here are VGG-BN), so the net trains at the book's learning rates;
  convolutions have no bias since BN follows each one;
* the pools take 32 px to 16, 8, 4 and 28 px to 14, 7, 4; an adaptive average pool to
  4x4 (torchvision's AlexNet pools adaptively to 6x6 the same way) fixes the FC1 input
  at 128 * 4 * 4 = 2048 for any image size;
* FC1 and FC2 have ``fc_width`` units (default 512; AlexNet: 4096); FC3 gives the logits.

``dropout`` (default 0.5, AlexNet's) follows the ReLUs of FC1 and FC2; see
:mod:`kdnb.models.fc_head` for the head and its features. ``width`` (default 1.0) multiplies the five conv
widths (rounded, at least 1): a narrower trunk for CPU budgets; FC1's input is then ``conv5 width * 16``.

Features: ``convJ.pre`` (BN output of conv J, before its ReLU) and ``convJ``
(= relu(convJ.pre), before any pooling) for J = 1..5, then the head's ``fc1.pre``,
``fc1``, ``fc2.pre``, ``fc2``, ``pooled``, ``fc3``, ``logits``. Conv J is the module
``convJ``: ``prefixes_up_to("fc1")`` is ``("conv1", ..., "conv5", "fc1")``.

Parameters with 10 classes and fc_width 512: 2,116,202 for 3 input channels,
2,114,602 for 1.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdnb.models.base import Features, Layout, init_weights
from kdnb.models.fc_head import FCHeadModel, check_head_options

# (output width, kernel size) of conv1..conv5, and the convs followed by a max-pool.
ALEXNET_SMALL_CONVS = ((32, 5), (96, 5), (192, 3), (192, 3), (128, 3))
POOL_AFTER = (1, 2, 5)
CONV_NAMES = tuple(f"conv{j}" for j in range(1, len(ALEXNET_SMALL_CONVS) + 1))
FC_INPUT_SIZE = 4  # the adaptive pool's output side


def scaled_width(channels: int, width: float) -> int:
    """``channels × width`` rounded to the nearest integer, at least 1: the conv widths of a trunk narrowed (or
    widened) by the ``width`` option of the FC-headed nets. ValueError for a non-positive ``width``."""
    if not width > 0:
        raise ValueError(f"width must be a positive multiplier of the conv widths; got {width}")
    return max(1, int(round(channels * width)))


class AlexNetSmall(FCHeadModel):
    """AlexNet-style net sized for 28x28 and 32x32 images (others work too); see the module docstring."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, fc_width: int = 512, dropout: float = 0.5,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        check_head_options(fc_width, dropout)
        self.name = "alexnet_small"
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "fc_width": fc_width, "dropout": dropout,
                       "width": width}
        width_in = in_channels
        for name, (channels, kernel) in zip(CONV_NAMES, ALEXNET_SMALL_CONVS):
            width_out = scaled_width(channels, width)
            conv = nn.Conv2d(width_in, width_out, kernel, padding=kernel // 2, bias=False)
            self.add_module(name, nn.Sequential(conv, nn.BatchNorm2d(width_out)))
            width_in = width_out
        self._build_fc_head(width_in * FC_INPUT_SIZE**2, fc_width, num_classes, dropout)
        self._set_feature_names()
        init_weights(self)

    def _layout(self) -> Layout:
        return [*((name, (f"{name}.pre", name)) for name in CONV_NAMES), *self._fc_head_layout()]

    def _run(self, x: Tensor, features: Features | None) -> Tensor:
        for j, name in enumerate(CONV_NAMES, start=1):
            pre = self.get_submodule(name)(x)
            x = F.relu(pre)
            if features is not None:
                features[f"{name}.pre"] = pre
                features[name] = x
            if j in POOL_AFTER:
                x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x = F.adaptive_avg_pool2d(x, FC_INPUT_SIZE).flatten(1)
        return self._run_fc_head(x, features)
