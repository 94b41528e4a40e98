"""Verdict rules, premises and resolution: what a ledger's verdict may say, and how much it can see.

A verdict is only as good as two things beside it:

- its **premise** (:class:`Premise`): what must hold in *this run* for the paper's mechanism to act at all (the
  teacher beats the student it distils into; the cross-entropy run over-fits before a regularizer is judged; the
  networks learned something). A claim whose premise fails is :data:`PREMISE_UNMET`, never "not reproduced": the
  run did not test the paper.
- its **resolution** (:class:`Resolution`): the smallest mean difference the design could have told from zero —
  with ``n`` pairs, observed paired spread ``s`` and the two-sided Student-t quantile ``t``, a 95% interval
  excludes zero only when ``|mean| > t · s / √n``. A paper effect below that could not have been seen, whatever
  the truth; the verdict says so in words, with the number of seeds that would see it
  (:func:`seeds_to_resolve`).

Rules over several comparisons control the family-wise error:

- "A beats every B_i" (:func:`verdict_for_all`) is *reproduced* only when every interval is above zero — an
  intersection–union test, valid at level α without correction — and *not reproduced* when some B_i is
  measurably better than A after Holm's step-down correction over the family (:func:`holm`).
- "most comparisons favour the claim" (:func:`verdict_for_most`, the paper-level rule for Cheng et al.'s
  hypotheses) counts Holm-significant comparisons in each direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from .stats import PairedComparison

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive at this scale"
PREMISE_UNMET = "premise unmet"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, PREMISE_UNMET)

ALPHA = 0.05  # two-sided, the level of every 95% interval in the book
MIN_PAIRS = 3  # with two pairs the t-interval has one degree of freedom: too few to call a verdict
POWER = 0.8  # the power :func:`seeds_to_resolve` plans for

#: The smallest lead (accuracy points) of a teacher over the cross-entropy student for a KD-family claim to be
#: judged. The papers' teachers lead their students by 3–5 points (Gu et al. Table 1: CNN-10 90.04 vs CNN-6
#: 85.18, 4.9; Huang et al. Table 1: 2.4–5.2 on CIFAR-10). We ask for 3, the low end: below it the soft targets
#: carry little that the labels do not, and a KD gain of the papers' size (1–1.6 points) has no room to appear.
TEACHER_MARGIN = 3.0

#: The smallest train − test accuracy gap (points) at which a cross-entropy run counts as over-fitting, the premise
#: of a claim that a regularizer helps. The paper's ResNets end 160 epochs at ~100% train accuracy and 88–91%
#: test (a 9–12 point gap); 5 points is half of that, well above the seed-to-seed spread of a test accuracy.
OVERFIT_GAP = 5.0


# ------------------------------------------------------------------------------------------------ premises
@dataclass(frozen=True)
class Premise:
    """What must hold for the paper's mechanism to act (``requirement``), what this run measured (``measured``),
    whether it held, and — when it did not — what scale would meet it (``remedy``)."""

    requirement: str
    measured: str
    held: bool
    remedy: str = ""

    def format(self) -> str:
        """``"teacher ≥ CE student + 3 points: 85.1 vs 76.8 (+8.3) — held"``."""
        return f"{self.requirement}: {self.measured} — {'held' if self.held else 'unmet'}"


def teacher_beats_student(teacher: float | Sequence[float], student: float | Sequence[float],
                          margin: float = TEACHER_MARGIN, what: str = "teacher", against: str = "CE student",
                          remedy: str = "") -> Premise:
    """The KD-family premise: the mean accuracy (%) of ``teacher`` exceeds that of the cross-entropy ``student``
    by at least ``margin`` points. Either side may be one number or one per seed."""
    t, s = float(np.mean(teacher)), float(np.mean(student))
    return Premise(f"{what} ≥ {against} + {margin:g} points", f"{t:.2f} vs {s:.2f} ({t - s:+.2f})",
                   held=t - s >= margin, remedy=remedy)


def overfits(train: float | Sequence[float], test: float | Sequence[float], gap: float = OVERFIT_GAP,
             what: str = "CE run", remedy: str = "") -> Premise:
    """The regularization premise: ``what``'s train accuracy exceeds its test accuracy by at least ``gap``
    points (means over seeds)."""
    tr, te = float(np.mean(train)), float(np.mean(test))
    return Premise(f"{what} over-fits: train − test ≥ {gap:g} points", f"{tr:.2f} vs {te:.2f} ({tr - te:+.2f})",
                   held=tr - te >= gap, remedy=remedy)


def all_of(*premises: Premise) -> Premise:
    """Several premises that must all hold, as one."""
    if not premises:
        raise ValueError("no premises to combine")
    return Premise("; ".join(p.requirement for p in premises), "; ".join(p.measured for p in premises),
                   held=all(p.held for p in premises),
                   remedy=" ".join(p.remedy for p in premises if not p.held and p.remedy))


# ------------------------------------------------------------------------------------------------ resolution
def t_quantile(n: int, alpha: float = ALPHA, family: int = 1) -> float:
    """The two-sided Student-t quantile of a ``1 − alpha / family`` interval on ``n`` pairs."""
    if n < 2:
        return math.inf
    return float(stats.t.ppf(1 - alpha / (2 * family), df=n - 1))


@dataclass(frozen=True)
class Resolution:
    """The smallest mean paired difference whose interval would exclude zero: ``t · spread / √n``."""

    n: int
    spread: float  # observed standard deviation of the paired differences
    t: float
    smallest: float

    def format(self, unit: str = "points", digits: int = 2) -> str:
        if not math.isfinite(self.smallest):
            return f"n={self.n}: none (too few pairs or no spread)"
        return (f"±{self.smallest:.{digits}f} {unit} at n={self.n} "
                f"(t={self.t:.2f} × s={self.spread:.{digits}f} / √{self.n})").replace(" ) ", ") ")


def resolution(comparison: PairedComparison, alpha: float = ALPHA, family: int = 1) -> Resolution:
    """The resolution of a paired comparison (of one test within a family of ``family`` tests, Bonferroni's
    first Holm step, when ``family > 1``)."""
    d = comparison.difference
    s = float(d.std) if d.n >= 2 and d.std == d.std else math.nan
    t = t_quantile(d.n, alpha, family)
    smallest = t * s / math.sqrt(d.n) if d.n >= 2 and s > 0 else math.inf
    return Resolution(d.n, s, t, smallest)


def seeds_to_resolve(spread: float, effect: float, alpha: float = ALPHA, power: float = POWER,
                     family: int = 1, most: int = 1000) -> int | None:
    """The fewest pairs ``n`` at which a true mean difference ``effect`` is found with probability ≈ ``power`` by a
    two-sided t-test at ``alpha``, given the paired spread ``spread``: ``(t_{α/2} + t_{power}) · s / √n ≤
    |effect|``. ``None`` beyond ``most`` (or when the effect is 0 or the spread unknown)."""
    if not (spread > 0) or not effect or not math.isfinite(spread):
        return None
    for n in range(2, most + 1):
        need = (t_quantile(n, alpha, family) + float(stats.t.ppf(power, df=n - 1))) * spread / math.sqrt(n)
        if need <= abs(effect):
            return n
    return None


def resolution_note(comparison: PairedComparison, paper_effect: float | None, verdict: str,
                    unit: str = "points", family: int = 1) -> str:
    """In words: whether the paper's effect was within this design's reach, and what would settle it."""
    res = resolution(comparison, family=family)
    if paper_effect is None:
        return ""
    if not math.isfinite(res.smallest):
        return (f"The design cannot resolve anything (n={res.n}, spread {res.spread:.2f}); the paper's effect is "
                f"{paper_effect:+.2f} {unit}.")
    words = ""
    if abs(paper_effect) < res.smallest:
        words = (f"The paper's effect ({paper_effect:+.2f} {unit}) is below this design's resolution "
                 f"(±{res.smallest:.2f} at n={res.n}): a difference of that size would not be told from zero "
                 "at this n.")
    if verdict in (INCONCLUSIVE, NOT_REPRODUCED) or words:
        n = seeds_to_resolve(res.spread, paper_effect, family=family)
        settle = (f"≈ {n} seeds would find an effect of the paper's size with {POWER:.0%} power at the observed "
                  f"spread ({res.spread:.2f})" if n else
                  f"more than 1000 seeds would be needed at the observed spread ({res.spread:.2f})")
        words = (words + " " if words else "") + settle[0].upper() + settle[1:] + "."
    return words


# ------------------------------------------------------------------------------------------------ rules
def verdict_for_improvement(comparison: PairedComparison) -> str:
    """Verdict on a claim "A improves on B" from the paired differences A − B.

    Reproduced when the whole 95% interval is above zero, not reproduced when it is wholly below zero (we
    measured the opposite), inconclusive otherwise. Also inconclusive: fewer than :data:`MIN_PAIRS` pairs, or
    pairs without any spread (identical differences give a zero-width interval that says nothing about
    seed-to-seed variation, as happens when barely trained networks all predict one class).
    """
    d = comparison.difference
    if d.n < MIN_PAIRS or not d.std > 0:
        return INCONCLUSIVE
    if d.ci_low > 0:
        return REPRODUCED
    if d.ci_high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def p_value(comparison: PairedComparison, null: float = 0.0, alternative: str = "two-sided") -> float:
    """The paired t-test's p-value of ``mean = null`` (``"less"``: the alternative mean < null; ``"greater"``:
    mean > null); NaN with fewer than two pairs or no spread."""
    d = comparison.difference
    if d.n < 2 or not d.std > 0:
        return math.nan
    t = (d.mean - null) / (d.std / math.sqrt(d.n))
    if alternative == "two-sided":
        return float(2 * stats.t.sf(abs(t), df=d.n - 1))
    if alternative == "less":
        return float(stats.t.cdf(t, df=d.n - 1))
    if alternative == "greater":
        return float(stats.t.sf(t, df=d.n - 1))
    raise ValueError(f"alternative must be 'two-sided', 'less' or 'greater', got {alternative!r}")


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which of the hypotheses are rejected with family-wise error ≤ ``alpha``.
    A NaN p-value is never rejected (and counts in the family's size)."""
    p = [math.inf if not p_i == p_i else float(p_i) for p_i in p_values]
    order = sorted(range(len(p)), key=p.__getitem__)
    rejected = [False] * len(p)
    for step, i in enumerate(order):
        if p[i] > alpha / (len(p) - step):
            break
        rejected[i] = True
    return rejected


