"""The entropy estimator against closed forms on linear feature maps (shared/notes/estimator.md §8, T1–T3, T5,
T6). The references below are written from the closed forms, not from kdnb.concepts.

Notation: a linear map f(x) = W x over the image's scalars; C_g = Σ_{i ∈ cell g} ‖W e_i‖², C_tot = Σ_g C_g,
C̄ = C_tot / G. Tiny maps (8 × 8 cells of 2 × 2 px, one channel, D = 64 features) keep the whole file a few
seconds on one CPU thread.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdnb.concepts import EntropyResult, estimate_entropy, feature_fn, run_entropy, sigma_at, upsample
from kdnb.concepts import entropy_of as kdnb_entropy_of

HALF = 0.5 * math.log(2 * math.pi * math.e)
CPU = "cpu"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run faster on one thread


def linear_map(grid: int = 8, px: int = 2, features: int = 64, seed: int = 0, spread: float = 0.5,
               bright: float = 1.0):
    """A random linear map whose cells have log-normal sensitivities and a brighter central block; returns
    (f, C per cell (grid, grid) in float64, image side)."""
    gen = torch.Generator().manual_seed(seed)
    side = grid * px
    log_c = torch.randn(grid, grid, generator=gen, dtype=torch.float64) * spread
    lo, hi = grid // 2 - grid // 8 - 1, grid // 2 + grid // 8 + 1
    log_c[lo:hi, lo:hi] += bright
    scale = torch.exp(0.5 * log_c).repeat_interleave(px, 0).repeat_interleave(px, 1).flatten()
    w = torch.randn(features, side * side, generator=gen, dtype=torch.float64) * scale / side
    c = (w ** 2).sum(dim=0).reshape(grid, px, grid, px).sum(dim=(1, 3))  # C_g from the columns of W
    w32 = w.float()
    return (lambda x: x.flatten(1) @ w32.T), c, side


def images(n: int, side: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- T6
def test_t6_constants_and_upsampling():
    assert float(kdnb_entropy_of(0.01)) == pytest.approx(-3.1862, abs=5e-5)
    assert float(kdnb_entropy_of(1e-3)) == pytest.approx(-5.4888, abs=5e-5)
    assert float(sigma_at(-2.8)) == pytest.approx(0.0147143, rel=1e-5)
    assert math.log(0.0147143) + HALF == pytest.approx(-2.8, abs=1e-5)
    cells = torch.arange(256, dtype=torch.float32).reshape(1, 16, 16)
    up = upsample(cells, (224, 224))[0, 0]
    expected = cells[0].repeat_interleave(14, 0).repeat_interleave(14, 1)  # cells of exactly 14 x 14 px
    assert torch.equal(up, expected)


# --------------------------------------------------------------------------------------------- T1
def test_t1_stationary_point_of_the_code_style_loss():
    """σ_g* = σ0 · sqrt(λ C̄ / (2 C_g)): run the faithful SGD long, keeping the last iterate (target=None)."""
    f, c, side = linear_map(seed=3)
    lam, sigma0 = 7.0, 0.01
    result = estimate_entropy(f, images(1, side), 8, relu=False, target=None, steps=400, extra_steps=0, lr=1e-4,
                              samples=128, sf_samples=4096, device=CPU)
    reference = sigma0 * torch.sqrt(lam * c.mean() / (2 * c))
    rel = (result.sigma[0].double() - reference).abs() / reference
    assert float(rel.mean()) < 0.02, float(rel.mean())
    assert float(rel.max()) < 0.08, float(rel.max())


# --------------------------------------------------------------------------------------------- T2
def t2_errors(result: EntropyResult, c: torch.Tensor) -> torch.Tensor:
    est = result.entropy[0].double()
    reference = -0.5 * (torch.log(c) - torch.log(c).mean())  # H_g − mean H
    return ((est - est.mean()) - reference).abs()


def test_t2_converged_mode_matches_the_scale_free_optimum():
    """H_g − mean H = −½ (log C_g − mean log C), within 0.05 nats mean absolute error and 0.1 in the worst cell,
    for any scale of W; the mean entropy sits at the target."""
    for seed, gain in ((5, 1.0), (6, 30.0)):
        f, c, side = linear_map(seed=seed)
        g = (lambda x, f=f, gain=gain: gain * f(x))
        result = estimate_entropy(g, images(1, side, seed=seed), 8, mode="converged", relu=False, samples=64,
                                  device=CPU)
        err = t2_errors(result, c)
        assert float(err.mean()) < 0.05, (seed, float(err.mean()))
        assert float(err.max()) < 0.1, (seed, float(err.max()))
        assert float(result.mean_entropy[0]) == pytest.approx(-2.8, abs=1e-4)
        assert not bool(result.pinned.any())


def test_t2_concepts_follow_the_sensitivity_criterion():
    """With one image's own background mean as H̄: a cell is a concept at b iff C_g > e^{2b} · geomean_bg(C)."""
    from kdnb.concepts import count_concepts

    f, c, side = linear_map(seed=11, spread=0.8, bright=1.5)
    result = estimate_entropy(f, images(1, side), 8, mode="converged", relu=False, samples=64, device=CPU)
    fg = torch.zeros(8, 8, dtype=torch.bool)
    fg[2:6, 2:6] = True
    log_c = torch.log(c)
    threshold = 0.4 + log_c[~fg].mean()  # log(e^{2b} geomean_bg C), b = 0.2
    clear = (log_c - threshold).abs() > 0.2  # leave out cells within estimator error of the boundary
    h_bar = result.entropy[0][~fg].mean()
    concepts = (h_bar - result.entropy[0]) > 0.2
    assert torch.equal(concepts[clear], (log_c > threshold)[clear])
    n_fg, n_bg = count_concepts(result.entropy, fg, h_bar)
    assert int(n_fg[0]) == int((concepts & fg).sum()) and int(n_bg[0]) == int((concepts & ~fg).sum())


