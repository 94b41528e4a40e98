"""Part II's tables: the run lists share runs as designed, and the claims follow the verdict rules (hand-made
numbers, no training)."""
from __future__ import annotations

import pandas as pd
import pytest

from kdnb import analysis
from kdnb.profiles import get
from kdnb.studies.part2 import scale, tables
from kdnb.studies.part2 import table_verdicts as tv
from kdnb.studies.part3 import comparisons as part3_comparisons

PROFILES = ("smoke", "book", "paper")


def spec_of(cells, row=None, method=None, seed=None, network=None):
    found = [c for c in cells if (row is None or c.row == row) and (method is None or c.method == method)
             and (seed is None or c.seed == seed) and (network is None or c.network == network)]
    assert len(found) == 1, f"{len(found)} cells for {row}, {method}, {seed}"
    return found[0].spec


@pytest.mark.parametrize("name", PROFILES)
def test_table5_eta_half_is_table1_ie_ft(name):
    profile = get(name)
    t1, t5 = tables.table1_cells(profile), tables.table5_cells(profile)
    row = tables.arrow(scale.part2_pairs(profile)[0])
    for seed in tables.table5_seeds(profile):
        assert spec_of(t5, row, "η = 0.5", seed) == spec_of(t1, row, "IE-FT", seed)
        assert spec_of(t5, row, "η = 0", seed) != spec_of(t1, row, "IE-FT", seed)


@pytest.mark.parametrize("name", ("smoke", "book"))
def test_table4_independent_is_table1_ce(name):
    profile = get(name)
    t1, t4 = tables.table1_cells(profile), tables.table4_cells(profile)
    ce = {c.spec.model: c.spec for c in t1 if c.method == "CE" and c.seed == 0}
    for net1, net2 in tables.table4_pairs(profile):
        row = f"{net1} / {net2}"
        assert spec_of(t4, row, f"Independent | Net 1: {net1}", 0) == ce[net1]
        assert spec_of(t4, row, f"Independent | Net 2: {net2}", 0) == ce[net2]
        # Both networks of a mutual-learning run are measured from one run: the student is Net 2, the peer Net 1.
        dml1 = spec_of(t4, row, f"DML | Net 1: {net1}", 0, network="peer")
        assert dml1 == spec_of(t4, row, f"DML | Net 2: {net2}", 0, network="")
        assert dml1.model == net2 and dict(dml1.method_args)["peer"] == net1
        assert dict(dml1.model_args) == scale.part2_model_args(profile, net2)


@pytest.mark.parametrize("name", ("smoke", "book"))
def test_kd_resnet8_is_part3s(name):
    profile = get(name)
    t1 = tables.table1_cells(profile)
    teacher, student = scale.part2_pairs(profile)[0]
    for seed in tables.table1_seeds(profile, 0):
        assert spec_of(t1, tables.arrow((teacher, student)), "KD", seed) == \
            part3_comparisons.distilled(profile, "resnet8", "kd", seed)
        ce = part3_comparisons.ce(profile, "resnet8", seed)
        assert spec_of(t1, tables.arrow((teacher, student)), "CE", seed) == ce


@pytest.mark.parametrize("name", PROFILES)
def test_table6_shares_table1_runs(name):
    profile = get(name)
    t1, t6 = tables.table1_cells(profile), tables.table6_cells(profile)
    if name != "paper":  # at paper Table 6 is on CIFAR-100 with its own pair
        row = tables.arrow(scale.part2_pairs(profile)[0])
        for seed in tables.table6_seeds(profile):
            ie_ft = spec_of(t1, row, "IE-FT", seed)
            assert spec_of(t6, tables.METRIC_ROW, "L1", seed) == ie_ft
            assert spec_of(t6, tables.WEIGHTS_ROW, "50 / 50", seed) == ie_ft
            assert spec_of(t6, tables.METRIC_ROW, "partial L2", seed) == spec_of(t1, row, "IE-OD", seed)
            assert spec_of(t6, tables.METRIC_ROW, "baseline (CE)", seed) == spec_of(t1, row, "CE", seed)
    if name == "smoke":
        return
    metrics = {dict(c.spec.method_args).get("metric") for c in t6 if c.row == tables.METRIC_ROW
               and c.spec.method == "ie_ft"}
    assert metrics == {"l1", "l2", "cos", "l1_cka"}


def test_book_leaves_out_crd_and_tfkd_but_smoke_and_paper_run_them():
    assert "CRD" not in tables.table1_labels(get("book"))
    for name in ("smoke", "paper"):
        assert {"CRD", "Tf-KD (S)"} <= set(tables.table1_labels(get(name)))
    assert "CRD" in tables.table1_labels(get("paper"), 1) and "CRD" not in tables.table1_labels(get("smoke"), 1)


def test_small_teacher_is_weaker_network_below_paper():
    profile = get("book")
    cells = tables.table_s2_cells(profile)
    teacher = next(c.spec.teacher for c in cells if c.method == "KD")
    assert teacher == scale.part2(profile, "resnet8", "ce", 0)  # a student-scale CE run, not Part 0's recipe
    assert {c.spec.model for c in cells} == {"resnet20"}


def test_paper_numbers_are_accuracies():
    paper = tables.table1_paper(get("paper"))
    assert paper["resnet56 → resnet20", "IE-OD"] == pytest.approx(100 - 6.53)
    assert paper["resnet56 → resnet20", "teacher"] == pytest.approx(100 - 6.39)
    t4 = tables.table4_paper(get("book"))  # the book's pairs stand for the paper's ResNet-32 pairs
    assert t4["resnet8 / mobilenet", "IE-DML | Net 2: mobilenet"] == pytest.approx(100 - 23.24)


