"""Part III, chapter III.3 (Gu et al. 2020, §5.1–5.3, Tables 2–5): the runs behind each table, the paper's sweeps,
best-of selection and the verdict rules. No training: a fake ``train`` stands in for the run cache."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from kdnb import analysis, profiles, recipes
from kdnb.studies.part3 import comparisons as cmp
from kdnb.studies.part3 import scale

SMOKE, BOOK, PAPER = profiles.SMOKE, profiles.BOOK, profiles.PAPER


# ------------------------------------------------------------------------------------------------ selection
def test_select_best_picks_the_highest_score():
    assert cmp.select_best({0.1: 80.0, 0.25: 82.5, 0.5: 81.0, 0.75: 79.0}) == 0.25


def test_select_best_breaks_ties_by_grid_order():
    # two values share the top score: the one listed first wins, whatever the numbers
    assert cmp.select_best({0.6: 80.0, 0.7: 83.0, 0.8: 83.0, 0.9: 82.0}) == 0.7
    assert cmp.select_best({0.9: 83.0, 0.6: 83.0}) == 0.9


def test_select_best_refuses_missing_scores():
    with pytest.raises(ValueError, match="no score"):
        cmp.select_best({0.1: 80.0, 0.5: math.nan})
    with pytest.raises(ValueError, match="no scores"):
        cmp.select_best({})


# ------------------------------------------------------------------------------------------------ the grids
def test_paper_grids_are_the_papers():
    # §5.1 and §5.2, quoted
    assert cmp.SWEEPS["Dropout"].paper == (0.1, 0.25, 0.5, 0.75)
    assert cmp.SWEEPS["LS"].paper == (0.6, 0.7, 0.8, 0.9)
    assert cmp.SWEEPS["CP"].paper == (0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0)
    assert cmp.SWEEPS["BAN"].paper == (1, 2, 5, 10, 20)
    assert {k: s.paper_best for k, s in cmp.SWEEPS.items() if k in ("Dropout", "LS", "CP")} == {
        "Dropout": 0.1, "LS": 0.9, "CP": 0.5}


@pytest.mark.parametrize("label", ["Dropout", "LS", "CP", "BAN"])
def test_grids_shrink_with_the_profile(label):
    sweep = cmp.SWEEPS[label]
    assert sweep.grid(PAPER, "resnet8") == sweep.paper
    book = sweep.grid(BOOK, "resnet8")
    assert set(book) < set(sweep.paper) and sweep.paper_best in book
    assert sweep.grid(BOOK, "mlp") == sweep.paper  # the MLP is cheap: the full grid at book
    assert sweep.grid(SMOKE, "resnet8") == (sweep.paper_best,)


def test_a_following_sweep_has_no_grid():
    with pytest.raises(ValueError, match="BAN"):
        cmp.SWEEPS["BAN+L"].grid(BOOK, "resnet8")


def test_a_grid_must_hold_the_papers_best():
    with pytest.raises(ValueError, match="best"):
        cmp.Sweep("X", "ce", "dropout", (0.1, 0.5), 0.1, (0.25, 0.5), in_model=True)


# ------------------------------------------------------------------------------------------------ the runs
def test_shared_students_are_the_recipes_runs():
    for seed in BOOK.seeds:
        runs = cmp.TABLE2.fixed(BOOK, "resnet8", seed)
        assert runs["CE"] == scale.part3(BOOK, "resnet8", "ce", seed)
        assert runs["LE(Grad-CAM)"] == scale.part3(BOOK, "resnet8", "le", seed)
    mlp = cmp.TABLE3.fixed(BOOK, "mlp", 0)
    assert mlp["LE(Grad)"] == scale.part3(BOOK, "mlp", "le", 0, {"explanation": "grad"})
    assert dict(mlp["LE(Grad)"].method_args)["explanation"] == "grad"


def test_born_again_student_starts_afresh_on_its_teachers_subset():
    for profile in (SMOKE, BOOK):
        for seed in cmp.seeds(profile):
            spec = cmp.SWEEPS["BAN"].spec(profile, "resnet8", 1.0, seed)
            assert spec.teacher == cmp.ce(profile, "resnet8", seed)  # the CE column of its own pair
            assert spec.subset_seed == spec.teacher.subset_seed == seed  # trained on the same images
            assert spec.seed != spec.teacher.seed  # "from scratch": another initialisation, other batches
            assert spec.seed not in cmp.seeds(profile)


def test_sweep_specs_put_the_parameter_where_it_belongs():
    drop = cmp.SWEEPS["Dropout"].spec(BOOK, "resnet8", 0.25, 1)
    assert drop.method == "ce" and dict(drop.model_args) == {"dropout": 0.25} and drop.seed == 1
    ls = cmp.SWEEPS["LS"].spec(BOOK, "resnet8", 0.7, 0)
    assert ls.method == "ls" and dict(ls.method_args)["alpha"] == 0.7 and not ls.model_args
    cp = cmp.SWEEPS["CP"].spec(BOOK, "resnet14", 2.0, 0)
    assert cp.method == "cp" and dict(cp.method_args)["beta"] == 2.0 and cp.model == "resnet14"


@pytest.mark.parametrize("label, ce_weight", [("BAN", 0.0), ("BAN+L", 0.1)])
def test_born_again_students_learn_from_a_ce_peer(label, ce_weight):
    spec = cmp.SWEEPS[label].spec(BOOK, "resnet8", 5.0, 0)
    args = dict(spec.method_args)
    assert spec.method == "ban" and args["temperature"] == 5.0 and args["ce_weight"] == ce_weight
    assert spec.teacher == scale.part3(BOOK, "resnet8", "ce", 0)  # same model, trained on labels, pair 0


@pytest.mark.parametrize("student, assistant", [("resnet8", "resnet14"), ("resnet14", "resnet20")])
def test_takd_chain_is_the_papers(student, assistant):
    chain = cmp.takd_chain(PAPER, student, 2)
    assert [s.model for s in chain] == ["resnet26", assistant, student]
    top, middle, bottom = chain
    assert top.method == "ce" and top.teacher is None
    assert middle.teacher == top and bottom.teacher == middle
    for link in (middle, bottom):
        assert link.method == "kd" and dict(link.method_args) == {"temperature": 4.0, "alpha": 0.9}
    assert middle.seed == PAPER.seeds[0] and bottom.seed == 2  # one assistant, like the one teacher
    with pytest.raises(ValueError, match="resnet8"):
        cmp.takd_chain(PAPER, "resnet20", 0)


@pytest.mark.parametrize("profile", [BOOK, PAPER], ids=["book", "paper"])
def test_teacher_based_students_share_one_teacher(profile):
    # the paper's ResNet-26 at paper; below it Part 0's teacher, on ten times a student's images
    teacher = scale.part3(PAPER, "resnet26", "ce", 0) if profile is PAPER else recipes.teacher(BOOK)
    specs = cmp.teacher_runs(profile, "resnet8", 1)
    assert set(specs) == {"KD", "Hint", "AT_Hinton", "FSP_Hinton", "TAKD"}
    assert {specs[k].method for k in specs} == {"kd", "hint", "at", "fsp"}
    for label, spec in specs.items():
        root = spec
        while root.teacher is not None:
            root = root.teacher
        assert root == teacher, label
        assert spec.model == "resnet8" and spec.seed == 1 and spec.subset_seed == 1
        args = dict(spec.method_args)
        assert args["temperature"] == 4.0 and args["alpha"] == 0.9, label  # §5.3: T = 4, lambda = 0.1
    assert dict(specs["Hint"].method_args)["hint_layer"] == "stage2"


def test_tables_list_the_papers_columns():
    assert cmp.TABLE2.order("resnet8") == ("CE", "Dropout", "LS", "CP", "LE(Grad-CAM)")
    assert cmp.TABLE3.order("mlp") == ("CE", "Dropout", "LS", "CP", "LE(Grad)")
    assert cmp.TABLE4.order("resnet14") == ("CE", "DML", "BAN", "BAN+L", "LE(Grad-CAM)")
    assert cmp.TABLE5.order("resnet8") == ("KD", "Hint", "AT_Hinton", "FSP_Hinton", "TAKD", "LE(Grad-CAM)")
    for t in cmp.TABLES.values():
        for model in t.paper_models:
            assert set(t.paper[model]) == set(t.order(model))
    assert cmp.TABLE3.value == cmp.ERROR and cmp.TABLE3.paper["mlp"]["CE"].startswith("1.39")
    assert cmp.TABLE2.models(PAPER) == ("resnet14", "resnet8") and cmp.TABLE2.models(BOOK) == ("resnet8",)
    with pytest.raises(ValueError, match="2, 3, 4, 5"):
        cmp.table(6)


@pytest.mark.parametrize("number, model, profile, expected", [
    (2, "resnet8", BOOK, 3 + 3 + 3 * (2 + 2)),           # CE, LE; three sweeps of 2 values, then 2 more seeds
    (3, "mlp", BOOK, 3 + 3 + (4 + 2) + (4 + 2) + (7 + 2)),  # the full grids on the MLP
    (4, "resnet8", BOOK, 9 + (2 + 2) + 3),                # CE, DML, LE; BAN (2 values); BAN+L at BAN's value
    (5, "resnet8", BOOK, 1 + 1 + 5 * 3 + 3),               # teacher, assistant, 5 methods, LE
    (4, "resnet8", SMOKE, 6 + 2 + 2),
])
def test_planned_runs_by_hand(number, model, profile, expected):
    assert cmp.table(number).planned_runs(profile, model) == expected


# ------------------------------------------------------------------------------------------------ building
class FakeCache:
    """Stands in for ``runs.train_or_load``: an accuracy per spec from ``score(spec)``, every call recorded."""

    def __init__(self, score):
        self.score, self.calls = score, []

    def __call__(self, spec):
        self.calls.append(spec)
        return SimpleNamespace(spec=spec, final={"test_acc": self.score(spec) / 100})


def final(run) -> float:
    """The fake runs' accuracy (%), as ``measure``."""
    return 100 * run.final["test_acc"]


