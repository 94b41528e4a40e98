"""kdnb.analysis.representation: linear CKA (Kornblith et al. 2019) and active neurons (Cui et al. 2019), the
analyses of Huang et al. (2021) Fig. 4(a, b).

CKA references are the definitions, written here independently of the implementation: the HSIC estimator with an
explicit centring matrix H (biased, Gretton et al. 2005, as Kornblith et al. use it), Song et al. (2012)'s
unbiased HSIC formula, and Pearson's r² for one feature each. Active-subspace references are gradients built with
a known covariance and the closed-form gradient of the cross-entropy of a linear head.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb import models
from kdnb.analysis.representation import (active_neurons, active_subspace, collect_features, feature_matrix,
                                          linear_cka, loss_gradients, representation_head)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012), Eq. 5: kernels with zeroed diagonals."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    value = np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one
    return float(value) / (n * (n - 3))


def cka_reference(x: torch.Tensor, y: torch.Tensor, unbiased: bool) -> float:
    xn, yn = x.reshape(len(x), -1).numpy(), y.reshape(len(y), -1).numpy()
    k, l = xn @ xn.T, yn @ yn.T
    hsic = hsic_unbiased if unbiased else hsic_biased
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


# ------------------------------------------------------------------------------------------------ CKA
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("shape", [(6, 10, 7), (30, 3, 5)])  # n < d (Gram path) and n > d (feature path)
def test_cka_against_the_hsic_formulas(unbiased, shape):
    n, d1, d2 = shape
    x = rand(n, d1, seed=1)
    y = x[:, :min(d1, d2)] @ rand(min(d1, d2), d2, seed=2) + 0.5 * rand(n, d2, seed=3)  # related, not equal
    expected = cka_reference(x, y, unbiased)
    assert 0.05 < abs(expected) < 0.999
    assert linear_cka(x, y, unbiased=unbiased) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_cka_of_one_feature_each_is_squared_correlation():
    x, y = rand(50, 1, seed=4), rand(50, 1, seed=5) + 0.7 * rand(50, 1, seed=4)
    r = np.corrcoef(x[:, 0].numpy(), y[:, 0].numpy())[0, 1]
    assert linear_cka(x, y) == pytest.approx(r ** 2, rel=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_invariances(unbiased):
    x, y = rand(40, 8, seed=6), rand(40, 5, seed=7) + rand(40, 8, seed=6)[:, :5]
    base = linear_cka(x, y, unbiased)
    q, _ = torch.linalg.qr(rand(8, 8, seed=8))  # orthogonal
    assert linear_cka(x, x, unbiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(y, x, unbiased) == pytest.approx(base, rel=1e-12)
    assert linear_cka(x @ q, y, unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(3.7 * x, 0.2 * y, unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 5.0, y - 2.0, unbiased) == pytest.approx(base, rel=1e-9)  # features are centred
    stretched = x * torch.linspace(0.1, 10, 8, dtype=torch.float64)  # not isotropic: CKA must change
    assert abs(linear_cka(stretched, y, unbiased) - base) > 1e-3


def test_cka_edge_cases_and_float32_input():
    x = rand(10, 4, seed=9)
    assert linear_cka(x, torch.ones(10, 3)) == 0.0  # a constant representation has no similarity
    assert linear_cka(x.float(), x.float()) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(rand(10, 2, 3, 3, seed=1), rand(10, 4, seed=2)) == pytest.approx(
        cka_reference(rand(10, 2, 3, 3, seed=1), rand(10, 4, seed=2), False), rel=1e-10)  # maps are flattened
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:5])
    with pytest.raises(ValueError, match="4 examples"):
        linear_cka(x[:3], x[:3], unbiased=True)


def test_feature_matrix_selects_channels_and_pools():
    maps = rand(5, 6, 3, 3, seed=10)
    index = torch.tensor([4, 1])
    mask = torch.zeros(6, dtype=torch.bool)
    mask[[1, 4]] = True
    assert torch.equal(feature_matrix(maps, index), maps[:, [4, 1]].reshape(5, -1))
    assert torch.equal(feature_matrix(maps, mask), maps[:, [1, 4]].reshape(5, -1))
    assert torch.allclose(feature_matrix(maps, [1, 4], pooled=True), maps[:, [1, 4]].mean(dim=(2, 3)))
    assert feature_matrix(maps).shape == (5, 54)
    assert torch.equal(feature_matrix(maps[:, :, 0, 0], index), maps[:, [4, 1], 0, 0])


# ------------------------------------------------------------------------------------------------ active neurons
def gradients_with_spectrum(eigenvalues: list[float], n: int = 200, d: int = 7) -> torch.Tensor:
    """n × d gradients whose (1/n) GᵀG has exactly ``eigenvalues`` (then zeros)."""
    r = len(eigenvalues)
    scores, _ = torch.linalg.qr(rand(n, r, seed=11))          # orthonormal columns
    directions, _ = torch.linalg.qr(rand(d, d, seed=12))       # orthonormal basis of R^d
    return (scores * (n ** 0.5) * torch.tensor(eigenvalues, dtype=torch.float64).sqrt()) @ directions[:, :r].T


def test_active_subspace_counts_by_energy():
    g = gradients_with_spectrum([100.0, 10.0, 1.0, 0.1])
    result = active_subspace(g)  # τ = 0.05: tails 11.1 (10 %), 1.1 (1 %) -> 2
    assert result["count"] == 2 and result["dim"] == 7 and result["samples"] == 200
    assert torch.allclose(result["eigenvalues"][:4], torch.tensor([100.0, 10.0, 1.0, 0.1], dtype=torch.float64))
    assert float(result["eigenvalues"][4:].abs().max()) < 1e-10
    assert active_subspace(g, threshold=0.2)["count"] == 1
    assert active_subspace(g, threshold=0.005)["count"] == 3
    assert active_subspace(g, threshold=0.0)["count"] == 4  # τ = 0: the rank
    assert active_subspace(torch.zeros(5, 3))["count"] == 0
    with pytest.raises(ValueError):
        active_subspace(g, threshold=1.0)


def test_loss_gradients_of_a_linear_head_are_the_closed_form():
    head = nn.Linear(6, 4).double()
    h, y = rand(9, 6, seed=13), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0])
    with torch.no_grad():
        expected = (F.softmax(head(h), dim=1) - F.one_hot(y, 4).double()) @ head.weight
    assert torch.allclose(loss_gradients(head, h, y, batch_size=4), expected, atol=1e-12)
    assert head.weight.grad is None


def resnet8_with_bn_statistics() -> nn.Module:
    """A ResNet-8 (seed 0) whose BatchNorm running statistics are not the initial 0/1, so that a computation
    that moved or ignored them would show."""
    torch.manual_seed(0)
    model = models.create("resnet8", num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def resnet_and_data():
    model = resnet8_with_bn_statistics()
    x = torch.randn(48, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (48,), generator=torch.Generator().manual_seed(2))
    return model, (x, y)


def test_pooled_representation_has_at_most_classes_minus_one_active_directions(resnet_and_data):
    """∇c = Wᵀ(p − e_y) with Σ(p − e_y) = 0: rank ≤ K − 1 = 9 on the 64-wide pooled vector (and on the
    last map, where the gradient is constant over space); the pre-ReLU map escapes the bound."""
    model, data = resnet_and_data
    for feature in ("pooled", "stage3"):
        result = active_neurons(model, data, feature=feature, threshold=0.0, batch_size=16)
        top = float(result["eigenvalues"][0])
        assert result["count"] <= 9 and float(result["eigenvalues"][9:].max()) < 1e-9 * top, feature
    pre = active_neurons(model, data, feature="stage3.pre", threshold=0.0)
    assert pre["dim"] == 64 * 8 * 8 and pre["count"] > 9


def test_active_neurons_of_a_channel_group(resnet_and_data):
    model, (x, y) = resnet_and_data
    model.train()
    channels = torch.arange(0, 64, 2)
    result = active_neurons(model, (x, y), channels=channels, batch_size=20)
    assert model.training, "the model's mode is restored"
    with torch.no_grad():
        model.eval()
        pooled = model.forward_features(x)[1]["pooled"]
        model.train()
    expected = active_subspace(loss_gradients(model.classifier, pooled, y)[:, channels])
    assert result["dim"] == 32 and result["count"] == expected["count"]
    assert torch.allclose(result["eigenvalues"], expected["eigenvalues"], rtol=1e-5, atol=1e-12)


def test_collect_features_and_heads(resnet_and_data):
    model, (x, y) = resnet_and_data
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    collected = collect_features(model, batches, ["pooled", "stage3"])
    with torch.no_grad():
        logits, features = model.eval().forward_features(x)
    assert torch.allclose(collected["pooled"], features["pooled"], atol=1e-6)
    assert torch.equal(collected["labels"], y)
    for name in ("pooled", "stage3", "stage3.pre"):
        with torch.no_grad():
            assert torch.allclose(representation_head(model, name)(features[name]), logits, atol=1e-5), name
    with pytest.raises(ValueError, match="no head"):
        representation_head(model, "stage2")
    with pytest.raises(ValueError, match="no feature"):
        collect_features(model, (x, y), ["nope"])