def _one_sided(comparisons: Sequence[PairedComparison], null: float, alternative: str) -> list[float]:
    """One-sided p-values of ``comparisons``; NaN (never rejected) with fewer than :data:`MIN_PAIRS` pairs or no
    spread, as :func:`verdict_for_improvement` calls those inconclusive."""
    return [p_value(c, null, alternative) if c.difference.n >= MIN_PAIRS and c.difference.std > 0 else math.nan
            for c in comparisons]


def _against(comparisons: Sequence[PairedComparison], null: float) -> list[bool]:
    """Which comparisons show, with Holm's family-wise control, a mean below ``null`` (one-sided at α/2, the
    lower tail of the two-sided 95% interval)."""
    return holm(_one_sided(comparisons, null, "less"), alpha=ALPHA / 2)


def verdict_for_all(comparisons: Mapping[str, PairedComparison]) -> str:
    """Verdict on "A improves on each of B1, B2, …" from the paired differences A − Bi.

    Reproduced when every interval is above zero (an intersection–union test: no correction is needed for
    requiring all); not reproduced when, after Holm's correction over the k comparisons, some Bi is measurably
    better than A; inconclusive otherwise."""
    if not comparisons:
        raise ValueError("no comparisons to judge")
    values = list(comparisons.values())
    if all(verdict_for_improvement(c) == REPRODUCED for c in values):
        return REPRODUCED
    if any(_against(values, 0.0)):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def verdict_for_competitive(comparison: PairedComparison, margin: float) -> str:
    """Verdict on "A is competitive with B" as non-inferiority within ``margin`` (accuracy points), from the
    paired differences A − B: reproduced when the whole 95% interval lies above ``-margin`` (A is at most
    ``margin`` worse), not reproduced when it lies wholly below ``-margin``, inconclusive otherwise, and with
    fewer than three pairs or no spread (as :func:`verdict_for_improvement`)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    d = comparison.difference
    if d.n < MIN_PAIRS or not d.std > 0:
        return INCONCLUSIVE
    if d.ci_low > -margin:
        return REPRODUCED
    if d.ci_high < -margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def verdict_for_competitive_with_all(comparisons: Mapping[str, PairedComparison], margin: float) -> str:
    """:func:`verdict_for_competitive` against each competitor: reproduced when A is non-inferior to every one
    (intersection–union), not reproduced when, after Holm over the family, A is measurably more than ``margin``
    worse than some competitor; inconclusive otherwise."""
    if not comparisons:
        raise ValueError("no comparisons to judge")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    values = list(comparisons.values())
    if all(verdict_for_competitive(c, margin) == REPRODUCED for c in values):
        return REPRODUCED
    if any(_against(values, -margin)):
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class FamilyCount:
    """How a family of comparisons fell under Holm's correction: ``favour`` and ``against`` are the counts of
    comparisons significantly for and against the claim, ``total`` the family's size."""

    favour: int
    against: int
    total: int

    def format(self) -> str:
        return (f"{self.favour} of {self.total} comparisons significantly for, {self.against} against, "
                f"{self.total - self.favour - self.against} undecided (Holm, family-wise α = {ALPHA:g})")


def family_count(comparisons: Sequence[PairedComparison]) -> FamilyCount:
    """Holm at family-wise α over the 2k one-sided tests of the family (for and against each comparison): the
    first step compares each p-value with α / 2k, Bonferroni's two-sided α over k comparisons."""
    comparisons = list(comparisons)
    rejected = holm(_one_sided(comparisons, 0.0, "greater") + _one_sided(comparisons, 0.0, "less"), alpha=ALPHA)
    k = len(comparisons)
    return FamilyCount(sum(rejected[:k]), sum(rejected[k:]), k)


def verdict_for_most(comparisons: Sequence[PairedComparison]) -> str:
    """Verdict on "most comparisons favour the claim" (Cheng et al.: "most results support Hypotheses 1–3").

    Holm over the family (:func:`family_count`): reproduced when more than half of the comparisons are
    significantly in favour; not reproduced when more than half are significantly against; inconclusive
    otherwise (too few decided either way)."""
    if not comparisons:
        raise ValueError("no comparisons to judge")
    count = family_count(comparisons)
    if count.favour * 2 > count.total:
        return REPRODUCED
    if count.against * 2 > count.total:
        return NOT_REPRODUCED
    return INCONCLUSIVE