def test_run_sweep_selects_on_the_first_seed_then_trains_the_choice_on_every_seed():
    fake = FakeCache(lambda s: {0.7: 85.0, 0.9: 84.0}[dict(s.method_args)["alpha"]] + s.seed)
    result = cmp.run_sweep(BOOK, cmp.SWEEPS["LS"], "resnet8", train=fake, measure=final)
    assert result.scores == pytest.approx({0.7: 85.0, 0.9: 84.0}) and result.best == 0.7
    assert sorted(result.runs) == list(BOOK.seeds)
    assert {dict(r.spec.method_args)["alpha"] for r in result.runs.values()} == {0.7}
    trained = [(dict(s.method_args)["alpha"], s.seed) for s in fake.calls]
    assert set(trained) == {(0.7, 0), (0.9, 0), (0.7, 1), (0.7, 2)}  # no seed 1/2 run of the unchosen value
    frame = result.frame()
    assert frame.loc[frame.chosen, "value"].tolist() == [0.7]


def test_build_table4_gives_ban_plus_l_bans_temperature():
    def score(spec):
        if spec.method == "ban":
            return 80 + (dict(spec.method_args)["temperature"] == 5.0)  # 5 beats 1 on every pair
        return {"ce": 79.0, "dml": 81.0, "le": 82.0}[spec.method] + spec.seed / 10

    fake = FakeCache(score)
    comparison = cmp.build(BOOK, 4, "resnet8", train=fake, measure=final)
    assert comparison.chosen() == {"BAN": 5.0, "BAN+L": 5.0}
    assert comparison.sweeps["BAN+L"].scores == {5.0: 81.0}  # taken, not swept
    frame = comparison.frame
    assert list(dict.fromkeys(frame.method)) == list(cmp.TABLE4.order("resnet8"))
    assert len(frame) == 5 * len(BOOK.seeds)
    assert np.allclose(frame[cmp.ERROR], 100 - frame[cmp.ACCURACY])
    assert set(frame.loc[frame.method == "BAN+L", "setting"]) == {"temperature=5"}
    le_minus = cmp.differences(frame, "LE(Grad-CAM)", ["CE", "DML"])
    assert le_minus["CE"].difference.mean == pytest.approx(3.0)
    assert le_minus["DML"].difference.mean == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ verdicts
