"""The claims of Part II's tables (:mod:`.tables`), judged by the book's rules (:mod:`kdnb.analysis`).

Every claim is a family of paired comparisons within one row of a table (``{(a, b): a − b}``, paired by seed):

- one comparison: :func:`kdnb.analysis.verdict_for_improvement`; several: :func:`kdnb.analysis.verdict_for_all`
  (reproduced when every interval is above zero, not reproduced when Holm's correction finds a competitor
  measurably better);
- the resolution and the paper's effect shown are those of the family's hardest pair (the smallest effect in the
  paper), with the resolution of one test in a family of its size;
- a family with fewer than :data:`kdnb.analysis.MIN_PAIRS` seeds is **descriptive**: its verdict is
  "inconclusive" by construction, and its note says that no verdict is drawn.

Premises: the teacher leads the CE student (:func:`.scale.part2_teacher_premise`) for a claim about distillation
from a larger teacher; for the small-teacher table, that the teacher is indeed the weaker network
(:func:`small_teacher_premise`); for mutual learning, which has no teacher, that each network learns the task on
its own (:func:`mutual_premise`).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ... import analysis
from ...analysis import Claim, PairedComparison, Premise
from .tables import ACCURACY, Paper

SOURCE = "huang2021revisiting"
DESCRIPTIVE = "Descriptive"
#: A network "learns the task on its own" (the premise of a mutual-learning claim) when its CE runs reach this many
#: times chance accuracy (Part I's rule for a network to count at all).
CHANCE_FACTOR = 2.0


def small_teacher_premise(teacher: float, student: float | Sequence[float], what: str = "teacher",
                          against: str = "CE student") -> Premise:
    """The regime of the supplement's Table 2: the small teacher is *not* ahead of the large CE student (the
    paper's ResNet-20 teacher trails its ResNet-56 student by 1.4 points). A teacher clearly ahead of its student
    is ordinary distillation, whatever the sizes."""
    s = float(np.mean(student))
    return Premise(f"{against} ≥ {what} (the teacher is the weaker network, as in the paper)",
                   f"{s:.2f} vs {teacher:.2f} ({s - teacher:+.2f})", held=s >= teacher,
                   remedy=f"A {what} that trails the {against}: a smaller one, or one trained on less data.")


def mutual_premise(accuracies: Mapping[str, Sequence[float]], num_classes: int = 10) -> Premise:
    """Mutual learning has no teacher to lead; what it needs is two networks that each learn the task: the mean
    accuracy of every network trained alone (``{name: [CE accuracy per seed]}``) reaches :data:`CHANCE_FACTOR`
    times chance."""
    floor = CHANCE_FACTOR * 100.0 / num_classes
    means = {k: float(np.mean(v)) for k, v in accuracies.items()}
    return Premise(f"every network trained alone ≥ {CHANCE_FACTOR:g} × chance ({floor:g}%)",
                   ", ".join(f"{k} {m:.2f}" for k, m in means.items()), held=all(m >= floor for m in means.values()),
                   remedy="Networks that learn the task alone: more data or epochs.")


def comparisons(frame: pd.DataFrame, row: str, pairs: Sequence[tuple[str, str]]
                ) -> dict[tuple[str, str], PairedComparison]:
    """``{(a, b): a − b}`` of :data:`.tables.ACCURACY` within ``row`` of a table's frame, paired by seed."""
    sub = frame[frame["row"] == row]
    return {(a, b): analysis.paired_by_seed(sub, a, b, value=ACCURACY) for a, b in pairs}


def paper_effects(paper: Paper, row: str, pairs: Sequence[tuple[str, str]], paper_row: str | None = None
                  ) -> dict[tuple[str, str], float | None]:
    """The paper's ``a − b`` in accuracy points for each pair (None where the paper has no figure)."""
    key = paper_row or row
    return {(a, b): (paper[key, a] - paper[key, b] if (key, a) in paper and (key, b) in paper else None)
            for a, b in pairs}