# --------------------------------------------------------------------------------------------- T3
def gradient_flow_sigma(c: torch.Tensor, lam: float, sigma0: float, target: float) -> tuple[torch.Tensor, float]:
    """σ_g(t*) on the gradient flow u_g(t) = u*_g + (σ0² − u*_g) e^{−4 a_g t} (u = σ², t = lr · steps), with t*
    where the mean entropy reaches ``target`` (bisection)."""
    g = c.numel()
    a = c / (sigma0 ** 2 * c.sum())
    u_star = lam * sigma0 ** 2 * c.sum() / (2 * g * c)

    def mean_h(t: float) -> float:
        u = u_star + (sigma0 ** 2 - u_star) * torch.exp(-4 * a * t)
        return float(0.5 * torch.log(u).mean() + HALF)

    lo, hi = 0.0, 1.0
    while mean_h(hi) < target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_h(mid) < target else (lo, mid)
    t = (lo + hi) / 2
    return torch.sqrt(u_star + (sigma0 ** 2 - u_star) * torch.exp(-4 * a * t)), t


def test_t3_faithful_mode_follows_the_gradient_flow():
    """The released SGD path, stopped at mean H = −2.8, within 5 % mean relative error in σ of the ODE."""
    f, c, side = linear_map(seed=7)
    result = estimate_entropy(f, images(2, side), 8, relu=False, samples=128, sf_samples=2048, device=CPU)
    reference, t_star = gradient_flow_sigma(c, 7.0, 0.01, -2.8)
    lr = result.settings["lr"]
    assert lr == pytest.approx(1e-4 * 64 / 256)
    for i in range(2):
        rel = (result.sigma[i].double() - reference).abs() / reference
        assert float(rel.mean()) < 0.05, float(rel.mean())
        assert abs(int(result.step[i]) - t_star / lr) <= 2  # the kept step is the flow's time to the target
    assert torch.equal(result.lam, torch.full((2,), 7.0))  # reached within 60 steps: no boost
    assert float((result.mean_entropy + 2.8).abs().max()) < 0.02


