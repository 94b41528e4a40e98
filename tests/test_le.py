"""Introspective learning (Gu et al. 2020, Alg. 1): Eq. 6 by hand, the warm-up computes no maps, LE-Permut, and a
short real run through the run cache."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdnb import distill, explain, models, runs
from kdnb.distill import Context, Stage, le_targets
from kdnb.train import Schedule


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run faster on one thread


def test_le_targets_by_hand():
    # Sample 0, truth class 0: e0 = (1, 0), e1 = (0, 1), e2 = (1, 1).
    #   cos(e1, e0) + 1 = 1, cos(e2, e0) + 1 = 1 + 1/sqrt(2); sum 2 + 1/sqrt(2)
    # Sample 1, the same maps, truth class 2: cos(e0, e2) = cos(e1, e2) = 1/sqrt(2): equal shares, 0.05 each.
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    maps = torch.stack([e, e])
    q = le_targets(maps, torch.tensor([0, 2]), alpha=0.9)
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[0.9, 0.1 * 1 / (2 + r), 0.1 * (1 + r) / (2 + r)],
                             [0.05, 0.05, 0.9]])
    assert torch.allclose(q, expected, atol=1e-7)
    assert torch.allclose(q.sum(dim=1), torch.ones(2))


def test_le_targets_flatten_maps_and_detach():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 4, 2, 2, generator=g).requires_grad_(True)
    y = torch.tensor([1, 0, 3])
    q = le_targets(maps, y, alpha=0.8)
    assert not q.requires_grad
    flat = maps.detach().reshape(3, 4, 4)
    for i in range(3):  # Eq. 6 written out, sample by sample
        truth = flat[i, y[i]]
        cos = [torch.dot(flat[i, k], truth) / (flat[i, k].norm() * truth.norm()) + 1 for k in range(4)]
        denominator = sum(cos[m] for m in range(4) if m != y[i])
        for k in range(4):
            want = 0.8 if k == y[i] else 0.2 * cos[k] / denominator
            assert torch.isclose(q[i, k], torch.as_tensor(want), atol=1e-6)


def test_le_targets_degenerate_maps():
    # An all-zero map has cosine 0 with the truth's; opposite maps (cos = -1 everywhere) share 1 - alpha equally.
    # e0 = (1, 2) (truth), e1 = 0, e2 = (3, 1): cos(e1, e0) + 1 = 1, cos(e2, e0) + 1 = 1 + 5/sqrt(50).
    zero = le_targets(torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]]]), torch.tensor([0]))
    c = 5 / math.sqrt(50)
    assert torch.allclose(zero, torch.tensor([[0.9, 0.1 / (2 + c), 0.1 * (1 + c) / (2 + c)]]), atol=1e-7)
    opposite = le_targets(torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [-2.0, 0.0]]]), torch.tensor([0]))
    assert torch.allclose(opposite, torch.tensor([[0.9, 0.05, 0.05]]))


def small_resnet():
    torch.manual_seed(0)
    return models.create("resnet8", num_classes=10, in_channels=1)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 1, 16, 16, generator=g), torch.tensor([0, 1, 2, 3, 4, 5])


@pytest.fixture
def counted(monkeypatch):
    """Count every explanation the library computes."""
    calls = {"n": 0}
    for name in ("class_maps", "gradcam_from_forward"):
        original = getattr(explain, name)

        def counting(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(explain, name, counting)
    return calls


def test_stages_and_warmup_computes_no_maps(batch, counted):
    x, y = batch
    method = distill.create("le", small_resnet()).train()
    warm, introspect = method.stages(5)
    assert (warm.name, warm.epochs, warm.terms) == ("warmup", 1, ("ce",)) and introspect.epochs is None
    logits, terms = method(x, y, Context(stage=warm))
    assert counted["n"] == 0 and set(terms) == {"ce"}
    assert torch.isclose(terms["ce"], F.cross_entropy(logits, y))
    logits, terms = method(x, y, Context(stage=introspect))
    assert counted["n"] == 1 and set(terms) == {"le", "ce"}
    assert torch.isclose(terms["ce"], 0.1 * F.cross_entropy(logits, y))
    assert [s.epochs for s in method.stages(50)][0] == 10  # the paper's MLP: 10 of 50 epochs
    assert [s.name for s in distill.create("le", small_resnet(), warmup=0.0).stages(5)] == ["introspect"]


def test_le_loss_uses_the_networks_own_gradcam(batch):
    """CE(p, q) with q from the training forward's Grad-CAM = from class_maps on the same network (train mode)."""
    x, y = batch
    student = small_resnet().train()
    method = distill.create("le", student)
    logits, terms = method(x, y, Context(stage=Stage("introspect")))
    q = le_targets(explain.class_maps(student, x), y)
    assert torch.isclose(terms["le"], F.cross_entropy(logits, q), atol=1e-6)