def brief(comps: Mapping[tuple[str, str], PairedComparison]) -> str:
    """``"IE-FT − FT +0.52 [−0.31, +1.35]; …"`` with n once."""
    parts = [f"{a} − {b} {c.difference.mean:+.2f} [{c.difference.ci_low:+.2f}, {c.difference.ci_high:+.2f}]"
             if c.difference.n >= 2 else f"{a} − {b} {c.difference.mean:+.2f}" for (a, b), c in comps.items()]
    ns = sorted({c.difference.n for c in comps.values()})
    return "; ".join(parts) + f" (points, 95% CI, n={'/'.join(map(str, ns))})"


def is_descriptive(comps: Mapping[tuple[str, str], PairedComparison]) -> bool:
    """Fewer seeds than a verdict needs (:data:`kdnb.analysis.MIN_PAIRS`) in some comparison."""
    return min(c.difference.n for c in comps.values()) < analysis.MIN_PAIRS


def family_claim(claim: str, paper_text: str, frame: pd.DataFrame, row: str, pairs: Sequence[tuple[str, str]],
                 paper: Paper, premise: Premise | None, setting: str, paper_row: str | None = None) -> Claim:
    """The ledger row of the claim "a beats b for every (a, b) of ``pairs``" in ``row`` of ``frame`` (see the
    module docstring for the rule, the hardest pair and descriptive families)."""
    comps = comparisons(frame, row, pairs)
    effects = paper_effects(paper, row, pairs, paper_row)
    known = [p for p in pairs if effects[p] is not None]
    hardest = min(known, key=lambda p: abs(effects[p])) if known else tuple(pairs[0])
    verdict = (analysis.verdict_for_improvement(comps[hardest]) if len(comps) == 1
               else analysis.verdict_for_all({f"{a} − {b}": c for (a, b), c in comps.items()}))
    result = analysis.judged(claim=claim, paper=paper_text, comparison=comps[hardest],
                             paper_effect=effects[hardest], premise=premise, verdict=verdict, family=len(comps),
                             setting=setting, source=SOURCE, measured=brief(comps))
    if is_descriptive(comps) and result.verdict != analysis.PREMISE_UNMET:
        n = min(c.difference.n for c in comps.values())
        note = (f"{DESCRIPTIVE}: {n} seed(s), fewer than the {analysis.MIN_PAIRS} a verdict needs — the numbers are "
                f"shown, no verdict is drawn (the budget).")
        result = dataclasses.replace(result, note=note)
    return result


def paper_text(table: str, paper: Paper, row: str, labels: Sequence[str]) -> str:
    """``"Table 1 (ResNet-56 → ResNet-20, accuracy = 100 − error): CE 92.22, KD 92.63, …"``."""
    values = ", ".join(f"{label} {paper[row, label]:.2f}" for label in labels if (row, label) in paper)
    return f"{table}: {values}" if values else f"{table}: —"


# ------------------------------------------------------------------------------------------------ the claims
def ie_versus_consistency(frame: pd.DataFrame, row: str, paper: Paper, premise: Premise | None, setting: str,
                          separate: bool, paper_row: str | None = None, table: str = "Table 1",
                          labels: Sequence[str] | None = None) -> list[Claim]:
    """§4.3, observation 1: IE-AT beats AT, IE-FT beats FT, IE-OD beats OD (those of the pairs whose two columns
    are among ``labels``, all by default). ``separate``: one claim per variant (the decisive pair), else one
    family claim."""
    pairs = [(ie, base) for ie, base in (("IE-AT", "AT"), ("IE-FT", "FT"), ("IE-OD", "OD"))
             if labels is None or (ie in labels and base in labels)]
    text = lambda labels: paper_text(f"{table}, {paper_row or row}", paper, paper_row or row, labels)  # noqa: E731
    if separate or len(pairs) == 1:
        return [family_claim(f"{row}: {a} outperforms {b}, the consistency method it extends (§4.3).",
                             text((a, b)), frame, row, [(a, b)], paper, premise, setting, paper_row)
                for a, b in pairs]
    claim = (f"{row}: each of {', '.join(a for a, _ in pairs)} outperforms the method it extends "
             f"({', '.join(b for _, b in pairs)}) (§4.3).")
    return [family_claim(claim, text([x for p in pairs for x in p]), frame, row, pairs, paper, premise, setting,
                         paper_row)]