def comparison_of(differences):
    return analysis.paired(np.asarray(differences, dtype=float), np.zeros(len(differences)))


def test_competitive_is_non_inferiority_within_the_margin():
    # differences 1, 2, 3: mean 2, std 1, 95% t-interval 2 -/+ 4.303 / sqrt(3) = [-0.484, 4.484]
    spread = comparison_of([1.0, 2.0, 3.0])
    assert spread.difference.ci_low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert analysis.verdict_for_competitive(spread, margin=1.0) == analysis.REPRODUCED
    assert analysis.verdict_for_competitive(spread, margin=0.4) == analysis.INCONCLUSIVE
    assert analysis.verdict_for_improvement(spread) == analysis.INCONCLUSIVE
    # differences -3.1, -3, -2.9: interval -3 -/+ 0.248
    worse = comparison_of([-3.1, -3.0, -2.9])
    assert analysis.verdict_for_competitive(worse, margin=1.0) == analysis.NOT_REPRODUCED
    assert analysis.verdict_for_competitive(worse, margin=3.5) == analysis.REPRODUCED
    assert analysis.verdict_for_competitive(comparison_of([1.0, 2.0]), margin=5) == analysis.INCONCLUSIVE
    with pytest.raises(ValueError, match="margin"):
        analysis.verdict_for_competitive(spread, margin=-1)


