"""The claim ledger that closes every chapter: "What the paper claims, what we measured"."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .stats import PairedComparison

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive at this scale"
MIN_PAIRS = 3  # with two pairs the t-interval has one degree of freedom: too few to call a verdict


def verdict_for_improvement(comparison: PairedComparison) -> str:
    """Verdict on a claim "A improves on B" from the paired differences A − B.

    Reproduced when the whole confidence interval is above zero, not reproduced when it is wholly below
    zero (we measured the opposite), inconclusive otherwise. Also inconclusive: fewer than
    ``MIN_PAIRS`` pairs, or pairs without any spread (identical differences give a zero-width interval that
    says nothing about seed-to-seed variation, as happens when barely trained networks all predict one class).
    """
    d = comparison.difference
    if d.n < MIN_PAIRS or not d.std > 0:
        return INCONCLUSIVE
    if d.ci_low > 0:
        return REPRODUCED
    if d.ci_high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    claim: str
    paper: str  # what the source reports, quoted with its setting
    measured: str  # what this run of the book computed
    verdict: str
    setting: str = ""  # our scale: data, model pair, epochs, seeds

    def __post_init__(self) -> None:
        if self.verdict not in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE):
            raise ValueError(f"verdict must be one of {REPRODUCED!r}, {NOT_REPRODUCED!r}, {INCONCLUSIVE!r}")


def ledger(claims: list[Claim]) -> pd.DataFrame:
    """A table with one row per claim: claim, the paper's number, ours, verdict, our setting."""
    return pd.DataFrame([{"Claim": c.claim, "The paper": c.paper, "We measured": c.measured,
                          "Verdict": c.verdict, "Our setting": c.setting} for c in claims])
