"""OD (Heo et al. 2019): the BatchNorm that gives each position's margin per model family, the margin against a
numerical integral of the Gaussian, the partial L2 by hand, the whole loss from the networks, and training."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import distill, models, runs
from kdnb.distill.overhaul import bn_margin, partial_l2, preact_batchnorm
from kdnb.train import Schedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def net(name: str, seed: int = 0) -> models.FeatureModel:
    torch.manual_seed(seed)
    return models.create(name, num_classes=10, in_channels=1)


@pytest.mark.parametrize("name, feature, bn", [
    ("resnet8", "stage1.pre", "stage1.0.bn2"), ("resnet14", "stage2.pre", "stage2.1.bn2"),
    ("wrn-16-1", "stage1.pre", "stage2.0.bn1"), ("wrn-16-1", "stage3.pre", "final_bn"),
    ("vgg8", "block5.pre", "blocks.4.0.1"), ("mobilenet", "stage1.pre", "blocks.0.bn2"),
    ("mobilenet", "stage5.pre", "blocks.12.bn2"), ("cnn6", "conv3.pre", "groups.1.1.1")])
def test_the_batchnorm_before_each_pre_relu_feature(name, feature, bn):
    model = net(name).eval()
    found, module = preact_batchnorm(model, feature)
    assert found == bn and module is dict(model.named_modules())[bn]
    # Where the BatchNorm's output is the feature, applying it to its input gives the feature exactly.
    inputs = []
    hook = module.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        features = model.forward_features(x)[1]
    hook.remove()
    out = module(inputs[-1]).detach()
    if name.startswith("resnet"):  # a residual sum: the BN's output plus the shortcut
        assert not torch.allclose(out, features[feature])
    else:
        assert torch.allclose(out, features[feature])


def gaussian_negative_mean(m: float, s: float, steps: int = 20000) -> float:
    """E[x | x < 0] for x ~ N(m, s²) by the midpoint rule over [m - 12 s, 0]."""
    low = min(m - 12 * s, -12 * s)
    width = (0 - low) / steps
    mass = first = 0.0
    for k in range(steps):
        x = low + (k + 0.5) * width
        density = math.exp(-((x - m) / s) ** 2 / 2) / (s * math.sqrt(2 * math.pi))
        mass += density * width
        first += x * density * width
    return first / mass


def test_margin_is_the_mean_of_the_negative_part_of_the_bn_gaussian():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -0.5, 2.0, 0.1]))  # |γ| is the scale
        bn.bias.copy_(torch.tensor([0.0, 0.3, -1.0, 0.5]))     # the last: Φ(-β/|γ|) = Φ(-5) < 0.001
    margin = bn_margin(bn).tolist()
    for c, (g, b) in enumerate([(1.0, 0.0), (0.5, 0.3), (2.0, -1.0)]):
        assert margin[c] == pytest.approx(gaussian_negative_mean(b, g), rel=1e-4)
    assert margin[3] == pytest.approx(-3 * 0.1)  # the official code's cut-off
    assert all(v < 0 for v in margin)


def test_partial_l2_by_hand():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    margin = torch.tensor([-0.5, -0.1, -1.0])
    expected = 0.0
    for b in range(2):
        for c in range(3):
            for h in range(2):
                for w in range(2):
                    target = max(t[b, c, h, w].item(), margin[c].item())
                    sv = s[b, c, h, w].item()
                    if sv > target or target > 0:
                        expected += (sv - target) ** 2
    assert partial_l2(s, t, margin).item() == pytest.approx(expected, rel=1e-5)
    below = torch.full((1, 3, 1, 1), -5.0)  # every student response below a negative target: no penalty
    assert partial_l2(below, torch.full((1, 3, 1, 1), -2.0), margin).item() == 0.0


@pytest.mark.parametrize("teacher_bn", ["eval", "train"])
def test_od_loss_from_the_networks(teacher_bn):
    student, teacher = net("resnet8", 0), net("wrn-16-1", 1)
    teacher.stage2[0].bn1.running_mean.add_(0.5)  # running statistics that differ from a batch's
    method = distill.create("od", student, teacher, teacher_bn=teacher_bn).eval()
    assert method.pairs == (("stage1.pre", "stage1.pre"), ("stage2.pre", "stage2.pre"), ("stage3.pre", "stage3.pre"))
    assert method.bn_names == ("stage2.0.bn1", "stage3.0.bn1", "final_bn")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    logits, terms = method(x, y)
    if teacher_bn == "train":
        teacher.train()
    with torch.no_grad():
        t_features = teacher.forward_features(x)[1]
    for k, v in teacher.state_dict().items():
        v.copy_(before[k])
    teacher.eval()
    s_features = student.forward_features(x)[1]
    expected = 0.0
    for i, (name, weight) in enumerate(zip(("stage1.pre", "stage2.pre", "stage3.pre"), (0.25, 0.5, 1.0))):
        bn = dict(teacher.named_modules())[method.bn_names[i]]
        expected += weight * partial_l2(method.connectors[i](s_features[name]), t_features[name], bn_margin(bn))
    assert terms["od"].item() == pytest.approx(1e-3 * expected.item() / 4, rel=1e-4)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    for k, v in teacher.state_dict().items():
        assert torch.equal(before[k], v), k  # the teacher's running statistics never move
    assert not teacher.training


def test_od_trains_the_student_and_its_connectors():
    spec = runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=16, lr=0.05), train_per_class=4,
                        test_per_class=2)
    method = distill.create("od", net("resnet8", 0), net("resnet14", 1))
    before = {k: v.clone() for k, v in method.state_dict().items()}
    history = Trainer(method, runs.batches(spec, "train", "cpu"), spec.schedule, device="cpu").fit()
    assert {"train_ce", "train_od"} <= set(history[-1]) and math.isfinite(history[-1]["train_loss"])
    changed = {k for k, v in method.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("connectors.") for k in changed) and any(k.startswith("student.") for k in changed)
    assert not any(k.startswith("margin") for k in changed)