@pytest.mark.parametrize("explanation,layer", [("gradcam", "stage2"), ("grad", None), ("guided_backprop", None)])
def test_le_other_maps_train(batch, explanation, layer):
    x, y = batch
    student = small_resnet().train()
    method = distill.create("le", student, explanation=explanation, layer=layer)
    logits, terms = method(x, y, Context(stage=Stage("introspect")))
    sum(terms.values()).backward()  # the graph survives the maps' backward (kept for the loss)
    assert all(p.grad is not None for p in student.parameters())
    q = le_targets(explain.class_maps(student, x, explanation, layer=layer), y)
    assert torch.isclose(terms["le"], F.cross_entropy(logits, q), atol=1e-6)


def test_le_permut_permutes_non_truth_targets(batch):
    x, y = batch
    torch.manual_seed(2)
    student = small_resnet().train()
    plain = distill.create("le", student)
    permut = distill.create("le_permut", student)
    maps = explain.class_maps(student, x)
    q = plain.targets(maps, y)
    moved = 0
    for seed in range(3):
        torch.manual_seed(seed)
        qp = permut.targets(maps, y)
        assert torch.allclose(qp.gather(1, y[:, None]), torch.full((6, 1), 0.9))  # the truth keeps alpha
        assert torch.allclose(qp.sort(dim=1).values, q.sort(dim=1).values)  # each row: a permutation
        moved += (qp != q).sum().item()
    assert moved > 0
    assert distill.bind("le_permut", {}) == {"explanation": "gradcam", "layer": None, "alpha": 0.9, "lam": 0.1,
                                             "warmup": 0.2}


def test_le_errors():
    with pytest.raises(ValueError, match="unknown explanation"):
        distill.create("le", small_resnet(), explanation="lrp")
    with pytest.raises(ValueError, match="no layer"):
        distill.create("le", small_resnet(), explanation="grad", layer="stage2")


def test_le_trains_through_the_run_cache(tmp_path, counted):
    spec = runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=2, batch_size=20), method="le",
                        train_per_class=4, test_per_class=2, augment=None)
    run = runs.train_or_load(spec, root=tmp_path)
    stages = [row["stage"] for row in run.history]
    assert stages == ["warmup", "introspect"]
    assert "train_le" not in run.history[0] and math.isfinite(run.history[1]["train_le"])
    assert counted["n"] == 2  # 40 images, batches of 20: maps in the two steps of the second epoch only
    assert runs.train_or_load(spec, root=tmp_path).history == run.history  # cached


def test_bench_le_step_runs():
    """The bench entry runs (tiny sizes; its numbers come from `python -m kdnb bench le`)."""
    from kdnb import bench

    assert bench.BENCHES["le"] is bench.le_step_vs_ce_step
    result = bench.le_step_vs_ce_step(batch_size=8, steps=1, repeats=2)
    assert result["ratio"] > 0 and set(result["per_ce_step"]) >= {
        "le_grad", "class_maps_grad", "class_maps_grad_x_input", "class_maps_guided_backprop",
        "captum_saliency_per_class", "captum_layergradcam_per_class"}
