"""kdnb.analysis.sharpness.noisy_loss: the training loss under Gaussian weight noise (Huang et al. 2021, Fig. 4c).

The reference is a closed form: for a linear model :math:`f(x) = Wx + b` and the squared error, the expected loss
under independent noise :math:`W + \\sigma Z`, :math:`b + \\sigma z` is the clean loss plus
:math:`\\sigma^2 (\\|x\\|^2 + 1)` per output (averaged over examples and outputs). With the noise of each tensor
scaled by its RMS (``relative=True``) the two terms are weighted by rms(W)² and rms(b)².
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnb.analysis.sharpness import noise_generator, noisy_loss
from test_representation import resnet8_with_bn_statistics  # BN statistics set away from 0/1


def linear_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(5, 3).double()
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    targets = model(x).detach() + 0.1 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    return model, x, targets


@pytest.mark.parametrize("relative", [False, True])
def test_linear_model_matches_the_expected_loss(relative):
    model, x, targets = linear_problem()
    sigmas = [0.0, 0.1, 0.3]
    draws = 400
    curve = noisy_loss(model, (x, targets), sigmas, draws=draws, seed=1, relative=relative, loss_fn=F.mse_loss,
                       batch_size=16)
    with torch.no_grad():
        clean = F.mse_loss(model(x), targets).item()
        w_scale = model.weight.pow(2).mean().item() if relative else 1.0
        b_scale = model.bias.pow(2).mean().item() if relative else 1.0
        # E over noise of the per-output squared error adds sigma^2 (w_scale ||x||^2 + b_scale), averaged over examples
        extra = (w_scale * x.pow(2).sum(dim=1) + b_scale).mean().item()
    assert curve["clean"] == pytest.approx(clean, rel=1e-12)
    assert curve["mean"][0].item() == pytest.approx(clean, rel=1e-12) and curve["std"][0].item() < 1e-12
    for i, sigma in enumerate(sigmas[1:], start=1):
        expected = clean + sigma ** 2 * extra
        # Monte Carlo: mean of `draws` draws, within 4 standard errors
        standard_error = curve["std"][i].item() / draws ** 0.5
        assert abs(curve["mean"][i].item() - expected) < 4 * standard_error + 1e-12, (sigma, expected)
    assert curve["losses"].shape == (3, draws)


def test_state_dict_is_bit_identical_and_mode_restored():
    model = resnet8_with_bn_statistics()
    model.train()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (12,), generator=torch.Generator().manual_seed(2))
    curve = noisy_loss(model, [(x[:6], y[:6]), (x[6:], y[6:])], [0.0, 0.05], draws=2, seed=3)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before), "parameters and buffers restored exactly"
    assert model.training
    assert curve["mean"][1] != curve["mean"][0]  # the noise did act
    # the loss is computed in eval mode: BN running statistics, not batch statistics
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(x), y).item()
    assert curve["clean"] == pytest.approx(expected, rel=1e-5)


def test_restored_even_when_the_loss_fails():
    model, x, targets = linear_problem()
    before = copy.deepcopy(model.state_dict())
    calls = []

    def failing(outputs, labels):
        calls.append(1)
        if len(calls) > 1:  # the first call is the clean loss; the second runs on perturbed weights
            raise RuntimeError("boom")
        return F.mse_loss(outputs, labels)

    with pytest.raises(RuntimeError, match="boom"):
        noisy_loss(model, (x, targets), [0.5], draws=1, loss_fn=failing, batch_size=40)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_deterministic_common_random_numbers_and_seeds():
    model, x, targets = linear_problem()
    a = noisy_loss(model, (x, targets), [0.1, 0.2], draws=3, seed=5, loss_fn=F.mse_loss)
    b = noisy_loss(model, (x, targets), [0.1, 0.2], draws=3, seed=5, loss_fn=F.mse_loss)
    c = noisy_loss(model, (x, targets), [0.1, 0.2], draws=3, seed=6, loss_fn=F.mse_loss)
    assert torch.equal(a["losses"], b["losses"])
    assert not torch.equal(a["losses"], c["losses"])
    # common random numbers: draw i uses the same direction at every sigma, so each draw's excess loss over the
    # clean one is a quadratic in sigma plus a linear term: (L(0.2) - L0) - 2 (L(0.1) - L0) = 2 * 0.01 * q >= 0
    # for the same direction (q = its curvature term); for independent directions this has no fixed sign.
    excess = a["losses"] - a["clean"]
    assert torch.all(excess[1] - 2 * excess[0] >= -1e-12)
    z1 = torch.randn(4, generator=noise_generator(5, 0))
    assert torch.equal(z1, torch.randn(4, generator=noise_generator(5, 0)))
    assert not torch.equal(z1, torch.randn(4, generator=noise_generator(5, 1)))


def test_bad_arguments():
    model, x, targets = linear_problem()
    with pytest.raises(ValueError):
        noisy_loss(model, (x, targets), [0.1], draws=0, loss_fn=F.mse_loss)
    with pytest.raises(ValueError):
        noisy_loss(model, (x, targets), [-0.1], loss_fn=F.mse_loss)
    with pytest.raises(ValueError, match="no examples"):
        noisy_loss(model, [], [0.1], loss_fn=F.mse_loss)
