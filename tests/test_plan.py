"""`python -m kdnb plan`: the runs each chapter asks for, expanded, deduplicated, dependencies first, cached or
not, with an estimated cost; and the agreement of the smoke plan with what the chapters really trained."""
from __future__ import annotations

import pytest

from kdnb import book_layout, plan, runs
from kdnb.__main__ import main
from kdnb.train import Schedule


def test_every_chapter_has_a_run_list():
    assert set(plan._registry()) == {plan.chapter_name(c) for c in book_layout.chapters()}
    assert plan.chapter_name(book_layout.BOOK / "part3" / "ablations.md") == "part3/ablations"


def test_plan_of_part0_lists_the_teacher_before_its_students(tmp_path):
    made = plan.make(["distillation"], "smoke", estimate=False, root=tmp_path)
    keys = [r.key for r in made.runs]
    assert len(keys) == len(set(keys))
    assert made.chapters == ["part0/distillation"]
    position = {key: i for i, key in enumerate(keys)}
    students = [r.spec for r in made.runs if r.spec.method == "kd"]
    assert students, "Part 0 distils students"
    for run in made.runs:  # every run after the runs it stands on, and those are in the plan
        for upstream in plan.dependencies(run.spec):
            assert position[upstream.key()] < position[run.key]
    assert made.runs[0].spec == students[0].teacher
    assert not any(r.cached for r in made.runs) and len(made.uncached()) == len(made.runs)


def test_expand_adds_what_a_run_stands_on_once():
    teacher = runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=32), train_per_class=4)
    students = [teacher.replace(method="kd", teacher=teacher, seed=s) for s in (0, 1)]
    expanded = plan.expand(students + [teacher])
    assert [s.key() for s in expanded] == [teacher.key(), students[0].key(), students[1].key()]


def test_a_chapter_that_is_unknown_is_an_error_listing_the_chapters():
    with pytest.raises(SystemExit, match="no chapter matches 'nosuch'.*distillation"):
        plan.make(["nosuch"], "smoke", estimate=False)
    with pytest.raises(ValueError, match="part0/distillation"):
        plan.chapter_runs("nosuch", "smoke")


def test_the_estimate_counts_steps_and_the_teachers_forward():
    teacher = runs.RunSpec("fashion_mnist", "mlp", Schedule(epochs=3, batch_size=16), train_per_class=5)
    student = teacher.replace(method="kd", teacher=teacher)
    assert plan.steps_of(teacher) == 3 * 4  # 50 images in batches of 16, three epochs
    timer = plan.StepTimer("cpu", steps=1)
    alone = timer.run_seconds(teacher)
    assert alone == pytest.approx(12 * timer(teacher))
    assert timer.run_seconds(student) == pytest.approx(12 * (timer(student) + timer(teacher, train=False)))
    assert alone > 0


def test_the_plan_states_its_cost_as_an_estimate_on_a_device_with_totals():
    teacher = runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=1, batch_size=32), train_per_class=4)
    student = teacher.replace(method="kd", teacher=teacher)
    made = plan.Plan("paper", "cuda:0", ["part0/distillation"],
                     [plan.PlannedRun(teacher, ["part0/distillation"], cached=True, seconds=20.0),
                      plan.PlannedRun(student, ["part0/distillation"], cached=False, seconds=90.0)])
    text = plan.describe(made)
    assert "2 run(s), 1 cached" in text
    assert "1 run(s), about 90 s of training on cuda:0 (all runs: 110 s)" in text
    assert "an estimate" in text and student.key() in text


def test_plan_command_prints_the_runs_and_the_total(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDNB_RUNS", str(tmp_path))
    assert main(["plan", "--profile", "smoke", "--no-estimate", "distillation"]) == 0
    out = capsys.readouterr().out
    made = plan.make(["distillation"], "smoke", estimate=False)
    assert f"{len(made.runs)} run(s), 0 cached" in out
    assert all(r.key in out for r in made.runs)
    assert f"total, runs not cached: {len(made.runs)} run(s); cost not estimated" in out


def test_the_smoke_plan_is_what_the_chapters_trained(smoke_book, smoke_book_runs):
    asked = set(smoke_book_runs)
    root = runs.runs_root()
    trained = {p.name for p in root.iterdir() if p.is_dir() and (p / "metrics.json").exists()}
    made = plan.make([], "smoke", estimate=False)
    planned = {r.key for r in made.runs}
    assert asked <= trained
    assert planned - asked == set(), "planned but never asked for by a chapter"
    assert asked - planned == set(), "asked for by a chapter but not in the plan"
    assert all(r.cached for r in made.runs)
