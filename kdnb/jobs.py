"""``kdnb run --executor slurm|local``: the chapters' runs fanned out as independent jobs (submitit), then the
chapters executed on the cached results.

A chapter trains its runs one after another in its kernel. At the ``paper`` profile that is days on one GPU,
while most runs are independent. So the runner first asks the plan (:mod:`kdnb.plan`) which runs the chapters
will ask for and which are not cached yet, trains each of those as a job of its own — on a SLURM cluster, or as
local processes — and only then executes the chapters, which find every run in the cache.

- **Dependencies.** A job is submitted once every run it stands on (its teacher, its input runs) is finished:
  no job holds a GPU while it waits for another. The cache's locks (:func:`kdnb.storage.locked`) remain the
  safety net: two jobs, or a job and a kernel, never train the same run twice.
- **Pre-emption.** Each job calls :func:`kdnb.runs.train_or_load`, which resumes from the run's ``state.pt``
  (written after every epoch). On SLURM pre-emption or time-out submitit calls :meth:`TrainJob.checkpoint`, which
  requeues the same job; a job that is killed otherwise resumes when it is submitted again (the next
  ``kdnb run --executor``).
- **Failures.** A failed job is reported with its run (label and key), its log files and its traceback; the runs
  that stand on it are not submitted, and the chapters are not executed on partial results (non-zero exit).
- **Sweeps.** Some runs are known only once others are trained (a sweep's chosen value, Part III). After the jobs
  the runner plans again and trains what appeared, up to :data:`MAX_ROUNDS` times.

The run cache (``$KDNB_RUNS``) and the log folder must be on a filesystem that every node sees.
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import plan, runs
from .runs import RunSpec

EXECUTORS = ("local", "slurm")
MAX_ROUNDS = 3  # plan → train → plan again (a sweep's chosen value appears once its grid is trained)


@dataclass(frozen=True)
class JobOptions:
    """What each job asks of the cluster: ``partition`` (SLURM; ``None``: the cluster's default), GPUs per job,
    a time limit in minutes, CPUs per task, memory in GB (``None``: the partition's default), and the folder of the
    jobs' logs and submission files (``None``: ``<run cache>/jobs``; on SLURM it must be shared with the nodes)."""

    partition: str | None = None
    gpus_per_job: int = 1
    time_min: int = 24 * 60
    cpus_per_task: int = 8
    mem_gb: int | None = None
    log_folder: Path | None = None

    def folder(self, root: Path) -> Path:
        return Path(self.log_folder) if self.log_folder is not None else root / "jobs"


class TrainJob:
    """One run, trained (or finished from its ``state.pt``) by :func:`kdnb.runs.train_or_load` in a job.

    The spec travels as its dict (``RunSpec.to_dict``), rebuilt in the job. ``threads``: torch threads of the job
    (``KDNB_THREADS``), for CPU jobs sharing a machine."""

    def __init__(self, spec: RunSpec, root: str | Path, threads: int | None = None):
        self.spec = spec.to_dict()
        self.root = str(root)
        self.threads = threads

    def __call__(self) -> str:
        import kdnb

        if self.threads:
            os.environ["KDNB_THREADS"] = str(self.threads)
        os.environ["KDNB_RUNS"] = self.root
        kdnb.setup(seed=0)  # the chapters' torch settings (threads, deterministic cuDNN)
        run = runs.train_or_load(RunSpec.from_dict(self.spec), root=self.root)
        return str(run.path)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on pre-emption or time-out: requeue this very job. The run resumes from the state
        its trainer saved after the last finished epoch."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass
class JobRecord:
    """A submitted job: its run, the submitit job, and the last state seen."""

    spec: RunSpec
    job: Any
    slot: int
    state: str = ""


@dataclass
class Failure:
    """A job that did not finish its run: the run, the job's id, its log files and what went wrong."""

    spec: RunSpec
    job_id: str
    stdout: Path | None
    stderr: Path | None
    error: str

    def report(self) -> str:
        return (f"FAILED {self.spec.label} (run {self.spec.key()}), job {self.job_id}\n"
                f"  stdout: {self.stdout}\n  stderr: {self.stderr}\n"
                + "\n".join("  " + line for line in self.error.rstrip().splitlines()))


@dataclass
class Outcome:
    """What :func:`train` did: the keys it trained, the failures, and the runs skipped because one they stand on
    failed."""

    trained: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)


def executor(kind: str, folder: Path, options: JobOptions) -> Any:
    """A submitit executor: ``"local"`` (processes on this machine; no SLURM needed) or ``"slurm"``."""
    import submitit

    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; choose one of: {', '.join(EXECUTORS)}")
    if kind == "local":
        chosen = submitit.LocalExecutor(folder=folder)
        chosen.update_parameters(timeout_min=options.time_min)
        return chosen
    try:
        chosen = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    except RuntimeError as error:  # submitit looks for srun
        raise SystemExit(f"--executor slurm: {error} (on a single machine use --executor local)") from None
    extra = {"slurm_partition": options.partition} if options.partition else {}
    if options.mem_gb is not None:
        extra["mem_gb"] = options.mem_gb
    chosen.update_parameters(timeout_min=options.time_min, gpus_per_node=options.gpus_per_job,
                             cpus_per_task=options.cpus_per_task, nodes=1, tasks_per_node=1, name="kdnb", **extra)
    return chosen


def _local_gpus(slot: int, options: JobOptions) -> dict:
    """Local jobs on a GPU machine: the job in worker slot ``slot`` sees GPU ``slot`` modulo the GPU count
    (submitit's local executor hides every GPU from a job that asks for none)."""
    import torch

    count = torch.cuda.device_count()
    if count == 0 or options.gpus_per_job == 0:
        return {"gpus_per_node": 0}
    first = (slot * options.gpus_per_job) % count
    visible = tuple((first + i) % count for i in range(min(options.gpus_per_job, count)))
    return {"gpus_per_node": len(visible), "visible_gpus": visible}


def _upstream(spec: RunSpec) -> set[str]:
    """Keys of every run ``spec`` stands on, directly or not."""
    return {s.key() for s in plan.expand([spec])} - {spec.key()}


def _failure(record: JobRecord, error: BaseException) -> Failure:
    paths = getattr(record.job, "paths", None)
    stdout = getattr(paths, "stdout", None)
    stderr = getattr(paths, "stderr", None)
    text = str(error)
    if stderr is not None and Path(stderr).exists() and "Traceback" not in text:
        tail = Path(stderr).read_text(errors="replace").splitlines()[-30:]
        text += "\n(last lines of stderr)\n" + "\n".join(tail)
    return Failure(record.spec, str(record.job.job_id), stdout, stderr, text)


JobFactory = Callable[[RunSpec, Path, "int | None"], Any]


def train(specs: Sequence[RunSpec], kind: str = "local", workers: int = 1, options: JobOptions | None = None,
          root: str | Path | None = None, poll_s: float = 2.0, log: Callable[[str], None] | None = None,
          job: JobFactory = TrainJob) -> Outcome:
    """Train ``specs`` (the runs not cached, dependencies first: :meth:`kdnb.plan.Plan.uncached`) as jobs of
    ``kind``, at most ``workers`` at a time, each submitted once the runs it stands on are finished; report each
    job's state changes through ``log``. Runs standing on a failed one are skipped. ``job`` makes the submitted
    callable (:class:`TrainJob`)."""
    options = options or JobOptions()
    root = (Path(root) if root is not None else runs.runs_root()).resolve()  # the jobs may start elsewhere
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    chosen = executor(kind, options.folder(root), options)
    # CPU jobs sharing this machine share its cores, unless KDNB_THREADS says otherwise (the jobs inherit it).
    threads = max(1, (os.cpu_count() or 1) // workers) if kind == "local" and not os.environ.get("KDNB_THREADS") \
        else None
    keys = {s.key() for s in specs}
    needs = {s.key(): _upstream(s) & keys for s in specs}  # the runs each waits for
    pending = list(specs)
    running: dict[str, JobRecord] = {}
    done: set[str] = set()
    lost: set[str] = set()  # failed or skipped
    outcome = Outcome()
    while pending or running:
        free = [slot for slot in range(workers) if slot not in {r.slot for r in running.values()}]
        for spec in list(pending):
            needed = needs[spec.key()]
            if needed & lost:
                pending.remove(spec)
                lost.add(spec.key())
                outcome.skipped.append(spec)
                log(f"[kdnb jobs] skipped {spec.label} ({spec.key()}): a run it stands on failed")
            elif needed <= done and free:
                slot = free.pop(0)
                if kind == "local":
                    chosen.update_parameters(**_local_gpus(slot, options))
                submitted = chosen.submit(job(spec, root, threads))
                running[spec.key()] = JobRecord(spec, submitted, slot)
                pending.remove(spec)
                log(f"[kdnb jobs] submitted {spec.label} ({spec.key()}) as job {submitted.job_id}")
        for key, record in list(running.items()):
            state = record.job.state
            if state != record.state:
                record.state = state
                log(f"[kdnb jobs] {record.spec.label} ({key}), job {record.job.job_id}: {state}")
            if not record.job.done():
                continue
            del running[key]
            try:
                record.job.result()
            except Exception as error:  # the job's exception, with its traceback, or why it did not finish
                lost.add(key)
                outcome.failures.append(_failure(record, error))
                log(f"[kdnb jobs] {record.spec.label} ({key}): FAILED")
                continue
            done.add(key)
            outcome.trained.append(key)
            log(f"[kdnb jobs] {record.spec.label} ({key}): finished")
        if pending or running:
            time.sleep(poll_s)
    return outcome


def run(names: list[str], profile: str | None, kind: str, workers: int = 1, options: JobOptions | None = None,
        poll_s: float = 10.0) -> int:
    """``python -m kdnb run --executor KIND``: train the chapters' runs that are not cached as jobs (planning
    again while new runs appear), then execute the chapters (:func:`kdnb.notebooks.run`), which load every run
    from the cache. Any failed job: its report, and a non-zero exit without executing the chapters."""
    from . import notebooks

    for round_number in itertools.count(1):
        todo = plan.make(names, profile, estimate=False).uncached()
        if not todo:
            break
        if round_number > MAX_ROUNDS:
            print(f"kdnb run: {len(todo)} run(s) still missing after {MAX_ROUNDS} rounds of jobs; the chapters are "
                  "not executed", flush=True)
            return 1
        print(f"kdnb run: {len(todo)} run(s) to train as {kind} jobs, at most {workers} at a time "
              f"(round {round_number})", flush=True)
        outcome = train([r.spec for r in todo], kind, workers, options, poll_s=poll_s)
        if outcome.failures:
            print("\n".join(f.report() for f in outcome.failures), flush=True)
            print(f"kdnb run: {len(outcome.failures)} job(s) failed, {len(outcome.skipped)} run(s) skipped; the "
                  "chapters are not executed. Run the same command again to resume.", flush=True)
            return 1
    return notebooks.run(names, profile)
