"""Part III's scale (Gu et al. 2020 at the book's size): seeds, subsets, teachers, the evaluation set and the two
premises (teacher ahead of the CE student; the CE student over-fits). Expected values are worked from the brief's
and the paper's numbers, not from the helpers under test."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kdnb import analysis, profiles, recipes, runs
from kdnb.studies.part3 import scale
from kdnb.train import Schedule, evaluate

SMOKE, BOOK, PAPER = profiles.SMOKE, profiles.BOOK, profiles.PAPER


def fake_run(spec, accuracy: float):
    """A finished run as the premise helpers read it: its spec and its final test accuracy (a fraction)."""
    return SimpleNamespace(spec=spec, final={"test_acc": accuracy / 100})


# ------------------------------------------------------------------------------------------------ seeds, subsets
def test_decisive_claims_get_five_seeds_at_book():
    assert scale.part3_seeds(BOOK, decisive=True) == (0, 1, 2, 3, 4)
    assert scale.part3_seeds(BOOK) == (0, 1, 2)
    assert len(scale.part3_seeds(PAPER)) == 5  # the paper's five trials
    assert scale.part3_seeds(SMOKE, decisive=True) == SMOKE.seeds


def test_each_seed_draws_its_own_subset_and_the_runs_of_a_seed_share_it():
    ce = [scale.part3(BOOK, "resnet8", "ce", s) for s in (0, 1, 2)]
    assert [s.subset_seed for s in ce] == [0, 1, 2]
    assert scale.part3(BOOK, "resnet8", "le", 1).subset_seed == ce[1].subset_seed
    a, b = (runs.batches(spec.replace(train_per_class=3), "train", device="cpu") for spec in ce[:2])
    assert torch.equal(a.labels.bincount(), b.labels.bincount())  # class-stratified: three of each class...
    assert not torch.equal(a.images, b.images), "two seeds drew the same training images"  # ...other images
    # an explicit subset keeps the data and changes only the initialisation and batches
    other = scale.part3(BOOK, "resnet8", "ce", 1000, subset_seed=1)
    assert other.subset_seed == 1 and other.seed == 1000


def test_book_students_train_long_enough_without_augmentation():
    for model in ("resnet8", "mlp"):
        spec = scale.part3(BOOK, model)
        assert spec.augment is None and spec.train_per_class == 100
        assert spec.schedule.epochs == scale.PART3_BOOK["epochs"] > 6  # longer than the 6 that under-fitted
    cnn = scale.part3(BOOK, "cnn6")
    assert cnn.schedule.epochs == scale.PART3_CNN_EPOCHS["book"] and cnn.augment is None
    assert scale.part3(PAPER, "resnet8").augment == "default"  # the paper's standard augmentation
    assert scale.part3(PAPER, "resnet8").schedule.epochs == 160


# ------------------------------------------------------------------------------------------------ teachers
def test_teacher_below_paper_is_part0s_on_ten_times_the_students_data():
    for family in ("cnn", "resnet"):
        teacher = scale.part3_teacher(BOOK, family)
        assert teacher == recipes.teacher(BOOK)  # the very run Part 0 trains
        student = scale.part3(BOOK, "cnn6" if family == "cnn" else "resnet8")
        assert teacher.dataset == student.dataset
        assert teacher.train_per_class == 10 * student.train_per_class  # "ten times the students' data"
        assert teacher.method == "ce" and teacher.teacher is None


def test_teacher_at_paper_is_the_papers():
    cnn, resnet = scale.part3_teacher(PAPER, "cnn"), scale.part3_teacher(PAPER, "resnet")
    assert (cnn.model, cnn.dataset, cnn.schedule.epochs) == ("cnn10", "cifar10", 160)
    assert (resnet.model, resnet.dataset) == ("resnet26", "cifar10")
    with pytest.raises(ValueError, match="cnn, resnet"):
        scale.part3_teacher(BOOK, "vgg")


# ------------------------------------------------------------------------------------------------ premises
def test_a_weak_teacher_makes_a_kd_claim_premise_unmet():
    # paper profile: the runs are evaluated on the whole test split, so their own final accuracy is read
    ce = [fake_run(scale.part3(PAPER, "cnn6", "ce", s), a) for s, a in enumerate((80.0, 81.0, 82.0))]
    kd = [83.0, 84.5, 85.0]
    comparison = analysis.paired(kd, [80.0, 81.0, 82.0])
    weak = scale.part3_teacher_premise(fake_run(scale.part3_teacher(PAPER, "cnn"), 82.5), ce, PAPER)
    assert not weak.held and "+1.50" in weak.measured  # 82.5 - mean(80, 81, 82) = 1.5 < 3
    claim = analysis.judged("KD beats CE", "Table 1", comparison, paper_effect=1.37, premise=weak)
    assert claim.verdict == analysis.PREMISE_UNMET and claim.premise_held is False
    strong = scale.part3_teacher_premise(fake_run(scale.part3_teacher(PAPER, "cnn"), 84.0), ce, PAPER)
    assert strong.held  # +3.0 is the margin itself
    assert analysis.judged("KD beats CE", "Table 1", comparison, paper_effect=1.37,
                           premise=strong).verdict == analysis.REPRODUCED


def test_overfitting_premise_reads_train_against_test(monkeypatch):
    ce = [fake_run(scale.part3(PAPER, "resnet8", "ce", s), a) for s, a in enumerate((78.0, 79.0, 80.0))]
    train = {0: 90.0, 1: 88.0, 2: 86.0}
    monkeypatch.setattr(scale, "part3_train_accuracy", lambda run: train[run.spec.seed])
    held = scale.part3_overfit_premise(ce, PAPER)
    assert held.held and "88.00 vs 79.00 (+9.00)" in held.measured
    train.update({0: 82.0, 1: 83.0, 2: 84.0})  # a gap of 4 points: under analysis.OVERFIT_GAP
    unmet = scale.part3_overfit_premise(ce, PAPER)
    assert not unmet.held and unmet.remedy


# ------------------------------------------------------------------------------------------------ evaluation
def test_book_measures_every_final_accuracy_on_the_whole_test_split():
    assert scale.part3_evaluation(BOOK) is None
    assert scale.part3_evaluation(SMOKE) == scale.PART3_SMOKE["test_per_class"]
    assert scale.part3_evaluation(PAPER) is None
    run = fake_run(scale.part3(PAPER, "resnet8"), 91.25)
    assert scale.part3_test_accuracy(run, PAPER) == pytest.approx(91.25)  # its own metric: the same set


@pytest.mark.timeout(300)
def test_test_and_train_accuracy_are_measured_on_the_stated_images():
    spec = runs.RunSpec(dataset="fashion_mnist", model="mlp", train_per_class=2, test_per_class=1,
                        schedule=Schedule(epochs=1, batch_size=8, lr=0.01, lr_schedule="constant",
                                          checkpoints=(0, 1)), augment=None, subset_seed=3, seed=3)
    run = runs.train_or_load(spec)
    net = run.model()
    whole = evaluate(net, runs.batches(spec.replace(test_per_class=None), "test").batches(0, 0))["acc"]
    assert scale.part3_test_accuracy(run, BOOK) == pytest.approx(100 * whole)
    own = evaluate(net, runs.batches(spec, "train").batches(0, 0))["acc"]  # 20 images, no augmentation
    assert scale.part3_train_accuracy(run) == pytest.approx(100 * own)
    assert math.isclose(scale.part3_test_accuracy(run, BOOK), 100 * whole)  # cached: the same number again


def test_networks_frame_shows_teacher_beside_students(monkeypatch):
    monkeypatch.setattr(scale, "part3_train_accuracy", lambda run: 95.0)
    teacher = fake_run(scale.part3_teacher(PAPER, "resnet"), 90.0)
    students = [fake_run(scale.part3(PAPER, "resnet8", "ce", s), a) for s, a in enumerate((84.0, 86.0))]
    frame = scale.part3_networks_frame({"teacher": [teacher], "CE resnet8": students}, PAPER,
                                         train_accuracy=True)
    assert list(frame.index) == ["teacher", "CE resnet8"]
    assert frame.loc["CE resnet8", "test accuracy (%)"] == pytest.approx(85.0)
    assert frame.loc["CE resnet8", "train − test (points)"] == pytest.approx(10.0)
    assert frame.loc["teacher", "network"] == "resnet26" and frame.loc["CE resnet8", "runs"] == 2
    assert np.isfinite(frame["test accuracy (%)"]).all()
