"""Tests for kdnb.models: architecture sizes, shapes, named features, errors, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import models
from kdnb.models import FeatureModel

torch.set_num_threads(2)

# wrn-28-10 (36M parameters, ~5 GFLOPs per image) is only counted, never run; the larger FC-headed nets
# (vgg16-fc, vgg19-fc, resnet56-fc) are counted in tests/test_models_fc.py and run here through their
# smaller siblings, which share their code.
COUNTED_ONLY = {"wrn-28-10", "vgg16-fc", "vgg19-fc", "resnet56-fc"}
RUNNABLE = [name for name in models.available() if name not in COUNTED_ONLY]


def build(name: str, in_channels: int = 3, image_size: int = 32, **kwargs) -> FeatureModel:
    if name == "mlp":
        kwargs.setdefault("image_size", image_size)
    return models.create(name, num_classes=10, in_channels=in_channels, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- parameter counts
# Independent closed-form counts (conv weights + BN affine + FC), so a wrong width,
# a missing block or a wrong shortcut type changes the expected number.


def bn(channels: int) -> int:
    return 2 * channels


def expected_resnet_params(depth: int, num_classes: int = 10, in_channels: int = 3) -> int:
    n = (depth - 2) // 6
    total = in_channels * 16 * 9 + bn(16)
    width_in = 16
    for width in (16, 32, 64):
        for block in range(n):
            block_in = width_in if block == 0 else width
            total += block_in * width * 9 + bn(width) + width * width * 9 + bn(width)
            if block_in != width:  # option-B projection: 1x1 conv + BN
                total += block_in * width + bn(width)
        width_in = width
    return total + 64 * num_classes + num_classes


def expected_wrn_params(depth: int, k: int, num_classes: int = 10, in_channels: int = 3) -> int:
    n = (depth - 4) // 6
    total = in_channels * 16 * 9
    width_in = 16
    for width in (16 * k, 32 * k, 64 * k):
        for block in range(n):
            block_in = width_in if block == 0 else width
            total += bn(block_in) + block_in * width * 9 + bn(width) + width * width * 9
            if block_in != width:  # 1x1 conv shortcut, no BN
                total += block_in * width
        width_in = width
    return total + bn(64 * k) + 64 * k * num_classes + num_classes


@pytest.mark.parametrize(
    ("name", "exact", "published"),
    [
        ("resnet20", 272_474, 0.27e6),
        ("resnet56", 855_770, 0.85e6),
        ("resnet110", 1_730_714, 1.73e6),
    ],
)
def test_resnet_parameter_counts(name: str, exact: int, published: float) -> None:
    depth = int(name.removeprefix("resnet"))
    model = models.create(name)
    assert count_parameters(model) == exact == expected_resnet_params(depth)
    assert abs(exact - published) / published < 0.03
    # Option B: exactly two projection shortcuts (16->32 and 32->64).
    one_by_one = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(one_by_one) == 2


def test_generic_resnet_depths_parse() -> None:
    for depth in (8, 14, 26, 32, 44, 62):
        model = models.create(f"resnet{depth}")
        assert count_parameters(model) == expected_resnet_params(depth)
        assert len(model.stage1) == len(model.stage2) == len(model.stage3) == (depth - 2) // 6


@pytest.mark.parametrize(
    ("name", "exact", "published"),
    [
        ("wrn-16-1", 175_066, 0.175e6),
        ("wrn-16-2", 691_674, 0.69e6),
        ("wrn-40-1", 563_930, 0.56e6),
        ("wrn-40-2", 2_243_546, 2.2e6),
        ("wrn-28-10", 36_479_194, 36.5e6),
    ],
)
def test_wrn_parameter_counts(name: str, exact: int, published: float) -> None:
    _, depth, k = name.split("-")
    model = models.create(name)
    assert count_parameters(model) == exact == expected_wrn_params(int(depth), int(k))
    assert abs(exact - published) / published < 0.03


def test_other_parameter_counts_are_ordered() -> None:
    cnn = [count_parameters(models.create(n)) for n in ("cnn6", "cnn8", "cnn10")]
    assert cnn[0] < cnn[1] < cnn[2]
    assert count_parameters(models.create("vgg8")) < count_parameters(models.create("vgg13"))
    # 784-1024-1024-10 for one 28x28 channel.
    mlp = models.create("mlp", in_channels=1)
    assert count_parameters(mlp) == 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
    # VGG13-BN without conv biases: 10 convs + 10 BNs + Linear(512, 100).
    widths = [3, 64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    vgg13 = sum(a * b * 9 + 2 * b for a, b in zip(widths, widths[1:])) + 512 * 100 + 100
    assert count_parameters(models.create("vgg13", num_classes=100)) == vgg13


# ---------------------------------------------------------------- shapes and features


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32)])
def test_output_shape(name: str, in_channels: int, size: int) -> None:
    model = build(name, in_channels=in_channels, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, size, size))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", RUNNABLE)
def test_forward_features_contract(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        logits, features = model.forward_features(x)

    assert torch.equal(plain, logits)
    assert tuple(features) == model.feature_names
    assert torch.equal(features["logits"], logits)
    assert isinstance(model.classifier, nn.Linear)
    assert features["pooled"].shape == (3, model.feature_dim)
    torch.testing.assert_close(model.classifier(features["pooled"]), logits, rtol=0, atol=0)

    pre_names = [n for n in model.feature_names if n.endswith(".pre")]
    assert pre_names, "every family exposes pre-ReLU features"
    for pre_name in pre_names:
        pre = features[pre_name]
        post = features[pre_name.removesuffix(".pre")]
        assert torch.equal(F.relu(pre), post), pre_name
        # A pre-ReLU tensor clobbered by an in-place ReLU would have no negatives.
        assert (pre < 0).any(), pre_name


def test_resnet_feature_shapes_and_pre_relu_sum() -> None:
    model = build("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, features = model.forward_features(x)
        last_block = model.stage2[-1]
        # stage2.pre is the last block's residual sum, computed from that block's input.
        stage2_input = model.stage2[:-1](features["stage1"])
        assert torch.equal(features["stage2.pre"], last_block.residual_sum(stage2_input))
    assert features["stem"].shape == (2, 16, 32, 32)
    assert features["stage1"].shape == (2, 16, 32, 32)
    assert features["stage2"].shape == (2, 32, 16, 16)
    assert features["stage3"].shape == (2, 64, 8, 8)
    assert torch.allclose(features["pooled"], features["stage3"].mean(dim=(2, 3)), atol=1e-6)

    small = build("resnet20", in_channels=1).eval()
    with torch.no_grad():
        _, features = small.forward_features(torch.randn(2, 1, 28, 28))
    assert [features[f"stage{k}"].shape[-1] for k in (1, 2, 3)] == [28, 14, 7]


def test_wrn_preactivation_features() -> None:
    model = build("wrn-16-2").eval()
    with torch.no_grad():
        _, features = model.forward_features(torch.randn(2, 3, 32, 32))
        # .pre is the BN that the network applies next to the raw stage sum.
        assert torch.equal(model.stage2[0].bn1(features["stage1.sum"]), features["stage1.pre"])
        assert torch.equal(model.stage3[0].bn1(features["stage2.sum"]), features["stage2.pre"])
        assert torch.equal(model.final_bn(features["stage3.sum"]), features["stage3.pre"])
    assert features["stage1"].shape == (2, 32, 32, 32)
    assert features["stage2"].shape == (2, 64, 16, 16)
    assert features["stage3"].shape == (2, 128, 8, 8)
    assert model.feature_dim == 128
    # Width 16 -> 16k needs a projection in stage 1 only when k > 1.
    assert model.stage1[0].shortcut is not None
    assert build("wrn-16-1").stage1[0].shortcut is None


def test_wrn_block_is_preactivation() -> None:
    torch.manual_seed(0)
    model = build("wrn-16-2").eval()
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        for block in (model.stage2[0], model.stage2[1]):  # projection block, identity block
            block_in = x if block.conv1.in_channels == 32 else torch.randn(2, 64, 8, 8)
            activated = F.relu(block.bn1(block_in))
            residual = block.conv2(F.relu(block.bn2(block.conv1(activated))))
            # Projection shortcuts act on the activated input, identity ones on the raw input.
            shortcut = block_in if block.shortcut is None else block.shortcut(activated)
            assert torch.allclose(block(block_in), residual + shortcut, atol=1e-6)


def test_vgg_pooling_follows_cifar_reference() -> None:
    model = build("vgg8").eval()
    widths = {}
    for size in (28, 32, 64):
        with torch.no_grad():
            _, features = model.forward_features(torch.randn(1, 3, size, size))
        widths[size] = [features[f"block{k}"].shape[-1] for k in range(1, 6)]
    assert widths[32] == [32, 16, 8, 4, 4]  # no pool after block 4 on small inputs
    assert widths[28] == [28, 14, 7, 3, 3]
    assert widths[64] == [64, 32, 16, 8, 4]


def test_cnn_and_mlp_feature_names() -> None:
    assert build("cnn6").feature_names[-4:] == ("conv5.pre", "conv5", "pooled", "logits")
    assert sum(n.endswith(".pre") for n in build("cnn8").feature_names) == 7
    assert sum(n.endswith(".pre") for n in build("cnn10").feature_names) == 9
    assert build("mlp").feature_names == ("fc1.pre", "fc1", "fc2.pre", "fc2", "pooled", "logits")
    assert build("mlp").feature_dim == 1024


def test_mlp_rejects_wrong_input_size() -> None:
    model = models.create("mlp", in_channels=1)  # expects 28x28
    with pytest.raises(ValueError, match="784"):
        model(torch.randn(2, 1, 32, 32))


# ---------------------------------------------------------------- errors, config, determinism


@pytest.mark.parametrize(
    "bad_name", ["resnet7", "resnet21", "wrn-15-2", "wrn-16-0", "vgg16", "lenet", "", "resnet21-fc", "vgg13-fc"]
)
def test_unknown_name_lists_choices(bad_name: str) -> None:
    with pytest.raises(ValueError) as error:
        models.create(bad_name)
    message = str(error.value)
    choices = ("resnet20", "resnet110", "wrn-16-2", "vgg13", "cnn6", "mlp", "alexnet_small", "vgg11-fc", "resnet20-fc")
    for choice in choices:
        assert choice in message


def test_bad_depth_message_explains_rule() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        models.create("resnet22")
    with pytest.raises(ValueError, match="% 6"):
        models.create("wrn-20-2")


def test_unexpected_option_is_rejected() -> None:
    with pytest.raises(TypeError, match="'dropout'"):
        models.create("vgg8", dropout=0.3)


@pytest.mark.parametrize(
    "name", ["resnet20", "wrn-16-1", "vgg8", "cnn6", "mlp", "alexnet_small", "vgg11-fc", "resnet20-fc"]
)
def test_unknown_option_raises_type_error_naming_it(name: str) -> None:
    with pytest.raises(TypeError) as error:
        models.create(name, dropuot=0.1)  # a typo of an option some families have
    assert "'dropuot'" in str(error.value)
    # An option another family has is still unknown here; the message says what this family accepts.
    other = "fc_width" if name in ("resnet20", "wrn-16-1", "vgg8", "cnn6", "mlp") else "hidden"
    if name == "vgg8":
        with pytest.raises(TypeError, match="takes no options"):
            models.create(name, **{other: 64})
    else:
        with pytest.raises(TypeError, match="options are: .*dropout"):
            models.create(name, **{other: 64})


def test_available_lists_canonical_names() -> None:
    names = models.available()
    assert names[:8] == [f"resnet{d}" for d in (8, 14, 20, 26, 32, 44, 56, 110)]
    for name in ("wrn-16-2", "wrn-40-2", "wrn-28-10", "vgg8", "vgg13", "cnn6", "cnn8", "cnn10", "mlp"):
        assert name in names
    for name in ("alexnet_small", "vgg11-fc", "vgg16-fc", "vgg19-fc", "resnet20-fc", "resnet56-fc"):
        assert name in names
        assert models.create(name).name == name
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", RUNNABLE)
def test_name_and_config_rebuild_the_same_architecture(name: str) -> None:
    model = build(name)
    assert model.name == name
    rebuilt = models.create(model.name, **model.config)
    original_shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == original_shapes


@pytest.mark.parametrize("name", ["alexnet_small", "vgg11-fc", "resnet8-fc", "mlp", "wrn-10-2"])
def test_config_with_options_rebuilds_the_same_model(name: str) -> None:
    options = {"dropout": 0.25}
    if name == "mlp":
        options["hidden"] = (48, 24)
    elif name != "wrn-10-2":
        options["fc_width"] = 24
    model = models.create(name, num_classes=7, in_channels=1, **options)
    rebuilt = models.create(model.name, **model.config)
    assert rebuilt.config == model.config and rebuilt.name == model.name
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert all(model.config[key] == value for key, value in options.items())


def test_options_are_recorded_in_config() -> None:
    wrn = models.create("WRN-16-2", num_classes=100, dropout=0.3)
    assert wrn.name == "wrn-16-2"
    assert wrn.config == {"num_classes": 100, "in_channels": 3, "dropout": 0.3}
    mlp = models.create("mlp", in_channels=1, hidden=(64,), dropout=0.1)
    assert mlp.config["hidden"] == (64,) and mlp.feature_dim == 64


@pytest.mark.parametrize("name", RUNNABLE)
def test_seeded_creation_is_deterministic(name: str) -> None:
    torch.manual_seed(0)
    first = build(name).state_dict()
    torch.manual_seed(0)
    second = build(name).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_convolutions_use_kaiming_fan_out() -> None:
    torch.manual_seed(0)
    model = build("resnet110")
    conv = model.stage3[5].conv2  # 64 -> 64, fan_out = 64 * 9
    expected_std = (2.0 / (64 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.05
    bn_layer = model.stage3[5].bn2
    assert torch.all(bn_layer.weight == 1) and torch.all(bn_layer.bias == 0)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", RUNNABLE)
def test_gradient_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    first_weight = next(model.parameters())  # the first conv (first Linear for the MLP)
    assert first_weight.dim() in (2, 4)
    assert first_weight.grad is not None and first_weight.grad.abs().sum() > 0

    # In training mode with a real loss, no parameter may be left out of the graph.
    model.zero_grad()
    model.train()
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