def ie_versus_all(frame: pd.DataFrame, row: str, labels: Sequence[str], paper: Paper, premise: Premise | None,
                  setting: str, paper_row: str | None = None, table: str = "Table 1", include_ce: bool = False
                  ) -> Claim:
    """§4.3, observation 2 (and supplement §2): every IE variant among ``labels`` beats every other distillation
    method among them (and the CE student, ``include_ce``): one family, Holm."""
    ies = [label for label in labels if label.startswith("IE-")]
    others = [label for label in labels if not label.startswith("IE-") and (include_ce or label != "CE")]
    pairs = [(a, b) for a in ies for b in others]
    against = ", ".join(others[:-1]) + f" and {others[-1]}" if len(others) > 1 else others[0]
    who = f"every IE variant ({', '.join(ies)})" if len(ies) > 1 else ies[0]
    return family_claim(f"{row}: {who} outperforms {against} ({'supplement §2' if include_ce else '§4.3'}).",
                        paper_text(f"{table}, {paper_row or row}", paper, paper_row or row, [*others, *ies]),
                        frame, row, pairs, paper, premise, setting, paper_row)


def mutual_claims(frame: pd.DataFrame, row: str, networks: Sequence[str], paper: Paper, premise: Premise | None,
                  setting: str, paper_row: str | None = None) -> list[Claim]:
    """§4.5: for both networks of a pair, IE-DML beats DML and independent learning; and DML beats independent
    learning (Zhang et al.'s claim, the baseline's)."""
    ie = [(f"IE-DML | {n}", f"{m} | {n}") for n in networks for m in ("DML", "Independent")]
    dml = [(f"DML | {n}", f"Independent | {n}") for n in networks]
    labels = [f"{m} | {n}" for m in ("Independent", "DML", "IE-DML") for n in networks]
    text = paper_text(f"Table 4, {paper_row or row}", paper, paper_row or row, labels)
    return [family_claim(f"{row}: IE-DML improves both networks more than DML and independent learning (§4.5).",
                         text, frame, row, ie, paper, premise, setting, paper_row),
            family_claim(f"{row}: DML improves both networks over independent learning (Table 4, after Zhang et al.).",
                         text, frame, row, dml, paper, premise, setting, paper_row)]


def best_of(frame: pd.DataFrame, row: str, best: str, labels: Sequence[str], paper: Paper, premise: Premise | None,
            setting: str, claim: str, table: str, paper_row: str | None = None) -> Claim:
    """``best`` beats every other setting of ``labels`` in ``row`` (Table 5's η = 0.5, Table 6b's λ = 50/50)."""
    pairs = [(best, other) for other in labels if other != best]
    return family_claim(claim, paper_text(table, paper, paper_row or row, labels), frame, row, pairs, paper, premise,
                        setting, paper_row)


def all_beat(frame: pd.DataFrame, row: str, labels: Sequence[str], baseline: str, paper: Paper,
             premise: Premise | None, setting: str, claim: str, table: str, paper_row: str | None = None) -> Claim:
    """Every one of ``labels`` beats ``baseline`` in ``row`` (Table 6a: every metric beats the CE student)."""
    pairs = [(label, baseline) for label in labels if label != baseline]
    return family_claim(claim, paper_text(table, paper, paper_row or row, [*labels, baseline]), frame, row, pairs,
                        paper, premise, setting, paper_row)
