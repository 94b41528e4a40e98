"""Tests for kdnb.distill (KD closed forms, teacher handling), kdnb.analysis (stats, claims), kdnb.profiles,
kdnb.setup, kdnb.glue and the bench command."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as sps
from torch import nn

import kdnb
from kdnb import distill, glue, profiles
from kdnb.analysis import (INCONCLUSIVE, NOT_REPRODUCED, PREMISE_UNMET, REPRODUCED, Claim, PairedComparison, Summary,
                           ledger, paired, summarize, verdict_for_improvement)
from kdnb.distill import CE, KD, kd_divergence, soft_targets

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ KD closed forms
def test_kd_divergence_zero_for_equal_logits():
    torch.manual_seed(0)
    z = torch.randn(5, 7) * 3
    for temperature in (1.0, 4.0, 20.0):
        assert kd_divergence(z, z.clone(), temperature).item() == pytest.approx(0.0, abs=1e-6)
    # and positive otherwise (Gibbs' inequality)
    assert kd_divergence(z, torch.randn(5, 7), 4.0).item() > 0


def _two_class_closed_form(zs, zt, temperature):
    """T^2 KL(p_t || p_s) for two classes, where p(class 0) = sigmoid((z0 - z1) / T)."""
    def sigmoid(u):
        return 1.0 / (1.0 + math.exp(-u))

    ps0 = sigmoid((zs[0] - zs[1]) / temperature)
    pt0 = sigmoid((zt[0] - zt[1]) / temperature)
    kl = pt0 * math.log(pt0 / ps0) + (1 - pt0) * math.log((1 - pt0) / (1 - ps0))
    return temperature**2 * kl


def test_kd_divergence_two_class_closed_form():
    student = [[1.0, -0.5], [0.2, 0.3], [-2.0, 2.0]]
    teacher = [[3.0, 0.0], [-1.0, 1.0], [0.5, 0.5]]
    for temperature in (1.0, 2.0, 4.0):
        expected = sum(_two_class_closed_form(s, t, temperature) for s, t in zip(student, teacher)) / 3
        got = kd_divergence(torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64),
                            temperature).item()
        assert got == pytest.approx(expected, rel=1e-10)


def test_kd_divergence_by_hand_multiclass():
    torch.manual_seed(1)
    zs, zt, temperature = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64), 3.0
    ps = torch.softmax(zs / temperature, 1)
    pt = torch.softmax(zt / temperature, 1)
    expected = temperature**2 * (pt * (pt.log() - ps.log())).sum(1).mean()  # batch mean, not class mean
    assert kd_divergence(zs, zt, temperature).item() == pytest.approx(expected.item(), rel=1e-10)


def test_kd_divergence_is_shift_invariant():
    torch.manual_seed(2)
    zs, zt = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    base = kd_divergence(zs, zt, 4.0).item()
    shifted = kd_divergence(zs + 7.5, zt - 3.0, 4.0).item()
    per_row = kd_divergence(zs + torch.tensor([[1.0], [-2.0], [5.0]], dtype=torch.float64), zt, 4.0).item()
    assert shifted == pytest.approx(base, rel=1e-10)
    assert per_row == pytest.approx(base, rel=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 10.0])
def test_kd_gradient_closed_form(temperature):
    torch.manual_seed(3)
    batch = 6
    zs = torch.randn(batch, 5, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(batch, 5, dtype=torch.float64)
    kd_divergence(zs, zt, temperature).backward()
    ps = torch.softmax(zs.detach() / temperature, 1)
    pt = torch.softmax(zt / temperature, 1)
    expected = temperature * (ps - pt) / batch
    torch.testing.assert_close(zs.grad, expected, rtol=1e-9, atol=1e-12)


def test_soft_targets():
    z = torch.tensor([[4.0, 1.0, 0.0, -2.0]])
    entropies = []
    for temperature in (0.5, 1.0, 2.0, 4.0, 16.0):
        q = soft_targets(z, temperature)
        assert q.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.all(q > 0)
        torch.testing.assert_close(q, torch.softmax(z / temperature, -1))
        entropies.append(-(q * q.log()).sum().item())
    assert all(a < b for a, b in zip(entropies, entropies[1:]))
    assert entropies[-1] < math.log(4) and entropies[-1] > 0.95 * math.log(4)  # approaches uniform
    # The argmax never changes with T.
    assert soft_targets(z, 100.0).argmax().item() == 0


class Linear(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x))


def _batch():
    torch.manual_seed(10)
    return torch.randn(8, 4), torch.randint(0, 3, (8,))


def test_kd_alpha_zero_is_plain_ce():
    x, y = _batch()
    kd = KD(Linear(0), Linear(1), temperature=4.0, alpha=0.0)
    ce = CE(Linear(0))
    logits_kd, terms_kd = kd(x, y)
    logits_ce, terms_ce = ce(x, y)
    torch.testing.assert_close(logits_kd, logits_ce)
    assert terms_kd["kd"].item() == 0.0
    assert sum(terms_kd.values()).item() == pytest.approx(terms_ce["ce"].item(), rel=1e-6)
    assert terms_ce["ce"].item() == pytest.approx(F.cross_entropy(logits_ce, y).item(), rel=1e-6)


@pytest.mark.parametrize("alpha, temperature", [(0.9, 4.0), (0.3, 2.0), (1.0, 1.0)])
def test_kd_alpha_weighting(alpha, temperature):
    x, y = _batch()
    student, teacher = Linear(0), Linear(1)
    method = KD(student, teacher, temperature=temperature, alpha=alpha)
    logits, terms = method(x, y)
    assert set(terms) == {"ce", "kd"}
    with torch.no_grad():
        teacher_logits = teacher(x)
    assert terms["ce"].item() == pytest.approx((1 - alpha) * F.cross_entropy(logits, y).item(), rel=1e-6, abs=1e-9)
    assert terms["kd"].item() == pytest.approx(alpha * kd_divergence(logits, teacher_logits, temperature).item(),
                                               rel=1e-6)
    assert terms["kd"].item() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(alpha=-0.1), "alpha"), (dict(alpha=1.5), "alpha"),
])
def test_kd_invalid_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KD(Linear(0), Linear(1), **kwargs)


def test_kd_needs_teacher_and_create_errors():
    with pytest.raises(ValueError, match="teacher"):
        KD(Linear(0))
    with pytest.raises(ValueError, match="teacher"):
        distill.create("kd", Linear(0))
    with pytest.raises(ValueError) as error:
        distill.create("dkd", Linear(0), Linear(1))
    assert "ce" in str(error.value) and "kd" in str(error.value)
    assert isinstance(distill.create("KD", Linear(0), Linear(1), temperature=2), KD)
    names = distill.available()  # sorted; later parts register more methods
    assert names == sorted(names) and {"ce", "dml", "kd"} <= set(names)


def test_teacher_is_frozen_hidden_and_stays_in_eval():
    student, teacher = Linear(0), Linear(1)
    teacher.train()
    method = KD(student, teacher)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    method.train()
    assert method.student.training and not teacher.training
    method.eval()
    method.train(True)
    assert not teacher.training
    assert all(k.startswith("student.") for k in method.state_dict())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in method.parameters()}
    assert not teacher_ids & {id(p) for p in method.trainable()}


def test_teacher_unchanged_by_training_steps():
    student, teacher = Linear(0), Linear(1)
    method = KD(student, teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # includes BN running statistics
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5, momentum=0.9)
    method.train()
    for _ in range(3):
        x, y = _batch()
        optimizer.zero_grad()
        sum(method(x, y)[1].values()).backward()
        optimizer.step()
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert teacher.fc.weight.grad is None


# ------------------------------------------------------------------------------------------------- stats
def test_summarize_matches_t_interval():
    values = [0.91, 0.93, 0.90, 0.95]
    s = summarize(values)
    x = np.array(values)
    half = sps.t.ppf(0.975, df=3) * x.std(ddof=1) / math.sqrt(4)
    assert s.n == 4 and s.level == 0.95
    assert s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.std == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert s.ci_low == pytest.approx(x.mean() - half, rel=1e-12)
    assert s.ci_high == pytest.approx(x.mean() + half, rel=1e-12)
    s90 = summarize(values, level=0.9)
    assert s90.ci_high - s90.ci_low < s.ci_high - s.ci_low
    assert s90.ci_high - s90.mean == pytest.approx(sps.t.ppf(0.95, df=3) * x.std(ddof=1) / 2, rel=1e-12)


def test_summarize_edge_cases():
    one = summarize([0.5])
    assert one.mean == 0.5 and one.n == 1
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    assert one.format() == "0.50 (n=1)"
    with pytest.raises(ValueError):
        summarize([])
    same = summarize([2.0, 2.0, 2.0])
    assert same.std == 0 and same.ci_low == same.ci_high == 2.0
    assert summarize([0.9123, 0.9163, 0.9103]).format(scale=100) == "91.30 ± 0.31 (n=3)"


def test_paired_matches_ttest_rel():
    a = [0.91, 0.92, 0.95, 0.90]
    b = [0.90, 0.90, 0.93, 0.91]
    comparison = paired(a, b)
    diff = np.array(a) - np.array(b)
    expected = summarize(diff)
    assert comparison.difference == expected
    assert comparison.difference.mean == pytest.approx(diff.mean())
    assert comparison.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
    # order matters: b - a flips the difference, same p-value
    flipped = paired(b, a)
    assert flipped.difference.mean == pytest.approx(-comparison.difference.mean)
    assert flipped.p_value == pytest.approx(comparison.p_value)
    assert "p=" in comparison.format() and "CI" in comparison.format()


def test_paired_edge_cases():
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])
    assert math.isnan(paired([1.0, 2.0], [1.0, 2.0]).p_value)
    single = paired([1.0], [0.5])
    assert single.difference.n == 1 and math.isnan(single.p_value)


def test_paired_differences_without_spread_have_no_p_value_and_no_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's precision-loss warning would land in a notebook's output
        same_gain = paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert same_gain.difference.mean == 1.0 and math.isnan(same_gain.p_value)
    assert verdict_for_improvement(same_gain) == INCONCLUSIVE


def _comparison(low, high, n=3):
    return PairedComparison(Summary((low + high) / 2, 0.1, n, low, high), 0.01)


def test_verdict_for_improvement():
    assert verdict_for_improvement(_comparison(0.01, 0.05)) == REPRODUCED
    assert verdict_for_improvement(_comparison(-0.05, -0.01)) == NOT_REPRODUCED
    assert verdict_for_improvement(_comparison(-0.01, 0.05)) == INCONCLUSIVE
    assert verdict_for_improvement(_comparison(0.0, 0.05)) == INCONCLUSIVE  # touching zero is not "above"
    assert verdict_for_improvement(_comparison(0.01, 0.05, n=1)) == INCONCLUSIVE
    assert verdict_for_improvement(paired([1.0], [0.0])) == INCONCLUSIVE
    # From real data: a consistent improvement over 3 seeds is reproduced.
    assert verdict_for_improvement(paired([0.80, 0.81, 0.82], [0.70, 0.70, 0.72])) == REPRODUCED
    assert verdict_for_improvement(paired([0.70, 0.70, 0.72], [0.80, 0.81, 0.82])) == NOT_REPRODUCED
    # Two pairs are too few for a verdict, however clear they look.
    assert verdict_for_improvement(_comparison(0.01, 0.05, n=2)) == INCONCLUSIVE
    # Identical differences (zero spread) give a zero-width interval: no evidence about seed variation.
    assert verdict_for_improvement(paired([0.24, 0.24, 0.24], [0.10, 0.10, 0.10])) == INCONCLUSIVE
    assert verdict_for_improvement(paired([0.10, 0.10, 0.10], [0.24, 0.24, 0.24])) == INCONCLUSIVE


def test_claims_and_ledger():
    with pytest.raises(ValueError, match="verdict"):
        Claim("KD helps", "+1.2", "+0.3", "probably")
    claims = [Claim("KD helps", "+1.2 (CIFAR-100)", "+0.3 ± 0.2", REPRODUCED, "fashion_mnist, 3 seeds"),
              Claim("T=4 is best", "Table 2", "T=2 best", NOT_REPRODUCED)]
    table = ledger(claims)
    assert list(table.columns) == ["Claim", "The paper", "We measured", "Premise", "Verdict", "Our setting"]
    assert len(table) == 2
    assert table.iloc[0].tolist() == ["KD helps", "+1.2 (CIFAR-100)", "+0.3 ± 0.2", "—", REPRODUCED,
                                      "fashion_mnist, 3 seeds"]
    assert table.iloc[1]["Our setting"] == ""
    # The premise, the paper's effect, the resolution and the note join their cells.
    judged = Claim("DKPP helps", "+1.1", "-3.8 ± 1.4", PREMISE_UNMET, premise="teacher ≥ CE student + 3 points: "
                   "70 vs 76", premise_held=False, n=5, resolution="±1.7 points at n=5", paper_effect="+1.12 points",
                   note="A stronger teacher.")
    row = ledger([judged]).iloc[0]
    assert row["Premise"].endswith("— unmet") and row["The paper"] == "+1.1 (effect: +1.12 points)"
    assert row["We measured"] == "-3.8 ± 1.4 (resolution: ±1.7 points at n=5)"
    assert row["Verdict"] == "premise unmet. A stronger teacher."


# ---------------------------------------------------------------------------------------------- profiles
def test_profile_from_environment(monkeypatch):
    monkeypatch.delenv("KDNB_PROFILE", raising=False)
    assert profiles.get(None).name == "book"
    monkeypatch.setenv("KDNB_PROFILE", "smoke")
    assert profiles.get(None).name == "smoke"
    assert profiles.get().name == "smoke"
    assert profiles.get("paper").name == "paper"  # an explicit name beats the environment
    monkeypatch.setenv("KDNB_PROFILE", "")
    assert profiles.get(None).name == "book"
    assert profiles.get(" Smoke ").name == "smoke"
    custom = profiles.SMOKE.with_(epochs=1)
    assert profiles.get(custom) is custom and custom.epochs == 1 and profiles.SMOKE.epochs == 2


def test_unknown_profile_lists_choices(monkeypatch):
    with pytest.raises(ValueError) as error:
        profiles.get("huge")
    for name in ("smoke", "book", "paper"):
        assert name in str(error.value)
    monkeypatch.setenv("KDNB_PROFILE", "huge")
    with pytest.raises(ValueError, match="huge"):
        profiles.get(None)
    with pytest.raises(ValueError, match="smoke"):
        kdnb.setup("huge")


def test_profiles_scale_up():
    smoke, book, paper = (profiles.get(n) for n in ("smoke", "book", "paper"))
    assert smoke.epochs < book.epochs < paper.epochs
    assert smoke.train_per_class < book.train_per_class and paper.train_per_class is None
    assert len(book.seeds) >= 3


def test_setup_returns_profile_and_seeds(monkeypatch):
    monkeypatch.delenv("KDNB_PROFILE", raising=False)
    monkeypatch.delenv("KDNB_THREADS", raising=False)
    profile = kdnb.setup("smoke", seed=3)
    assert isinstance(profile, kdnb.Profile) and profile.name == "smoke"
    a = (torch.rand(4), np.random.rand(3), __import__("random").random())
    assert kdnb.setup(seed=3).name == "book"
    b = (torch.rand(4), np.random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    kdnb.setup("smoke", seed=4)
    assert not torch.equal(torch.rand(4), a[0])


# -------------------------------------------------------------------------------------------------- glue
@pytest.mark.parametrize("value, expected, kind", [
    (np.float64(0.9), 0.9, float),
    (np.float32(0.5), 0.5, float),
    (np.int64(7), 7, int),
    (np.int32(-2), -2, int),
    (torch.tensor(0.25), 0.25, float),
    (torch.tensor(3), 3, int),
    (np.array(1.5), 1.5, float),
    (True, True, bool),
    (np.bool_(True), True, bool),
    (4, 4, int),
])
def test_glue_plain_numbers(value, expected, kind):
    out = glue.plain(value)
    assert type(out) is kind
    assert out == expected
    assert f"{out:.2f}" == f"{expected:.2f}"


def test_glue_plain_leaves_other_values():
    text, arr = "91.2 ± 0.3", np.array([1.0, 2.0])
    assert glue.plain(text) is text
    assert glue.plain(arr) is arr


def test_glue_hands_myst_nb_plain_values_and_shows_nothing(monkeypatch):
    import myst_nb

    stored = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: stored.update({name: (value, display)}))
    # None: a cell ending in glue(...) must not print a stray value on the page.
    assert glue.glue("kdnb_test_value", np.float64(0.125)) is None
    value, display = stored["kdnb_test_value"]
    assert value == 0.125 and type(value) is float and display is False


# ------------------------------------------------------------------------------------------------- bench
def test_bench_trainer_quick():
    env = dict(os.environ, OMP_NUM_THREADS="1", KDNB_PROGRESS="off", KDNB_DEVICE="cpu")
    out = subprocess.run([sys.executable, "-m", "kdnb", "bench", "trainer", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout)
    assert len(results) == 1
    entry = results[0]
    assert entry["name"] == "trainer_vs_bare_loop"
    assert entry["ratio"] > 0 and math.isfinite(entry["ratio"])
    assert entry["steps"] == 4 and entry["repeats"] == 3
    assert entry["trainer_images_per_s"] > 0 and entry["bare_images_per_s"] > 0
    assert entry["ratio"] == pytest.approx(entry["trainer_images_per_s"] / entry["bare_images_per_s"])
    low, middle, high = entry["pairwise_ratio_quartiles"]
    assert 0 < low <= middle <= high


def test_bench_unknown_name():
    from kdnb import bench

    with pytest.raises(SystemExit, match="trainer"):
        bench.main(["nonexistent"])
