"""Cheng et al.'s mimic-then-freeze distillation (§4.1), through the real trainer on tiny data: the loss is the
squared feature difference at FC_l's output before its ReLU, the stage "mimic" trains only the layers up to FC_l,
the stage "classify" leaves them (and their BatchNorm statistics) bit-identical and never runs the teacher."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from kdnb import distill, models
from kdnb.data import TensorBatches
from kdnb.distill import Context, Stage
from kdnb.distill.mimic import Mimic, stage_epochs
from kdnb.train import Schedule, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

FC_MODULE = {"fc1": "fc1", "fc2": "fc2", "fc3": "classifier"}  # the Linear whose output f is (pre-ReLU)


def tiny(name: str = "alexnet_small", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create(name, in_channels=1, num_classes=4, width=0.25, fc_width=16)


def data(n: int = 24, seed: int = 0) -> TensorBatches:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (n,), generator=g)
    return TensorBatches(images, labels, 8, 0.5, 0.25, shuffle=True)


def linear_output(model: torch.nn.Module, module: str, x: torch.Tensor) -> torch.Tensor:
    """The output of the Linear ``module`` of ``model`` on ``x``, caught by a forward hook (the FC layer's output
    before any ReLU, by definition of a Linear layer)."""
    caught = []
    handle = model.get_submodule(module).register_forward_hook(lambda m, i, o: caught.append(o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return caught[0]


@pytest.mark.parametrize("layer", ["fc1", "fc2", "fc3"])
def test_mimic_loss_is_the_squared_feature_difference_before_the_relu(layer: str) -> None:
    student, teacher = tiny("alexnet_small", 0).eval(), tiny("alexnet_small", 1).eval()
    method = Mimic(student, teacher, layer=layer)
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 4, (5,))
    with torch.no_grad():
        _, terms = method(x, y, Context(stage=Stage("mimic", terms=("mimic",))))
    f_s, f_t = linear_output(student, FC_MODULE[layer], x), linear_output(teacher, FC_MODULE[layer], x)
    # ||f_T - f_S||^2 over the batch, divided by the larger of ||f_T||^2 and the element count (the released MSE)
    by_hand = ((f_t - f_s) ** 2).sum() / max((f_t ** 2).sum(), f_t.numel())
    assert set(terms) == {"mimic"}
    torch.testing.assert_close(terms["mimic"], by_hand, rtol=1e-6, atol=0)
    if layer != "fc3":  # the pre-ReLU feature has negative entries: a loss on relu(f) would differ
        assert (f_t < 0).any()


def test_stages_follow_the_released_split() -> None:
    assert stage_epochs(250, 0.6) == (150, 100)  # the released 150 + 100 epochs
    assert stage_epochs(3, 2 / 3) == (2, 1)
    assert stage_epochs(2, 0.99) == (1, 1)  # both stages get an epoch
    with pytest.raises(ValueError, match="2 epochs"):
        stage_epochs(1, 0.5)
    student, teacher = tiny(), tiny(seed=1)
    stages = Mimic(student, teacher, layer="fc2", mimic_share=0.6).stages(5)
    assert [(s.name, s.epochs, s.terms) for s in stages] == [("mimic", 3, ("mimic",)), ("classify", 2, ("ce",))]
    learned = tuple(f"student.{p}" for p in student.prefixes_up_to("fc2"))
    assert stages[0].frozen == ("student.classifier",) and stages[1].frozen == learned
    assert [s.name for s in Mimic(student, teacher, layer="fc3").stages(5)] == ["mimic"]
    for bad in ({"layer": "conv5"}, {"mimic_share": 1.0}):
        with pytest.raises(ValueError, match="layer|mimic_share"):
            Mimic(student, teacher, **bad)
    assert distill.method_class("mimic") is Mimic
    assert distill.bind("mimic", {}) == {"layer": "fc1", "mimic_share": 0.6}


@pytest.mark.parametrize("arch", ["alexnet_small", "resnet20-fc"])
def test_classify_stage_freezes_the_mimicked_layers_and_never_runs_the_teacher(arch: str) -> None:
    student, teacher = tiny(arch, 0), tiny(arch, 1)
    method = Mimic(student, teacher, layer="fc1", mimic_share=2 / 3)
    calls = {"teacher": 0}
    original = teacher.forward_features

    def counted(x):
        calls["teacher"] += 1
        return original(x)

    teacher.forward_features = counted
    initial = copy.deepcopy(student.state_dict())
    states, teacher_calls = [], []

    def snapshot(metrics: dict) -> None:
        states.append((metrics["stage"], copy.deepcopy(student.state_dict())))
        teacher_calls.append(calls["teacher"])

    trainer = Trainer(method, data(), Schedule(epochs=3, batch_size=8, lr=0.005, lr_schedule="constant"),
                      seed=0, on_epoch_end=snapshot)
    trainer.fit()
    assert [stage for stage, _ in states] == ["mimic", "mimic", "classify"]
    learned = student.prefixes_up_to("fc1")

    def is_learned(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in learned)

    after_mimic, final = states[1][1], states[2][1]
    for key, value in final.items():
        if is_learned(key):  # parameters and BN buffers (running mean/var, batch count) untouched in "classify"
            assert torch.equal(value, after_mimic[key]), key
        elif key.endswith(("weight", "bias")):  # fc2 and the classifier: frozen while mimicking, trained after
            assert torch.equal(after_mimic[key], initial[key]), key
            assert not torch.equal(value, after_mimic[key]), key
    moved = [k for k in after_mimic if is_learned(k) and not torch.equal(after_mimic[k], initial[k])]
    assert any(k.startswith("fc1.") for k in moved) and len(moved) > 2  # the whole trunk up to FC1 learned
    assert teacher_calls[1] == 2 * len(data()) and teacher_calls[2] == teacher_calls[1]  # none in "classify"


def test_mimic_loss_is_the_mse_for_small_features_and_relative_for_large_ones() -> None:
    """Teacher features of mean square <= 1: the plain mean-reduced MSE (the released loss). Larger ones: relative
    to their energy — zero student output costs 1, a common scale leaves the loss unchanged, and the gradient is
    the squared distance's divided by the teacher's energy (none flows through the teacher)."""
    from kdnb.distill.mimic import mimic_loss

    g = torch.Generator().manual_seed(0)
    small_t, small_s = 0.1 * torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    torch.testing.assert_close(mimic_loss(small_s, small_t), F.mse_loss(small_s, small_t), rtol=1e-6, atol=0)
    f_t = torch.randn(6, 10, generator=g) * 5
    f_s = torch.randn(6, 10, generator=g).requires_grad_(True)
    assert mimic_loss(torch.zeros_like(f_t), f_t).item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(mimic_loss(3 * f_s, 3 * f_t), mimic_loss(f_s, f_t), rtol=1e-6, atol=0)
    mimic_loss(f_s, f_t).backward()
    torch.testing.assert_close(f_s.grad, 2 * (f_s.detach() - f_t) / (f_t ** 2).sum(), rtol=1e-6, atol=0)