# --------------------------------------------------------------------------------------------- T5
class TinyNet(nn.Module):
    """conv → ReLU → linear: per-sample, non-linear, cheap."""

    def __init__(self, side: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * side * side, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("mode", ["faithful", "converged", "linearised"])
def test_t5_batched_equals_per_image(mode):
    """Identical noise (each image's own seed), several forward blocks per step, per-image λ: one image is
    boosted (λ = 2 does not reach the target in 60 steps), the others stop at step 60 — the batched run equals
    three single-image runs (σ to 1e-6), so neither batching nor another image's stopping changes a trajectory."""
    side = 16
    net = TinyNet(side).eval().requires_grad_(False)
    x = images(3, side, seed=4)
    seeds = [11, 22, 33]
    common = dict(chunk=8, max_batch=16, device=CPU)  # 2 images per forward pass
    common.update(dict(vjps=24) if mode == "linearised" else dict(samples=24, sf_samples=24))
    per_mode = dict(converged_steps=15) if mode == "converged" else dict(lam=[7.0, 2.0, 7.0])
    batched = estimate_entropy(net, x, 4, mode=mode, image_seeds=seeds, **common, **per_mode)
    worst = {}
    for i in range(3):
        lam_i = per_mode if mode == "converged" else dict(lam=per_mode["lam"][i])
        alone = estimate_entropy(net, x[i:i + 1], 4, mode=mode, image_seeds=[seeds[i]], **common, **lam_i)
        for name in ("sigma", "entropy", "history", "s_f") + (("sensitivity",) if mode == "linearised" else ()):
            a, b = getattr(batched, name)[i], getattr(alone, name)[0]
            assert torch.equal(torch.isnan(a), torch.isnan(b)), name
            diff = (a - b).abs() / (b.abs() if name in ("history", "s_f", "sensitivity") else 1.0)  # relative
            worst[name] = max(worst.get(name, 0.0), float(diff.nan_to_num().max()))
        assert int(batched.step[i]) == int(alone.step[0])
    # σ (what the estimator returns) to 1e-6 absolute; measured ~4e-8 (σ ≈ 0.01, i.e. ~3e-6 relative: fp32 GEMMs
    # of different batch shapes round differently, over 80 steps). Entropies, log σ, to 1e-5 absolute (measured
    # ~3e-6). The distortion history and s_f are relative: a feature difference of ~1e-2 of the feature carries
    # only ~1e-5 relative precision in fp32 (measured ~1e-5 for the distortion, ~1e-11 for s_f).
    print(f"batched vs per-image ({mode}): max |Δ| {worst}")
    assert worst["sigma"] <= 1e-6, worst
    assert worst["entropy"] <= 1e-5, worst
    assert max(worst["history"] if mode == "converged" else 0.0, worst["s_f"]) <= 1e-4, worst
    if mode != "converged":
        assert worst["history"] <= 1e-5, worst  # mean entropies
    if mode != "converged":
        assert batched.lam.tolist() == [7.0, 3.0, 7.0]  # the slow image was boosted ×1.5 ...
        assert bool(torch.isnan(batched.history[[0, 2], 60:]).all())  # ... the others stopped after 60 steps
        assert not bool(torch.isnan(batched.history[1]).any())


# --------------------------------------------------------------------------------------------- linearised proxy
def test_linearised_sensitivities_are_the_columns_of_w():
    """C_g = Σ_{i ∈ g} ‖W e_i‖² / D from random vector–Jacobian products (unbiased; 4 % per cell at 256)."""
    f, c, side = linear_map(seed=7)
    result = estimate_entropy(f, images(1, side), 8, mode="linearised", relu=False, vjps=256, device=CPU)
    estimate = result.sensitivity[0].double() * 64  # D = 64 features
    assert float(estimate.sum() / c.sum()) == pytest.approx(1.0, abs=0.03)
    assert float(((estimate - c).abs() / c).mean()) < 0.08
    assert float(result.s_f[0]) == pytest.approx(0.01 ** 2 * float(c.sum()) / 64, rel=0.03)


def test_linearised_proxy_predicts_both_modes_on_a_linear_map():
    """predict="faithful": the released loop on the expected gradient follows the T3 flow (5 % in σ);
    predict="converged": the T2 optimum (0.05 nats mean, 0.1 worst)."""
    f, c, side = linear_map(seed=7)
    x = images(2, side)
    path = estimate_entropy(f, x, 8, mode="linearised", relu=False, vjps=256, device=CPU)
    reference, t_star = gradient_flow_sigma(c, 7.0, 0.01, -2.8)
    for i in range(2):
        assert float(((path.sigma[i].double() - reference).abs() / reference).mean()) < 0.05
        assert abs(int(path.step[i]) - t_star / path.settings["lr"]) <= 2
    optimum = estimate_entropy(f, x, 8, mode="linearised", predict="converged", relu=False, vjps=256, device=CPU)
    err = t2_errors(optimum, c)
    assert float(err.mean()) < 0.05 and float(err.max()) < 0.1
    assert float(optimum.mean_entropy[0]) == pytest.approx(-2.8, abs=1e-4)
    with pytest.raises(ValueError, match="predict"):
        estimate_entropy(f, x, 8, mode="linearised", predict="optimum")
    with pytest.raises(TypeError, match="samples"):
        estimate_entropy(f, x, 8, mode="linearised", samples=8)


def test_default_seeds_are_per_image():
    f, _, side = linear_map()
    x = images(2, side)
    both = estimate_entropy(f, x, 8, relu=False, samples=8, sf_samples=8, steps=5, extra_steps=0, seed=3,
                            device=CPU)
    second = estimate_entropy(f, x[1:], 8, relu=False, samples=8, sf_samples=8, steps=5, extra_steps=0,
                              image_seeds=[3 * 1_000_003 + 1], device=CPU)
    assert torch.allclose(both.sigma[1], second.sigma[0], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------- contracts
def test_zero_normaliser_rejects_the_image():
    """A feature that no perturbation moves (ReLU of a negative constant) has s_f = 0: rejected, NaN maps."""
    f, _, side = linear_map()
    dead = lambda x: torch.cat([f(x[:1]), -1.0 - 0 * f(x[1:])])  # noqa: E731  (image 1's features stay at -1)
    result = estimate_entropy(dead, images(2, side), 8, samples=8, sf_samples=8, steps=3, extra_steps=0,
                              device=CPU)
    assert result.valid.tolist() == [True, False]
    assert bool(torch.isnan(result.entropy[1]).all()) and bool(torch.isfinite(result.entropy[0]).all())
    assert result.sigma.shape == result.entropy.shape == (2, 8, 8)


def test_results_are_shaped_and_options_are_checked():
    f, _, side = linear_map()
    result = estimate_entropy(f, images(2, side), 4, samples=4, sf_samples=4, steps=2, extra_steps=0, device=CPU)
    assert result.sigma.shape == (2, 4, 4) and result.entropy.shape == (2, 4, 4)
    assert torch.allclose(result.entropy, torch.log(result.sigma) + HALF)
    assert torch.equal(EntropyResult.from_dict(result.to_dict()).sigma, result.sigma)
    with pytest.raises(TypeError, match="lamda"):
        estimate_entropy(f, images(1, side), 4, lamda=3)
    with pytest.raises(TypeError, match="boost"):
        estimate_entropy(f, images(1, side), 4, mode="converged", boost=2)
    with pytest.raises(ValueError, match="faithful"):
        estimate_entropy(f, images(1, side), 4, mode="exact")


def test_clamp_floor_is_flagged():
    """A cell carrying most of the sensitivity flips sign in one SGD step and is pinned at σ = 1e-3."""
    side, grid = 8, 4
    w = torch.zeros(8, side * side)
    w[:, 0] = 30.0  # pixel (0, 0): cell (0, 0) holds nearly all of C_tot
    w[:, 1:] = 0.01
    result = estimate_entropy(lambda x: x.flatten(1) @ w.T, images(1, side), grid, relu=False, samples=16,
                              sf_samples=64, lr=1e-4, device=CPU)
    assert bool(result.pinned[0, 0, 0])
    assert float(result.sigma[0, 0, 0]) == pytest.approx(1e-3)


def test_strict_fp32_is_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    from kdnb.concepts import strict_fp32

    with strict_fp32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


class FeatureNet(nn.Module):
    feature_names = ("fc1.pre",)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(64, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward_features(self, x):
        pre = self.fc1(x.flatten(1))
        return self.fc2(torch.relu(pre)), {"fc1.pre": pre}


class FakeRun:
    """What run_entropy needs of a Run: a key for the cache and the model at a checkpoint."""

    def __init__(self) -> None:
        self.loads = []
        self.spec = self

    def key(self) -> str:
        return "fake-run-0001"

    def model(self, epoch=None):
        self.loads.append(epoch)
        return FeatureNet()


def test_feature_fn_and_the_analysis_cache(tmp_path):
    net = FeatureNet()
    fn = feature_fn(net, "fc1.pre")
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    x = images(2, 8)
    assert torch.equal(fn(x), net.fc1(x.flatten(1)))
    with pytest.raises(ValueError, match="fc1.pre"):
        feature_fn(net, "fc9")
    run = FakeRun()
    options = dict(samples=4, sf_samples=4, steps=3, extra_steps=0, device=CPU)
    first = run_entropy(run, "fc1.pre", x, 4, epoch=1, root=tmp_path, **options)
    again = run_entropy(run, "fc1.pre", x, 4, epoch=1, root=tmp_path, **options)
    assert run.loads == [1]  # computed once, then read from the cache
    assert torch.equal(first.sigma, again.sigma) and isinstance(again, EntropyResult)
    run_entropy(run, "fc1.pre", x, 4, epoch=2, root=tmp_path, **options)
    assert run.loads == [1, 2]


def test_estimator_bench_runs():
    from kdnb import bench

    entry = bench.estimator_batched_vs_loop(images=2, samples=2, steps=2, repeats=1)
    assert entry["name"] == "estimator_batched_vs_loop" and entry["ratio"] > 0
    assert entry["batched_images_per_s"] > 0 and entry["loop_images_per_s"] > 0
    assert bench.QUICK["estimator"]["repeats"] == 1 and "estimator" in bench.BENCHES