def test_a_claim_over_several_competitors_needs_every_one_and_fails_only_under_holm():
    better, unclear, worse = comparison_of([1.0, 1.1, 0.9]), comparison_of([1.0, 2.0, 3.0]), comparison_of(
        [-1.0, -1.1, -0.9])
    assert analysis.verdict_for_all({"a": better, "b": better}) == analysis.REPRODUCED
    assert analysis.verdict_for_all({"a": better, "b": unclear}) == analysis.INCONCLUSIVE
    assert analysis.verdict_for_all({"a": better, "b": unclear, "c": worse}) == analysis.NOT_REPRODUCED
    assert analysis.verdict_for_competitive_with_all({"a": better, "c": worse}, margin=0.5) == analysis.NOT_REPRODUCED
    assert analysis.verdict_for_competitive_with_all({"a": better, "c": worse}, margin=2.0) == analysis.REPRODUCED
    with pytest.raises(ValueError):
        analysis.verdict_for_all({})


# ------------------------------------------------------------------------------------------------ reporting
def test_optimism_is_the_winners_selection_seed_minus_its_other_seeds():
    # seed 0: 0.7 scores 85 and wins; the chosen value then scores 81 and 82 on seeds 1 and 2
    fake = FakeCache(lambda s: {(0.7, 0): 85.0, (0.9, 0): 84.0, (0.7, 1): 81.0, (0.7, 2): 82.0}[
        (dict(s.method_args)["alpha"], s.seed)])
    result = cmp.run_sweep(BOOK, cmp.SWEEPS["LS"], "resnet8", train=fake, measure=final)
    assert result.optimism() == pytest.approx(85.0 - 81.5)
    one_seed = SMOKE.with_(seeds=(0,))  # below book the chapter runs the profile's own seeds
    assert math.isnan(cmp.run_sweep(one_seed, cmp.SWEEPS["LS"], "resnet8", train=fake, measure=final).optimism())


def test_ranking_puts_the_best_first_for_accuracy_and_for_error():
    frame = pd.DataFrame({"method": ["A", "A", "B", "B", "C", "C"], cmp.ACCURACY: [80, 82, 90, 88, 70, 72]})
    frame[cmp.ERROR] = 100 - frame[cmp.ACCURACY]
    assert list(cmp.ranking(frame).index) == ["B", "A", "C"]
    assert list(cmp.ranking(frame, cmp.ERROR).index) == ["B", "A", "C"]