# ------------------------------------------------------------------------------------------------ claims
def frame(values: dict[str, list[float]], row: str = "r") -> pd.DataFrame:
    return pd.DataFrame([{"row": row, "method": m, "seed": s, tables.ACCURACY: v}
                         for m, vs in values.items() for s, v in enumerate(vs)])


PAPER = {("r", "IE-FT"): 93.43, ("r", "FT"): 93.15, ("r", "IE-AT"): 93.30, ("r", "AT"): 92.87,
         ("r", "IE-OD"): 93.47, ("r", "OD"): 93.19, ("r", "KD"): 92.63, ("r", "CE"): 92.22}
CLEAR = {"CE": [70.0, 71.0, 70.5, 70.2, 70.8], "KD": [71.0, 72.1, 71.4, 71.0, 71.9],
         "AT": [70.5, 71.2, 70.9, 70.4, 71.0], "FT": [71.2, 72.0, 71.5, 71.1, 71.8],
         "OD": [71.1, 71.8, 71.6, 71.0, 71.7], "IE-AT": [72.5, 73.4, 73.0, 72.4, 73.2],
         "IE-FT": [73.0, 74.1, 73.3, 73.2, 73.9], "IE-OD": [72.9, 73.8, 73.5, 73.0, 73.6]}


def test_clear_gains_with_a_strong_teacher_are_reproduced():
    premise = analysis.teacher_beats_student(85.0, CLEAR["CE"])
    claims = tv.ie_versus_consistency(frame(CLEAR), "r", PAPER, premise, "hand-made", separate=True)
    assert [c.verdict for c in claims] == [analysis.REPRODUCED] * 3
    assert all(c.premise_held and c.n == 5 for c in claims)
    family = tv.ie_versus_all(frame(CLEAR), "r", list(CLEAR), PAPER, premise, "hand-made")
    assert family.verdict == analysis.REPRODUCED
    # The hardest pair (the paper's smallest effect) sets the effect shown: IE-AT − OD, +0.11.
    assert family.paper_effect == "+0.11 points"


def test_weak_teacher_makes_the_claim_premise_unmet():
    premise = analysis.teacher_beats_student(71.5, CLEAR["CE"])  # leads by ~1 point, below the margin
    claims = tv.ie_versus_consistency(frame(CLEAR), "r", PAPER, premise, "hand-made", separate=False)
    assert [c.verdict for c in claims] == [analysis.PREMISE_UNMET]
    assert claims[0].premise_held is False


def test_two_seeds_are_descriptive():
    two = {k: v[:2] for k, v in CLEAR.items()}
    premise = analysis.teacher_beats_student(85.0, two["CE"])
    claim = tv.ie_versus_all(frame(two), "r", list(two), PAPER, premise, "hand-made")
    assert claim.verdict == analysis.INCONCLUSIVE and claim.n == 2
    assert claim.note.startswith(tv.DESCRIPTIVE)
    assert tables.summary(frame(two), descriptive=analysis.MIN_PAIRS).loc["r", "IE-FT"].endswith("descriptive")


def test_a_competitor_measurably_better_is_not_reproduced():
    values = dict(CLEAR, KD=[v + 5 for v in CLEAR["IE-FT"]])
    claim = tv.ie_versus_all(frame(values), "r", list(values), PAPER, None, "hand-made")
    assert claim.verdict == analysis.NOT_REPRODUCED


def test_small_teacher_and_mutual_premises():
    assert tv.small_teacher_premise(75.0, [76.0, 77.0]).held
    assert not tv.small_teacher_premise(85.0, [76.0, 77.0]).held
    assert tv.mutual_premise({"resnet8": [70.0, 71.0], "mobilenet": [72.0]}).held
    assert not tv.mutual_premise({"resnet8": [70.0], "mobilenet": [15.0, 12.0]}).held


def test_mutual_claims_compare_each_network():
    values = {"Independent | Net 1: a": [60, 61, 62], "Independent | Net 2: b": [64, 65, 66],
              "DML | Net 1: a": [62, 63, 64.5], "DML | Net 2: b": [66, 67.2, 68],
              "IE-DML | Net 1: a": [64, 65.1, 66], "IE-DML | Net 2: b": [68, 69, 70.3]}
    claims = tv.mutual_claims(frame(values), "r", ["Net 1: a", "Net 2: b"], {}, None, "hand-made")
    assert [c.verdict for c in claims] == [analysis.REPRODUCED, analysis.REPRODUCED]


def test_book_plan():
    """The book's cuts keep what the claims need: the decisive seeds on the first pair for every IE variant and
    its base, and one Table 4 pair with enough seeds for a verdict; every table's other cells are run."""
    book = get("book")
    cells = tables.table1_cells(book)
    first = tables.arrow(scale.part2_pairs(book)[0])
    for label in ("AT", "FT", "OD", "IE-AT", "IE-FT", "IE-OD"):
        assert {c.seed for c in cells if c.row == first and c.method == label} == set(scale.part2_seeds(book, True))
    assert max(len(tables.table4_seeds(book, pair)) for pair in tables.table4_pairs(book)) >= analysis.MIN_PAIRS
    assert len(tables.table4_pairs(book)) >= 2 and len(scale.part2_pairs(book)) >= 2
    assert set(tables.table5_etas(book)) == set(tables.ETAS)
