"""The CIFAR MobileNet (Howard et al. 2017, Table 1, first stride removed): parameters counted from the paper's
layer table by hand, resolutions, the width multiplier, features and their modules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdnb import models

# Howard et al. Table 1 after the stem: (output channels, stride) of each depthwise-separable block.
TABLE1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def expected_parameters(width: float, in_channels: int = 3, classes: int = 10) -> int:
    """Weights of the paper's layers: stem 3x3 conv, per block a 3x3 depthwise (c_in·9) and a 1x1 pointwise
    (c_in·c_out) conv, each conv without bias and followed by a BatchNorm (2 parameters per channel), then the
    linear classifier."""
    c = lambda n: max(8, int(round(n * width)))  # noqa: E731
    stem = c(32)
    total = in_channels * 9 * stem + 2 * stem
    c_in = stem
    for out, _ in TABLE1:
        total += c_in * 9 + 2 * c_in + c_in * c(out) + 2 * c(out)
        c_in = c(out)
    return total + c_in * classes + classes


@pytest.mark.parametrize("width", [1.0, 0.5, 0.25])
def test_parameter_count_follows_the_layer_table(width: float) -> None:
    model = models.create("mobilenet", width=width)
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(width)
    if width == 1.0:
        assert expected_parameters(1.0) == 3_217_226  # the usual "3.2M" of the CIFAR MobileNet


@pytest.mark.parametrize(("in_channels", "size", "sides"), [(3, 32, (32, 16, 8, 4, 2)), (1, 28, (28, 14, 7, 4, 2))])
def test_stages_halve_the_resolution(in_channels: int, size: int, sides: tuple[int, ...]) -> None:
    model = models.create("mobilenet", in_channels=in_channels, width=0.25).eval()
    logits, features = model.forward_features(torch.randn(2, in_channels, size, size))
    assert logits.shape == (2, 10)
    widths = (16, 32, 64, 128, 256)  # 0.25 × (64, 128, 256, 512, 1024)
    for k, (side, width) in enumerate(zip(sides, widths), start=1):
        assert features[f"stage{k}"].shape == (2, width, side, side)
        assert torch.equal(features[f"stage{k}"], F.relu(features[f"stage{k}.pre"]))
    assert torch.equal(features["stage5"], features["block13"]) and torch.equal(features["stage4"], features["block11"])
    assert features["pooled"].shape == (2, 256)
    assert torch.allclose(features["pooled"], features["stage5"].mean((2, 3)))


def test_depthwise_convs_are_per_channel() -> None:
    model = models.create("mobilenet", width=0.5)
    for block in model.blocks:
        assert block.depthwise.groups == block.depthwise.in_channels == block.depthwise.out_channels
        assert block.pointwise.kernel_size == (1, 1)


def test_prefixes_and_options() -> None:
    model = models.create("mobilenet")
    assert model.prefixes_up_to("stage2") == ("stem", "blocks.0", "blocks.1", "blocks.2")
    assert model.config == {"num_classes": 10, "in_channels": 3, "width": 1.0}
    assert "mobilenet" in models.available()
    with pytest.raises(ValueError, match="width"):
        models.create("mobilenet", width=0)
    with pytest.raises(TypeError, match="options are: width"):
        models.create("mobilenet", dropout=0.1)
