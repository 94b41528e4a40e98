"""Dropout as a model option of the CIFAR ResNets and the plain CNNs (Gu et al. 2020, §5.1: "drop neurons of the
last layer of each block-layer"): off by default and then invisible, on after each stage / conv group otherwise."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdnb import models
from kdnb.runs import RunSpec
from kdnb.train import Schedule


def built(name: str, seed: int = 0, **options) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1, **options)


@pytest.mark.parametrize("name", ["resnet8", "resnet14", "cnn6", "cnn10"])
def test_zero_dropout_is_the_model_without_the_option(name: str) -> None:
    plain, zero = built(name), built(name, dropout=0.0)
    assert list(plain.state_dict()) == list(zero.state_dict())
    assert all(torch.equal(v, zero.state_dict()[k]) for k, v in plain.state_dict().items())
    assert plain.feature_names == zero.feature_names
    assert all(plain.prefixes_up_to(f) == zero.prefixes_up_to(f) for f in plain.feature_names)
    x = torch.randn(6, 1, 28, 28)
    torch.manual_seed(1)
    logits_a, features_a = plain.forward_features(x)
    rng_a = torch.get_rng_state()
    torch.manual_seed(1)
    logits_b, features_b = zero.forward_features(x)
    # No random number is drawn at p = 0: the training stream of every cached run is unchanged.
    assert torch.equal(rng_a, torch.get_rng_state())
    assert torch.equal(logits_a, logits_b)
    assert all(torch.equal(features_a[k], features_b[k]) for k in features_a)


@pytest.mark.parametrize("name", ["resnet8", "cnn6"])
def test_dropout_changes_training_outputs_only(name: str) -> None:
    plain, dropped = built(name), built(name, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(6, 1, 28, 28)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x), dropped(x))
    plain.train(), dropped.train()
    assert not torch.allclose(plain(x), dropped(x))


def test_resnet_drops_each_stage_output_before_the_next_stage() -> None:
    p = 0.4
    net = built("resnet8", dropout=p).train()
    seen = {}
    net.stage2[0].conv1.register_forward_pre_hook(lambda module, inputs: seen.update(stage2_input=inputs[0]))
    _, features = net.forward_features(torch.randn(8, 1, 28, 28))
    kept, stage1 = seen["stage2_input"], features["stage1"]
    # Inverted dropout: every unit is either dropped (0) or kept and scaled by 1 / (1 - p).
    scaled = torch.isclose(kept, stage1 / (1 - p))
    assert bool(((kept == 0) | scaled).all())
    dropped = ((kept == 0) & (stage1 > 0)).float().sum() / (stage1 > 0).float().sum()
    assert 0.3 < dropped.item() < 0.5
    # The feature is the stage output before dropout (relu(stage1.pre) == stage1 still holds).
    assert torch.equal(F.relu(features["stage1.pre"]), stage1)
    # A frozen (eval-mode) last block of the stage switches its dropout off.
    net.stage1[-1].eval()
    _, features = net.forward_features(torch.randn(8, 1, 28, 28))
    assert torch.equal(seen["stage2_input"], features["stage1"])


def test_cnn_drops_each_group_output() -> None:
    plain, dropped = built("cnn6"), built("cnn6", dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(6, 1, 28, 28)
    torch.manual_seed(0)
    a = plain.train().forward_features(x)[1]
    b = dropped.train().forward_features(x)[1]
    assert torch.equal(a["conv1"], b["conv1"])  # group 1's output is recorded before its dropout
    assert not torch.allclose(a["conv2"], b["conv2"])  # group 2 receives the dropped-out map


@pytest.mark.parametrize("name", ["resnet8", "cnn8"])
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_dropout_is_an_error(name: str, p: float) -> None:
    with pytest.raises(ValueError, match=r"dropout.*\[0, 1\)"):
        models.create(name, dropout=p)


def test_dropout_is_recorded_and_reaches_a_run_spec() -> None:
    net = models.create("resnet14", dropout=0.1)
    assert net.config["dropout"] == 0.1 and models.create(net.name, **net.config).stage_dropout == 0.1
    spec = RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1), model_args={"dropout": 0.1})
    spec.validate()
    with pytest.raises(ValueError, match="dropout"):
        RunSpec("fashion_mnist", "cnn6", Schedule(epochs=1), model_args={"dropout": 2.0}).validate()
