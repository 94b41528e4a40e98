"""The FC-headed nets of Cheng et al. 2020, section 4.1 (alexnet_small, vggD-fc, resnet{6n+2}-fc):
sizes from closed forms, feature shapes on Fashion-MNIST and CIFAR shapes, the FC1-FC3 head layout."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import models

torch.set_num_threads(2)

FC_NETS = ["alexnet_small", "vgg11-fc", "resnet20-fc"]


@functools.cache
def net(name: str, in_channels: int) -> nn.Module:
    """One default instance per (name, channels), shared by the tests; each sets the mode it needs."""
    return models.create(name, in_channels=in_channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- closed-form sizes
# Written from the architectures as documented (AlexNet halved, VGG configurations A/D/E, CIFAR ResNet), not
# from the model code: conv weights without bias + BN affine, Linear weights + bias.


def conv_bn(c_in: int, c_out: int, kernel: int = 3) -> int:
    return c_in * c_out * kernel * kernel + 2 * c_out


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def fc_head(n_in: int, width: int, classes: int) -> int:
    return linear(n_in, width) + linear(width, width) + linear(width, classes)


def expected_alexnet_small(in_channels: int, classes: int = 10, width: int = 512) -> int:
    # conv1 5x5 -> 32, conv2 5x5 -> 96, conv3..5 3x3 -> 192, 192, 128; FC1 sees 128 x 4 x 4.
    convs = conv_bn(in_channels, 32, 5) + conv_bn(32, 96, 5) + conv_bn(96, 192) + conv_bn(192, 192)
    convs += conv_bn(192, 128)
    return convs + fc_head(128 * 16, width, classes)


VGG_CONV_WIDTHS = {  # Simonyan & Zisserman, Table 1, without the pools
    "vgg11-fc": [64, 128, 256, 256, 512, 512, 512, 512],
    "vgg16-fc": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    "vgg19-fc": [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512],
}


def expected_vgg_fc(name: str, in_channels: int, classes: int = 10, width: int = 512) -> int:
    widths = [in_channels, *VGG_CONV_WIDTHS[name]]
    return sum(conv_bn(a, b) for a, b in zip(widths, widths[1:])) + fc_head(512, width, classes)


def expected_resnet_fc(depth: int, in_channels: int, classes: int = 10, width: int = 256) -> int:
    n = (depth - 2) // 6
    total = conv_bn(in_channels, 16)
    width_in = 16
    for stage_width in (16, 32, 64):
        for block in range(n):
            block_in = width_in if block == 0 else stage_width
            total += conv_bn(block_in, stage_width) + conv_bn(stage_width, stage_width)
            if block_in != stage_width:
                total += conv_bn(block_in, stage_width, 1)  # option-B projection
        width_in = stage_width
    return total + 2 * conv_bn(64, 64) + fc_head(64, width, classes)


@pytest.mark.parametrize(
    ("name", "rgb", "gray"),
    [
        ("alexnet_small", 2_116_202, 2_114_602),
        ("vgg11-fc", 9_753_674, 9_752_522),
        ("vgg16-fc", 15_249_354, 15_248_202),
        ("vgg19-fc", 20_560_330, 20_559_178),
        ("resnet20-fc", 430_810, 430_522),
        ("resnet56-fc", 1_014_106, 1_013_818),
    ],
)
def test_fc_net_parameter_counts(name: str, rgb: int, gray: int) -> None:
    if name == "alexnet_small":
        expected = expected_alexnet_small
    elif name.startswith("vgg"):
        expected = lambda c: expected_vgg_fc(name, c)  # noqa: E731
    else:
        expected = lambda c: expected_resnet_fc(int(name.removeprefix("resnet").removesuffix("-fc")), c)  # noqa: E731
    assert expected(3) == rgb and expected(1) == gray
    # Building the two largest nets twice would only retest the first conv: their gray count is checked above.
    for in_channels in (1, 3) if name in FC_NETS else (3,):
        model = net(name, in_channels) if name in FC_NETS else models.create(name, in_channels=in_channels)
        assert count_parameters(model) == expected(in_channels)
    # The depth in a VGG name counts its weight layers: convs + the three FC layers.
    if name.startswith("vgg"):
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == int(name.removeprefix("vgg").removesuffix("-fc"))


def test_fc_width_and_classes_change_the_head_only() -> None:
    for name in FC_NETS:
        base = net(name, 1)
        small = models.create(name, in_channels=1, num_classes=5, fc_width=32)
        assert small.fc1.out_features == small.fc2.in_features == small.fc2.out_features == 32
        assert small.feature_dim == 32 and small.num_classes == 5
        trunk = {k: v.shape for k, v in base.state_dict().items() if not k.startswith(("fc1.", "fc2.", "classifier."))}
        assert {k: v.shape for k, v in small.state_dict().items() if k in trunk} == trunk
    # resnet-fc: the closed form holds for other depths and widths.
    model = models.create("resnet14-fc", num_classes=100, fc_width=128)
    assert count_parameters(model) == expected_resnet_fc(14, 3, classes=100, width=128)


# ---------------------------------------------------------------- shapes


EXPECTED_SHAPES = {  # (feature, shape for 1x28x28, shape for 3x32x32), batch dimension left out
    "alexnet_small": [
        ("conv1", (32, 28, 28), (32, 32, 32)),
        ("conv2.pre", (96, 14, 14), (96, 16, 16)),
        ("conv5", (128, 7, 7), (128, 8, 8)),
        ("fc1.pre", (512,), (512,)),
        ("fc2", (512,), (512,)),
        ("fc3", (10,), (10,)),
    ],
    "vgg11-fc": [
        ("block1", (64, 28, 28), (64, 32, 32)),
        ("block3.pre", (256, 7, 7), (256, 8, 8)),
        ("block5.pre", (512, 3, 3), (512, 4, 4)),
        ("fc1", (512,), (512,)),
        ("fc2.pre", (512,), (512,)),
        ("fc3", (10,), (10,)),
    ],
    "resnet20-fc": [
        ("stage1.block1", (16, 28, 28), (16, 32, 32)),
        ("stage3", (64, 7, 7), (64, 8, 8)),
        ("head_conv1.pre", (64, 7, 7), (64, 8, 8)),
        ("head_conv2", (64, 7, 7), (64, 8, 8)),
        ("fc1.pre", (256,), (256,)),
        ("fc2", (256,), (256,)),
        ("fc3", (10,), (10,)),
    ],
}


@pytest.mark.parametrize("name", FC_NETS)
def test_fc_net_feature_shapes_on_fashion_mnist_and_cifar(name: str) -> None:
    for in_channels, size, column in ((1, 28, 1), (3, 32, 2)):
        model = net(name, in_channels).eval()
        with torch.no_grad():
            logits, features = model.forward_features(torch.randn(2, in_channels, size, size))
        for row in EXPECTED_SHAPES[name]:
            assert features[row[0]].shape == (2, *row[column]), (name, size, row[0])
        assert features["fc3"] is logits and features["logits"] is logits
        head = [n for n in model.feature_names if n.startswith("fc") or n in ("pooled", "logits")]
        assert head == ["fc1.pre", "fc1", "fc2.pre", "fc2", "pooled", "fc3", "logits"]


# ---------------------------------------------------------------- head layout


def fc1_input(name: str, model: nn.Module, features: dict) -> torch.Tensor:
    """What the documentation says FC1 consumes, rebuilt from the recorded features."""
    if name == "alexnet_small":  # overlapping max-pool after conv5, adaptive average pool to 4x4
        pooled = F.max_pool2d(features["conv5"], kernel_size=3, stride=2, padding=1)
        return F.adaptive_avg_pool2d(pooled, 4).flatten(1)
    last = features["block5"] if name.startswith("vgg") else features["head_conv2"]
    return last.mean(dim=(2, 3))


@pytest.mark.parametrize("name", FC_NETS)
def test_fc_head_layout(name: str) -> None:
    model = net(name, 1).eval()
    with torch.no_grad():
        logits, f = model.forward_features(torch.randn(3, 1, 28, 28))
        torch.testing.assert_close(model.fc1(fc1_input(name, model, f)), f["fc1.pre"])
        assert torch.equal(model.fc2(f["fc1"]), f["fc2.pre"])  # eval: dropout is the identity
        assert torch.equal(f["pooled"], f["fc2"])
        # FC3 is the classifier and its output, the logits, has no ReLU after it.
        assert torch.equal(model.classifier(f["fc2"]), logits)
        assert (logits < 0).any()
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == model.fc2.out_features
    if name == "resnet20-fc":  # the head convs are conv-BN pairs on stage 3's output
        with torch.no_grad():
            assert torch.equal(model.head_conv1(f["stage3"]), f["head_conv1.pre"])
            assert torch.equal(model.head_conv2(f["head_conv1"]), f["head_conv2.pre"])


@pytest.mark.parametrize("name", FC_NETS)
def test_dropout_follows_fc1_and_fc2(name: str) -> None:
    default = 0.0 if name.startswith("resnet") else 0.5  # ResNets have no dropout; AlexNet and VGG use 0.5
    assert net(name, 1).config["dropout"] == default

    torch.manual_seed(0)
    model = models.create(name, in_channels=1, fc_width=256, dropout=0.5).train()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        logits, f = model.forward_features(x)
    fc2, pooled = f["fc2"], f["pooled"]
    kept = pooled != 0
    # Inverted dropout on fc2: dropped units are zero, kept ones are scaled by 1 / (1 - p).
    torch.testing.assert_close(pooled[kept], 2 * fc2[kept])
    assert ((fc2 > 0) & ~kept).any(), "some active units are dropped"
    assert torch.equal(F.relu(f["fc1.pre"]), f["fc1"])  # fc1 is recorded before its dropout
    # fc2.pre is FC2 of the dropped-out fc1: not FC2 of fc1 itself.
    assert not torch.allclose(model.fc2(f["fc1"]), f["fc2.pre"])
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(pooled), logits)

    no_dropout = models.create(name, in_channels=1, fc_width=256, dropout=0.0).train()
    _, f = no_dropout.forward_features(x)
    assert torch.equal(f["pooled"], f["fc2"])


@pytest.mark.parametrize(("option", "value"), [("dropout", 1.0), ("dropout", -0.1), ("fc_width", 0)])
def test_bad_head_options_are_value_errors(option: str, value: float) -> None:
    for name in FC_NETS:
        with pytest.raises(ValueError, match=option):
            models.create(name, **{option: value})


def test_alexnet_small_accepts_other_image_sizes() -> None:
    # The adaptive pool fixes FC1's input: 28, 32 and 64 px all reach FC1 as 128 x 4 x 4.
    model = net("alexnet_small", 1).eval()
    with torch.no_grad():
        for size in (24, 64):
            assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


# ---------------------------------------------------------------- width (conv trunk multiplier)
# Closed forms at width 0.5, written from the documented widths halved (AlexNet 16/48/96/96/64, VGG-11
# 32/64/128/128/256/256/256/256, ResNet 8/16/32 and head convs 32); the FC head keeps fc_width.
HALF_WIDTH_PARAMETERS = {
    "alexnet_small": (conv_bn(1, 16, 5) + conv_bn(16, 48, 5) + conv_bn(48, 96) + conv_bn(96, 96) + conv_bn(96, 64)
                      + fc_head(64 * 16, 512, 10)),
    "vgg11-fc": (sum(conv_bn(a, b) for a, b in zip([1, 32, 64, 128, 128, 256, 256, 256],
                                                    [32, 64, 128, 128, 256, 256, 256, 256]))
                 + fc_head(256, 512, 10)),
    "resnet20-fc": (conv_bn(1, 8) + 3 * 2 * conv_bn(8, 8)  # stem, stage 1 (identity shortcuts)
                    + conv_bn(8, 16) + conv_bn(16, 16) + conv_bn(8, 16, 1) + 2 * 2 * conv_bn(16, 16)  # stage 2
                    + conv_bn(16, 32) + conv_bn(32, 32) + conv_bn(16, 32, 1) + 2 * 2 * conv_bn(32, 32)  # stage 3
                    + 2 * conv_bn(32, 32) + fc_head(32, 256, 10)),
}


@pytest.mark.parametrize("name", FC_NETS)
def test_width_one_is_the_default_network(name: str) -> None:
    """width=1.0 builds the very same network: parameters, buffers and outputs bit-identical at one seed (the
    default's size is the closed form above, so the default itself did not change)."""
    torch.manual_seed(3)
    default = models.create(name, in_channels=1).eval()
    torch.manual_seed(3)
    explicit = models.create(name, in_channels=1, width=1.0).eval()
    assert default.config["width"] == 1.0
    for (k, a), (k2, b) in zip(default.state_dict().items(), explicit.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(default(x), explicit(x))


@pytest.mark.parametrize("name", FC_NETS)
def test_half_width_narrows_the_trunk_only(name: str) -> None:
    model = models.create(name, in_channels=1, width=0.5).eval()
    assert count_parameters(model) == HALF_WIDTH_PARAMETERS[name]
    assert model.fc1.out_features == model.fc2.out_features == net(name, 1).fc1.out_features
    with torch.no_grad():
        logits, features = model.forward_features(torch.randn(2, 1, 48, 48))
    assert logits.shape == (2, 10) and features["fc1.pre"].shape == (2, model.fc1.out_features)
    assert model.prefixes_up_to("fc1") == net(name, 1).prefixes_up_to("fc1")


@pytest.mark.parametrize("width", [0.0, -1.0])
def test_width_must_be_positive(width: float) -> None:
    for name in FC_NETS:
        with pytest.raises(ValueError, match="width"):
            models.create(name, in_channels=1, width=width)