def test_brief_and_difference_table_name_each_pair():
    pairs = {"CE": comparison_of([1.0, 2.0, 3.0]), "LS": comparison_of([-1.0, -1.1, -0.9])}
    text = cmp.brief(pairs, "LE")
    assert text.startswith("LE − CE +2.00 [-0.48, +4.48]; LE − LS -1.00 [") and text.endswith("n=3)")
    assert cmp.brief({"Dropout − CE": pairs["CE"]}).startswith("Dropout − CE +2.00")
    table = cmp.difference_table(pairs, "LE")
    assert list(table.index) == ["LE − CE", "LE − LS"]
    assert list(table["verdict on this pair alone"]) == [analysis.INCONCLUSIVE, analysis.NOT_REPRODUCED]
    # resolution of differences 1, 2, 3: t(0.975, 2) * 1 / sqrt(3)
    assert table["resolution"].iloc[0].startswith(f"±{4.302653 / math.sqrt(3):.2f} points at n=3")
    assert cmp.paper_row(4, "resnet8").startswith("CE 87.95 ± 0.32, DML 88.23 ± 0.27, BAN 87.22")


# ------------------------------------------------------------------------------------------------ premises, families
def test_paper_effects_read_the_tables():
    assert cmp.paper_effect(2, "resnet8", "LE(Grad-CAM)", "CE") == pytest.approx(88.70 - 87.95)
    # Table 3 reports error: LE's lower error is a positive effect in accuracy points
    assert cmp.paper_effect(3, "mlp", "LE(Grad)", "CP") == pytest.approx(1.18 - 1.10)
    assert cmp.hardest(2, "resnet8", [("LE(Grad-CAM)", b) for b in ("CE", "Dropout", "LS", "CP")]) == (
        "LE(Grad-CAM)", "CP")  # 88.70 - 88.25, the smallest gap


def test_family_claim_carries_the_rule_premise_and_hardest_resolution():
    pairs = {("LE(Grad-CAM)", "CE"): comparison_of([2.0, 2.5, 3.0]),
             ("LE(Grad-CAM)", "CP"): comparison_of([0.4, 0.6, 0.5])}
    unmet = analysis.Premise("CE over-fits", "80 vs 79 (+1)", held=False, remedy="train longer")
    claim = cmp.family_claim(2, "resnet8", pairs, analysis.verdict_for_all(pairs), claim="LE beats all",
                             paper="Table 2", premise=unmet)
    assert claim.verdict == analysis.PREMISE_UNMET and claim.note.startswith("train longer")
    held = analysis.Premise("CE over-fits", "90 vs 79 (+11)", held=True)
    claim = cmp.family_claim(2, "resnet8", pairs, analysis.verdict_for_all(pairs), claim="LE beats all",
                             paper="Table 2", premise=held)
    assert claim.verdict == analysis.REPRODUCED and claim.paper_effect == "+0.45 points"  # the CP pair
    # the CP pair's resolution, as one test of a family of two: t(1 - 0.05 / 4, 2) * s / sqrt(3)
    assert claim.resolution.startswith(f"±{6.205347 * 0.1 / math.sqrt(3):.2f} points at n=3")


def test_table_premises_are_measured_on_the_tables_runs(monkeypatch):
    accuracy = {"ce": 80.0, "teacher": 90.0, "assistant": 82.0}

    def kind(spec):
        if spec == cmp.teacher(PAPER):
            return "teacher"
        return "assistant" if spec.model == cmp.TAKD_ASSISTANT["resnet8"] else "ce"

    fake = FakeCache(lambda spec: accuracy[kind(spec)])
    monkeypatch.setattr(scale, "part3_train_accuracy", lambda run: 83.0)  # CE gap: 3 points
    built = cmp.Comparison(cmp.TABLE2, "resnet8", pd.DataFrame(), {})
    regularizers = cmp.premise(PAPER, built, train=fake)
    assert not regularizers.held and "over-fits" in regularizers.requirement
    monkeypatch.setattr(scale, "part3_train_accuracy", lambda run: 99.0)
    assert cmp.premise(PAPER, built, train=fake).held
    teachers = cmp.premise(PAPER, cmp.Comparison(cmp.TABLE5, "resnet8", pd.DataFrame(), {}), train=fake)
    assert not teachers.held  # the teacher leads by 10, the assistant by 2 < analysis.TEACHER_MARGIN
    assert "teacher (resnet26)" in teachers.measured or "+10.00" in teachers.measured
    accuracy["assistant"] = 84.0
    assert cmp.premise(PAPER, cmp.Comparison(cmp.TABLE5, "resnet8", pd.DataFrame(), {}), train=fake).held
