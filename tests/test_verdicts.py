"""Verdict rules, premises and resolution (kdnb.analysis.verdicts), against hand computations and the
definitions they rest on: Holm's procedure (Holm 1979), the t-interval's half-width, a power simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kdnb import analysis
from kdnb.analysis import (INCONCLUSIVE, NOT_REPRODUCED, PREMISE_UNMET, REPRODUCED, Claim, holm, judged, paired,
                           resolution, seeds_to_resolve, teacher_beats_student)


def comparison(differences, base: float = 70.0):
    """A paired comparison whose per-seed differences are exactly ``differences``."""
    d = np.asarray(differences, dtype=float)
    b = base + np.arange(d.size)
    return paired(b + d, b)


def test_holm_by_hand():
    # Sorted: 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2: stop; 0.04 is not rejected although <= .05.
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.2, 0.01]) == [False, True]
    assert holm([]) == []
    assert holm([math.nan, 0.001]) == [False, True]  # NaN counts in the family, is never rejected
    assert holm([0.03, math.nan]) == [False, False] and holm([0.03]) == [True]  # ... and raises the thresholds


def test_holm_rejects_what_bonferroni_rejects_and_controls_the_family(rng=np.random.default_rng(0)):
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=rng.integers(1, 8)).tolist()
        bonferroni = [x <= 0.05 / len(p) for x in p]
        assert all(h or not b for h, b in zip(holm(p), bonferroni))
    # Under the global null (uniform p-values), some rejection happens in at most ~alpha of families.
    families = rng.uniform(size=(4000, 5))
    rate = np.mean([any(holm(row.tolist())) for row in families])
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)


def test_resolution_is_the_half_width_of_the_interval():
    c = comparison([1.0, 2.5, -0.5, 1.5, 0.7])
    res = resolution(c)
    d = c.difference
    assert res.n == 5 and res.spread == pytest.approx(d.std)
    # The smallest mean whose interval excludes zero is the interval's half-width (stats.summarize's own CI).
    assert res.smallest == pytest.approx(d.mean - d.ci_low, rel=1e-12)
    assert res.t == pytest.approx(stats.t.ppf(0.975, 4))
    assert "at n=5" in res.format()
    # A family of k tests widens it (Bonferroni's first Holm step).
    assert resolution(c, family=3).smallest > res.smallest
    # Too few pairs or no spread: nothing can be resolved.
    assert math.isinf(resolution(comparison([1.0])).smallest)
    assert math.isinf(resolution(comparison([1.0, 1.0, 1.0])).smallest)


def test_seeds_to_resolve_reaches_its_power_in_a_simulation():
    spread, effect = 1.0, 0.8
    n = seeds_to_resolve(spread, effect)
    assert n is not None and n > 2
    rng = np.random.default_rng(1)

    def power(k: int) -> float:
        d = rng.normal(effect, spread, size=(4000, k))
        t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(k))
        return float(np.mean(np.abs(t) > stats.t.ppf(0.975, k - 1)))

    assert power(n) >= 0.78  # 0.8 planned; 4000 draws: standard error 0.006
    assert power(n - 1) < 0.8 + 0.02
    assert seeds_to_resolve(spread, 2 * effect) < n  # a larger effect needs fewer seeds
    assert seeds_to_resolve(spread, 0.0) is None and seeds_to_resolve(math.nan, 1.0) is None
    assert seeds_to_resolve(1.0, 1e-3) is None  # beyond 1000 seeds


def test_verdict_for_all_reproduces_only_when_every_interval_is_above_zero():
    good = comparison([1.0, 1.2, 0.9, 1.1, 1.3])
    weak = comparison([0.5, -0.2, 0.9, 0.1, 0.3])
    assert analysis.verdict_for_all({"a": good, "b": good}) == REPRODUCED
    assert analysis.verdict_for_all({"a": good, "b": weak}) == INCONCLUSIVE


def test_verdict_for_all_calls_not_reproduced_only_after_holm():
    # One competitor is worse by an amount whose own interval excludes zero (p ~ 0.02) but that does not survive
    # Holm over five comparisons: the family says nothing against the claim.
    borderline = comparison([-0.9, -0.2, -1.4, -0.6, -0.3])
    p = analysis.p_value(borderline)
    assert 0.01 < p < 0.05 and analysis.verdict_for_improvement(borderline) == NOT_REPRODUCED
    null = comparison([0.3, -0.4, 0.2, -0.1, 0.05])
    family = {"b": borderline, "c": null, "d": null, "e": null, "f": null}
    assert analysis.verdict_for_all(family) == INCONCLUSIVE
    clear = comparison([-3.0, -3.1, -2.9, -3.2, -3.05])
    assert analysis.verdict_for_all({**family, "b": clear}) == NOT_REPRODUCED


def test_competitive_with_all():
    close = comparison([-0.2, 0.1, -0.3, 0.0, -0.1])
    far = comparison([-3.0, -3.2, -2.8, -3.1, -2.9])
    assert analysis.verdict_for_competitive_with_all({"x": close}, margin=1.0) == REPRODUCED
    assert analysis.verdict_for_competitive_with_all({"x": close, "y": far}, margin=1.0) == NOT_REPRODUCED
    with pytest.raises(ValueError):
        analysis.verdict_for_competitive_with_all({"x": close}, margin=-1)


def test_verdict_for_most_counts_holm_significant_comparisons():
    strong = comparison([2.0, 2.1, 1.9, 2.2, 2.05])
    null = comparison([0.3, -0.4, 0.2, -0.1, 0.05])
    against = comparison([-2.0, -2.1, -1.9, -2.2, -2.05])
    count = analysis.family_count([strong, strong, strong, null, against])
    assert (count.favour, count.against, count.total) == (3, 1, 5)
    assert analysis.verdict_for_most([strong, strong, strong, null, against]) == REPRODUCED
    assert analysis.verdict_for_most([strong, strong, null, null, against]) == INCONCLUSIVE
    assert analysis.verdict_for_most([against, against, null]) == NOT_REPRODUCED
    # Too few pairs are never significant.
    assert analysis.verdict_for_most([comparison([2.0, 2.1])]) == INCONCLUSIVE


def test_a_failed_premise_is_never_a_refutation():
    significant_loss = comparison([-4.0, -5.5, -3.9, -4.6, -4.2])
    weak_teacher = teacher_beats_student(75.0, [76.0, 77.5, 76.4], remedy="Train the teacher on 10× the data.")
    assert not weak_teacher.held and "+3 points" in weak_teacher.requirement.replace(" + 3", " +3")
    claim = judged("KD helps", "+1.37 points", significant_loss, paper_effect=1.37, premise=weak_teacher)
    assert claim.verdict == PREMISE_UNMET and claim.premise_held is False
    assert claim.note.startswith("Train the teacher on 10× the data.")
    assert "75.00 vs 76.63" in claim.premise and claim.n == 5
    strong_teacher = teacher_beats_student(85.0, [76.0, 77.5, 76.4])
    claim = judged("KD helps", "+1.37 points", significant_loss, paper_effect=1.37, premise=strong_teacher)
    assert claim.verdict == NOT_REPRODUCED and claim.premise_held is True
    with pytest.raises(ValueError, match="premise unmet"):
        Claim("c", "p", "m", NOT_REPRODUCED, premise="x", premise_held=False)
    with pytest.raises(ValueError, match="needs a premise that failed"):
        Claim("c", "p", "m", PREMISE_UNMET)


def test_the_note_says_when_the_paper_effect_is_below_the_resolution():
    noisy = comparison([2.0, -1.5, 0.5])
    claim = judged("LE helps", "+0.75 points", noisy, paper_effect=0.75)
    assert claim.verdict == INCONCLUSIVE
    res = resolution(noisy)
    assert res.smallest > 0.75
    assert "below this design's resolution" in claim.note
    n = seeds_to_resolve(res.spread, 0.75)
    assert f"≈ {n} seeds" in claim.note and claim.paper_effect == "+0.75 points"
    sharp = comparison([1.0, 1.1, 0.9, 1.05, 0.95])
    claim = judged("LE helps", "+0.75 points", sharp, paper_effect=0.75)
    assert claim.verdict == REPRODUCED and claim.note == ""


def test_overfitting_premise():
    assert analysis.overfits([99.0, 98.0], [80.0, 82.0]).held
    held = analysis.overfits(85.0, 82.0)
    assert not held.held and "+3.00" in held.measured
    both = analysis.all_of(held, teacher_beats_student(90, 80))
    assert not both.held and ";" in both.requirement
