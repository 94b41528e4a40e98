"""`kdnb run --executor`: the planned runs trained as submitit jobs give the runs sequential training gives; a job
killed mid-run is reported, the runs standing on it are held back, and a resubmission resumes it; the SLURM
options reach the submission script; the chapters never execute on partial results."""
from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import cloudpickle
import pytest
import torch

from kdnb import jobs, notebooks, plan, runs, storage
from kdnb.__main__ import main
from kdnb.train import Schedule

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the jobs unpickle KilledAfterFirstEpoch by value


class KilledAfterFirstEpoch(jobs.TrainJob):
    """A job whose process is killed (SIGKILL, nothing cleaned up) right after its run saved ``state.pt`` for the
    first epoch: a node lost or a job pre-empted without warning."""

    def __call__(self) -> str:
        from kdnb.train import Trainer

        save_state = Trainer._save_state

        def save_then_die(trainer, *args, **kwargs):
            save_state(trainer, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        Trainer._save_state = save_then_die
        return super().__call__()


def tiny_runs() -> tuple[runs.RunSpec, list[runs.RunSpec]]:
    """A teacher, two students distilled from it (one shared teacher run) and an independent CE run: ResNet-8
    (BatchNorm buffers) on 50 Fashion-MNIST images, two epochs of two steps."""
    teacher = runs.RunSpec("fashion_mnist", "resnet8", Schedule(epochs=2, batch_size=25, lr=0.05),
                           train_per_class=5, test_per_class=2, augment=None)
    students = [teacher.replace(method="kd", teacher=teacher, seed=s) for s in (1, 2)]
    return teacher, [teacher, *students, teacher.replace(seed=3)]


def test_local_jobs_train_what_sequential_training_does_and_resume_a_killed_one(tmp_path, monkeypatch):
    monkeypatch.setenv("KDNB_THREADS", "1")  # the jobs' and this process's arithmetic alike
    teacher, specs = tiny_runs()
    ordered = plan.expand(specs)
    assert [s.key() for s in ordered][0] == teacher.key() and len(ordered) == 4
    root, logs = tmp_path / "runs", tmp_path / "logs"
    options = jobs.JobOptions(gpus_per_job=0, time_min=10, log_folder=logs)

    def job(spec, where, threads):
        return (KilledAfterFirstEpoch if spec == teacher else jobs.TrainJob)(spec, where, threads)

    lines = []
    first = jobs.train(ordered, "local", workers=2, options=options, root=root, poll_s=0.2, log=lines.append, job=job)
    assert first.trained == [specs[3].key()]  # the independent run; the students wait for their teacher
    assert [f.spec for f in first.failures] == [teacher]
    assert sorted(s.key() for s in first.skipped) == sorted(s.key() for s in specs[1:3])
    report = first.failures[0].report()
    assert teacher.label in report and teacher.key() in report and str(logs) in report
    state = storage.load_torch(root / teacher.key() / "state.pt")
    assert len(state["history"]) == 1 and not (root / teacher.key() / "metrics.json").exists()
    assert any("RUNNING" in line for line in lines)

    remaining = [s for s in ordered if runs.finished(s, root) is None]
    second = jobs.train(remaining, "local", workers=2, options=options, root=root, poll_s=0.2, log=lines.append)
    assert second.failures == [] and sorted(second.trained) == sorted(s.key() for s in specs[:3])
    resumed = runs.finished(teacher, root)
    assert resumed.history[0]["train_time_s"] == state["history"][0]["train_time_s"]  # epoch 1 kept, not redone

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # sequential training in a fresh cache, in this process
        sequential = [runs.train_or_load(spec, root=tmp_path / "sequential", device="cpu") for spec in specs]
    finally:
        torch.set_num_threads(threads)
    for spec, alone in zip(specs, sequential):
        fanned = runs.finished(spec, root)
        assert fanned.final == alone.final
        ours = storage.load_torch(fanned.path / "final.pt")["student"]
        theirs = storage.load_torch(alone.path / "final.pt")["student"]
        assert any("running_mean" in k for k in ours) and ours.keys() == theirs.keys()
        for name in ours:
            assert torch.equal(ours[name], theirs[name]), f"{spec.label}: {name}"


def test_a_preempted_job_requeues_itself(tmp_path):
    _, specs = tiny_runs()
    job = jobs.TrainJob(specs[1], tmp_path, threads=2)
    again = job.checkpoint()
    assert again.function is job and runs.RunSpec.from_dict(again.function.spec) == specs[1]


def test_slurm_options_reach_the_submission_script(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "srun"  # submitit only looks for srun on the PATH to accept a SLURM cluster
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    options = jobs.JobOptions(partition="gpu", gpus_per_job=2, time_min=90, cpus_per_task=6, mem_gb=32,
                              log_folder=tmp_path / "logs")
    chosen = jobs.executor("slurm", options.folder(tmp_path), options)
    script = chosen._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --mem=32GB", f"#SBATCH --output={tmp_path / 'logs'}"):
        assert line in script, line


def test_the_chapters_execute_only_when_every_run_is_trained(monkeypatch):
    _, specs = tiny_runs()
    executed, plans = [], iter([[specs[0]], [specs[0]], []])
    monkeypatch.setattr(notebooks, "run", lambda names, profile: executed.append((names, profile)) or 0)
    monkeypatch.setattr(plan, "make", lambda names, profile, estimate: plan.Plan(
        profile, "cpu", names, [plan.PlannedRun(s) for s in next(plans)]))
    failure = jobs.Failure(specs[0], "1", Path("out"), Path("err"), "Traceback: boom")
    outcomes = iter([jobs.Outcome(failures=[failure]), jobs.Outcome(trained=[specs[0].key()])])
    monkeypatch.setattr(jobs, "train", lambda *args, **kwargs: next(outcomes))
    assert jobs.run(["distillation"], "smoke", "local") == 1 and executed == []  # a failed job: no chapters
    assert jobs.run(["distillation"], "smoke", "local") == 0  # trained, planned again: nothing left
    assert executed == [(["distillation"], "smoke")]


def test_run_without_an_executor_is_the_plain_runner(monkeypatch):
    calls = []
    monkeypatch.setattr(notebooks, "run", lambda names, profile: calls.append(("chapters", names, profile)) or 0)
    monkeypatch.setattr(jobs, "run", lambda names, profile, kind, workers, options:
                        calls.append(("jobs", kind, workers, options.partition, options.gpus_per_job)) or 0)
    assert main(["run", "--profile", "smoke", "distillation"]) == 0
    assert main(["run", "--profile", "paper", "--executor", "slurm", "--partition", "a100", "--gpus-per-job", "2"]) == 0
    assert calls == [("chapters", ["distillation"], "smoke"), ("jobs", "slurm", 64, "a100", 2)]
