"""Teacher-free KD (Yuan et al. 2020) in both forms: the virtual teacher's distribution and loss by hand, the
self-teacher's loss by hand and its chain through the run cache."""
from __future__ import annotations

import math

import pytest
import torch

from kdnb import distill, models, runs
from kdnb.distill.teacher_free import virtual_teacher
from kdnb.train import Schedule

pytestmark = pytest.mark.usefixtures("one_thread")


class Passthrough(torch.nn.Module):
    def forward(self, x):
        return x


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def test_virtual_teacher_distribution():
    p = virtual_teacher(torch.tensor([2, 0]), 4, 0.9)
    expected = [[0.1 / 3, 0.1 / 3, 0.9, 0.1 / 3], [0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3]]
    assert torch.allclose(p, torch.tensor(expected))
    assert torch.allclose(p.sum(1), torch.ones(2))


def test_virtual_teacher_loss_by_hand():
    torch.manual_seed(0)
    logits, y = torch.randn(3, 5) * 2, torch.tensor([1, 4, 0])
    a, T, alpha = 0.99, 20.0, 0.1
    _, terms = distill.create("tfkd_reg", Passthrough())(logits, y)
    reg = ce = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        pd = [a if k == label else (1 - a) / 4 for k in range(5)]
        q = softmax([v / T for v in pd])  # the release softens p^d itself
        p = softmax(row)
        reg += sum(qk * math.log(qk / pk) for qk, pk in zip(q, p))
        ce -= math.log(p[label])
    assert terms["reg"].item() == pytest.approx(alpha * reg / 3, rel=1e-5)
    assert terms["ce"].item() == pytest.approx((1 - alpha) * ce / 3, rel=1e-5)
    with pytest.raises(ValueError, match="no teacher run"):
        distill.create("tfkd_reg", Passthrough(), Passthrough())


def test_self_teacher_loss_by_hand():
    torch.manual_seed(1)
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    teacher_logits = 1.5 * logits + 0.3

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return 1.5 * x + 0.3

    T, alpha = 6.0, 0.95
    _, terms = distill.TfKDSelf(Passthrough(), Fixed(), multiplier=2.0)(logits, y)
    kl = 0.0
    for s, t in zip(logits.tolist(), teacher_logits.tolist()):
        ps, pt = softmax([v / T for v in s]), softmax([v / T for v in t])
        kl += sum(b * math.log(b / a) for a, b in zip(ps, pt))
    assert terms["kd"].item() == pytest.approx(2.0 * alpha * T * T * kl / 4, rel=1e-4)  # float32 KL near 0
    assert set(terms) == {"ce", "kd"}


def test_self_teacher_is_a_chain_of_the_same_architecture(tmp_path, count_trainers):
    base = runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=8, lr=0.05), train_per_class=3,
                        test_per_class=2)
    _, student = runs.chain(base, base.replace(method="tfkd_self"))
    run = runs.train_or_load(student, root=tmp_path, device="cpu")
    assert len(count_trainers) == 2 and {"train_ce", "train_kd", "test_acc"} <= set(run.final)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="trained copy of itself"):
        distill.create("tfkd_self", models.create("resnet8", num_classes=10, in_channels=1),
                       models.create("resnet14", num_classes=10, in_channels=1))
