"""kdnb.studies.part3.dissection: the per-batch transform frames of §3 (Eqs. 2-5), the run lists of Tables 1 and 6, the
per-seed gains. Expected values are worked by hand from the paper's definitions, not from our helpers."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from kdnb import distill, profiles, recipes
from kdnb.studies.part3 import dissection, scale

NAMES = [f"c{k}" for k in range(4)]


def _logits_with_probs(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log()


def test_sample_weights_frame_by_hand():
    # q_max = 0.5, 0.8, 0.7 (sum 2.0): CWTM relative weights b * q / sum = 3 * (0.25, 0.40, 0.35)
    logits = _logits_with_probs([[0.5, 0.3, 0.1, 0.1], [0.1, 0.8, 0.05, 0.05], [0.1, 0.1, 0.1, 0.7]])
    frame = dissection.sample_weights_frame(logits, beta=0.5, seed=3)
    by = {name: part.sort_values("sample") for name, part in frame.groupby("transform")}
    assert set(by) == {"CE", "CWTM", "CWTM-Permut", "CWTM-Random"}
    assert by["CE"]["relative weight"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert by["CWTM"]["relative weight"].tolist() == pytest.approx([0.75, 1.2, 1.05])
    assert by["CWTM"]["teacher confidence"].tolist() == pytest.approx([0.5, 0.8, 0.7])
    # the permuted weights are CWTM's weights in another order
    assert sorted(by["CWTM-Permut"]["relative weight"]) == pytest.approx(sorted([0.75, 1.2, 1.05]))
    for name in by:  # every weighting of a batch sums to b (to 1 before the factor b), like CE's 1/b
        assert by[name]["relative weight"].sum() == pytest.approx(3.0)
    # random confidences c in [0.5, 1): relative weight 3c / sum(c) lies in [3*0.5/(0.5+2*1), 3*1/(1+2*0.5)]
    random = by["CWTM-Random"]["relative weight"]
    assert (random >= 1.5 / 2.5 - 1e-6).all() and (random <= 3.0 / 2.0 + 1e-6).all()


def test_sample_weights_frame_is_seeded():
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    a = dissection.sample_weights_frame(logits, seed=1)
    assert a.equals(dissection.sample_weights_frame(logits, seed=1))
    assert not a.equals(dissection.sample_weights_frame(logits, seed=2))


def test_dkpp_frame_keeps_argmax_and_the_set_of_probabilities():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [2.0, 0.0, 0.5, 1.0]])
    frame = dissection.dkpp_frame(logits, 0, NAMES, temperature=2.0, seed=0)
    original = frame[frame.target == "teacher (KD)"].set_index("class")["probability"]
    permuted = frame[frame.target == "permuted (DKPP)"].set_index("class")["probability"]
    # softmax([0, 3, 1, 2] / 2) by hand
    e = [math.exp(v / 2) for v in (0.0, 3.0, 1.0, 2.0)]
    assert original.tolist() == pytest.approx([v / sum(e) for v in e])
    assert permuted.idxmax() == "c1" and permuted["c1"] == pytest.approx(original["c1"])
    assert sorted(permuted) == pytest.approx(sorted(original))
    assert permuted.sum() == pytest.approx(1.0)


def test_dkpp_frame_does_permute_for_some_seed():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    names = [f"c{k}" for k in range(6)]
    orders = {tuple(dissection.dkpp_frame(logits, 0, names, seed=s).query("target == 'permuted (DKPP)'")
                    ["probability"].round(6)) for s in range(6)}
    assert len(orders) > 1


def test_weight_spread_by_hand():
    frame = pd.DataFrame({"transform": ["A"] * 3, "sample": [0, 1, 2], "teacher confidence": [0.5, 0.8, 0.7],
                          "relative weight": [0.75, 1.2, 1.05]})
    row = dissection.weight_spread(frame).loc["A"]
    assert row["max / min"] == pytest.approx(1.6)
    assert row["correlation with confidence"] == pytest.approx(1.0)  # weights proportional to confidence


def test_gains_over_pairs_by_seed_not_position():
    frame = pd.DataFrame({"model": ["m"] * 4, "method": ["CE", "CE", "KD", "KD"], "seed": [0, 1, 1, 0],
                          "test accuracy (%)": [80.0, 82.0, 85.0, 81.0]})
    gains = dissection.gains_over(frame, "CE").set_index("seed")["gain (points)"]
    assert gains.loc[0] == pytest.approx(1.0) and gains.loc[1] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no method == 'LS'"):
        dissection.gains_over(frame, "LS")


def test_paper_numbers():
    assert dissection.paper_gain(dissection.TABLE1_PAPER["cnn8"], "KD", "CE") == pytest.approx(1.62)
    assert dissection.paper_column({"KD": (88.48, 0.33)}) == {"KD": "88.48 ± 0.33 (n=5)"}
    for table in (dissection.TABLE1_PAPER, dissection.TABLE6_PAPER):
        for row in table.values():
            assert all(50 < mean < 100 and 0 < std < 1 for mean, std in row.values())


@pytest.mark.parametrize("name", ["smoke", "book", "paper"])
def test_table1_specs(name):
    profile = profiles.get(name)
    teacher = dissection.table1_teacher(profile)
    if name == "paper":
        assert teacher == scale.part3(profile, "cnn10", "ce", 0)  # the paper's CNN-10, trained like its students
    else:  # the book's shared teacher (Part 0's), on more data than its students: the KD premise
        assert teacher == recipes.teacher(profile)
        assert teacher.train_per_class > scale.part3(profile, "cnn6").train_per_class
    for student in dissection.table1_students(profile):
        for label, (method, _) in dissection.TABLE1_METHODS.items():
            spec = dissection.table1_spec(profile, student, label, 1, teacher)
            assert (spec.model, spec.method, spec.seed) == (student, method, 1)
            assert spec.schedule == scale.part3_schedule(profile, student)
            # CE and CWTM-Random take no teacher; the others distil from the CNN-10 run
            assert (spec.teacher is None) == (label in ("CE", "CWTM-Random"))
            if spec.teacher is not None:
                assert spec.teacher == teacher
    assert dict(dissection.table1_spec(profile, "cnn6", "CWTM-Random", 0, teacher).method_args)["beta"] == 0.5
    # CE is the very run other chapters ask for
    assert dissection.table1_spec(profile, "cnn6", "CE", 0, teacher) == scale.part3(profile, "cnn6", "ce", 0)
    assert "cnn8" in dissection.table1_students(profiles.get("paper"))


def test_table1_runs_the_decisive_columns_on_five_seeds_at_book():
    book = profiles.get("book")
    teacher = dissection.table1_teacher(book)
    specs = dissection.table1_specs(book, "cnn6", teacher)
    seeds = {}
    for labels, spec in specs:
        seeds.setdefault(labels["method"], []).append(labels["seed"])
        assert spec.seed == labels["seed"] and spec.subset_seed == labels["seed"]  # each seed its own subset
    assert {m: len(s) for m, s in seeds.items()} == {"CE": 5, "KD": 5, "DKPP": 5, "CWTM": 3, "CWTM-Permut": 3,
                                                     "CWTM-Random": 3}
    assert len(specs) == len({spec.key() for _, spec in specs}) == 3 * 5 + 3 * 3


def test_table6_models_drop_the_resnet14_below_paper():
    assert dissection.table6_models(profiles.get("paper")) == ("resnet8", "resnet14", "mlp")
    assert dissection.table6_models(profiles.get("book")) == ("resnet8", "mlp")


def test_unknown_column_and_profile_name_the_choices():
    profile = profiles.get("smoke")
    with pytest.raises(ValueError, match="CWTM-Permut"):
        dissection.table1_spec(profile, "cnn6", "cwtm", 0, dissection.table1_teacher(profile))
    with pytest.raises(ValueError, match="LE-Permut"):
        dissection.table6_spec(profile, "resnet8", "LE-P", 0)
    with pytest.raises(ValueError, match="smoke"):
        dissection.table1_students(profile.with_(name="tiny"))


def test_table6_specs_share_the_other_chapters_runs():
    profile = profiles.get("book")
    for model in ("resnet8", "resnet14"):  # LE(Grad-CAM) with NO method args, as III.2 and III.3 ask for it
        assert dissection.table6_spec(profile, model, "LE", 2) == scale.part3(profile, model, "le", 2)
        assert dissection.table6_spec(profile, model, "CE", 2) == scale.part3(profile, model, "ce", 2)
        permut = dissection.table6_spec(profile, model, "LE-Permut", 2)
        assert permut.method == "le_permut" and dict(permut.method_args)["explanation"] == "gradcam"
    mlp = dissection.table6_spec(profile, "mlp", "LE", 0)
    assert mlp == scale.part3(profile, "mlp", "le", 0, {"explanation": "grad"})
    assert dict(dissection.table6_spec(profile, "mlp", "LE-Permut", 0).method_args)["explanation"] == "grad"
    # the warm-up ablation's default share is the shared LE run; 0 is another run
    assert dissection.warmup_spec(profile, "resnet8", 0.2, 1) == scale.part3(profile, "resnet8", "le", 1)
    assert dissection.warmup_spec(profile, "resnet8", 0.0, 1) != scale.part3(profile, "resnet8", "le", 1)


def test_available_rows_follow_the_registry(monkeypatch):
    assert set(dissection.available_rows()) >= {"CE", "LE-Permut", "LE"}
    monkeypatch.delitem(distill.METHODS, "le_permut")
    assert "LE-Permut" not in dissection.available_rows()


def test_le_target_frame_by_hand():
    # one sample, three classes, label 0; maps e0 = (1, 0), e1 = (1, 0) (cos 1), e2 = (0, 1) (cos 0)
    maps = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    frame = dissection.le_target_frame(maps, torch.tensor([0]), 0, NAMES[:3], alpha=0.9, seed=0)
    le = frame[frame.target == "LE"]["probability"].tolist()
    # Eq. 6: q1 = 0.1 * (1 + 1) / ((1 + 1) + (0 + 1)) = 0.2 / 3, q2 = 0.1 / 3
    assert le == pytest.approx([0.9, 0.2 / 3, 0.1 / 3])
    permuted = frame[frame.target == "LE-Permut"]["probability"].tolist()
    assert permuted[0] == pytest.approx(0.9) and sorted(permuted[1:]) == pytest.approx([0.1 / 3, 0.2 / 3])
