"""Gu et al. 2020, §3: CWTM, CWTM-Permut, CWTM-Random and DKPP against Eqs. 2-5, with numbers worked by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import distill
from kdnb.distill import (Context, Stage, cwtm_permut_weights, cwtm_random_confidence, cwtm_weights, dkpp_permute,
                          teacher_confidence, weighted_cross_entropy)


def test_teacher_confidence_is_the_max_probability():
    # softmax([ln 1, ln 3]) = [0.25, 0.75]; softmax([0, 0, 0, ln 2]) = [0.2, 0.2, 0.2, 0.4]
    logits = torch.tensor([[0.0, math.log(3.0), -1e4, -1e4], [0.0, 0.0, 0.0, math.log(2.0)]])
    assert torch.allclose(teacher_confidence(logits), torch.tensor([0.75, 0.4]))


def test_cwtm_weights_by_hand():
    # q_max = (0.5, 0.8, 0.7), sum 2.0: weights 0.25, 0.40, 0.35 (Eq. 5's q_i^max / sum_j q_j^max)
    weights = cwtm_weights(torch.tensor([0.5, 0.8, 0.7]))
    assert torch.allclose(weights, torch.tensor([0.25, 0.40, 0.35]))


def test_weighted_cross_entropy_gradient_is_eq5():
    """dL/da_i^j = w_i (p_i^j - y_i^j): for samples of class j the first sum of Eq. 5, for the others the second."""
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 2.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 2, 1])
    w = torch.tensor([0.25, 0.40, 0.35])
    weighted_cross_entropy(logits, y, w).backward()
    p = torch.softmax(logits.detach(), dim=1)
    by_hand = torch.empty(3, 3)
    for i in range(3):
        for j in range(3):
            by_hand[i, j] = w[i] * (p[i, j] - (1.0 if y[i] == j else 0.0))
    assert torch.allclose(logits.grad, by_hand, atol=1e-7)
    # With uniform weights 1/b it is plain cross-entropy (Eq. 3).
    assert torch.allclose(weighted_cross_entropy(logits, y, torch.full((3,), 1 / 3)), F.cross_entropy(logits, y))


def test_cwtm_permut_permutes_the_weights():
    confidence = torch.tensor([0.5, 0.8, 0.7, 0.9, 0.6])
    plain = cwtm_weights(confidence)
    seen_other_order = False
    for seed in range(10):
        permuted = cwtm_permut_weights(confidence, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(permuted.sort().values, plain.sort().values)  # the same weights, another order
        assert torch.isclose(permuted.sum(), torch.tensor(1.0))
        seen_other_order |= not torch.allclose(permuted, plain)
    assert seen_other_order


def test_cwtm_random_draws_in_beta_one():
    u = cwtm_random_confidence(10_000, beta=0.5, generator=torch.Generator().manual_seed(0))
    assert u.min() >= 0.5 and u.max() < 1.0
    assert abs(u.mean().item() - 0.75) < 0.01  # uniform on [0.5, 1)
    weights = cwtm_weights(u[:8])
    assert torch.isclose(weights.sum(), torch.tensor(1.0)) and weights.max() / weights.min() <= 2.0
    with pytest.raises(ValueError):
        cwtm_random_confidence(3, beta=1.0)


def test_dkpp_keeps_the_argmax_and_permutes_the_rest():
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(200, 10, generator=g)
    permuted = dkpp_permute(outputs, generator=g)
    top = outputs.argmax(dim=1)
    assert torch.equal(permuted.argmax(dim=1), top)
    assert torch.equal(permuted.gather(1, top[:, None]), outputs.gather(1, top[:, None]))  # the max stays in place
    assert torch.equal(permuted.sort(dim=1).values, outputs.sort(dim=1).values)  # each row: a permutation
    moved = (permuted != outputs).float().mean().item()  # 9 of 10 entries move unless the shuffle fixes them
    assert 0.7 < moved < 0.95
    # Probabilities stay probabilities; the softmax of permuted logits is the permuted softmax.
    probs = torch.softmax(outputs, dim=1)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.allclose(torch.softmax(dkpp_permute(outputs, g1), 1), dkpp_permute(probs, g2), atol=1e-7)


def test_dkpp_by_hand():
    # Row (1, 6, 3): the argmax 6 stays at index 1; 1 and 3 either stay or swap (both happen in 20 draws).
    row = torch.tensor([[1.0, 6.0, 3.0]])
    results = {tuple(dkpp_permute(row, torch.Generator().manual_seed(s))[0].tolist()) for s in range(20)}
    assert results == {(1.0, 6.0, 3.0), (3.0, 6.0, 1.0)}


class Tiny(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def test_registered():
    for name in ("cwtm", "cwtm_permut", "cwtm_random", "dkpp"):
        assert name in distill.METHODS
    assert distill.bind("cwtm_random", {}) == {"beta": 0.5}
    assert distill.bind("dkpp", {}) == {"temperature": 4.0, "alpha": 0.9}


def test_cwtm_method_loss_is_eq5(batch):
    x, y = batch
    student, teacher = Tiny(0), Tiny(1)
    logits, terms = distill.create("cwtm", student, teacher)(x, y)
    q = torch.softmax(teacher(x), dim=1).max(dim=1).values.detach()
    by_hand = sum(q[i] / q.sum() * -torch.log_softmax(logits, 1)[i, y[i]] for i in range(6))
    assert set(terms) == {"weighted_ce"} and torch.isclose(terms["weighted_ce"], by_hand)


def test_cwtm_variants_run(batch):
    x, y = batch
    torch.manual_seed(0)
    _, permut = distill.create("cwtm_permut", Tiny(0), Tiny(1))(x, y)
    _, random = distill.create("cwtm_random", Tiny(0), None, beta=0.5)(x, y)
    for terms in (permut, random):
        assert terms["weighted_ce"].requires_grad and torch.isfinite(terms["weighted_ce"])
    with pytest.raises(ValueError, match="no teacher"):
        distill.create("cwtm_random", Tiny(0), Tiny(1))


def test_dkpp_method_is_kd_with_permuted_teacher(batch):
    x, y = batch
    student, teacher = Tiny(0), Tiny(1)
    method = distill.create("dkpp", student, teacher, temperature=2.0, alpha=0.9)
    torch.manual_seed(3)
    logits, terms = method(x, y)
    torch.manual_seed(3)
    target = dkpp_permute(teacher(x).detach())
    t = 2.0
    by_hand = 0.9 * t * t * (torch.softmax(target / t, 1) * (torch.log_softmax(target / t, 1)
                                                             - torch.log_softmax(logits / t, 1))).sum(1).mean()
    assert torch.isclose(terms["kd"], by_hand, atol=1e-6)
    assert torch.isclose(terms["ce"], 0.1 * F.cross_entropy(logits, y))
    # A CE-only stage runs no teacher and no permutation.
    assert set(method(x, y, Context(stage=Stage("warm", terms=("ce",))))[1]) == {"ce"}
