"""``python -m kdnb plan``: every run the chapters will ask for, before anything trains.

At the ``paper`` profile a chapter asks for GPU hours of training. The plan lists, for the chosen chapters, each
run (its key, model, method, epochs), whether the run cache already holds it, and an estimate of its cost, so a
user knows what a ``kdnb run`` will cost, and ``kdnb run --executor`` knows what to train as independent jobs.

Each chapter's run list comes from one function of its study (:data:`CHAPTER_RUNS`), the function whose specs the
chapter itself trains, so the plan and the chapter cannot disagree (``tests/test_plan.py`` compares the plan with
what the chapters trained at ``smoke``). The lists are expanded to the runs they stand on (teachers, input runs
such as an auto-encoder), each run once, dependencies first.

The cost is an estimate: per model and batch size, a few training steps are timed on the current device (a CE
step of the student, plus the teacher's forward when the run has a teacher; a *part* run, the teacher's
forward), times the run's steps. Methods with passes of their own (DML's peer, LE's explanations, CRD's memory
bank) cost more than that; evaluation is not counted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import book_layout, data, distill, profiles, runs
from .profiles import Profile
from .runs import RunSpec


def _registry() -> dict[str, Callable[[Profile], list[RunSpec]]]:
    """Chapter (its path under ``book/`` without suffix) → the study function returning the runs it trains at a
    profile (with the chapter's default parameters). Imported on first use: the studies pull in pandas and
    matplotlib."""
    from .studies import part0
    from .studies.part1 import protocol
    from .studies.part2 import analyses, compact, tables
    from .studies.part3 import comparisons, dissection, scale

    return {
        "part0/distillation": part0.chapter_runs,
        "part1/information_discarding": protocol.teacher_runs,
        "part1/visual_concepts": protocol.chapter_runs,
        "part1/sequential_learning": protocol.chapter_runs,
        "part1/detours": protocol.chapter_runs,
        "part2/compact_knowledge": compact.chapter_runs,
        "part2/inheritance_exploration": tables.inheritance_exploration_runs,
        "part2/mutual_learning": tables.mutual_learning_runs,
        "part2/ablations": tables.ablations_runs,
        "part2/how_it_works": analyses.chapter_runs,
        "part3/dark_knowledge": dissection.dark_knowledge_runs,
        "part3/introspective_learning": scale.introspective_runs,
        "part3/comparisons": comparisons.chapter_runs,
        "part3/ablations": dissection.ablations_runs,
    }


def chapter_name(chapter: Path) -> str:
    """A chapter's name in :func:`chapter_runs`: its path under ``book/`` without suffix (``part3/ablations``;
    two chapters share the stem ``ablations``)."""
    return Path(chapter).resolve().relative_to(book_layout.BOOK).with_suffix("").as_posix()


def chapter_runs(chapter: Path | str, profile: str | Profile | None = None) -> list[RunSpec]:
    """The runs ``chapter`` (a path, or its :func:`chapter_name`) trains at ``profile``, as its study lists them
    (not expanded to teachers and inputs)."""
    registry = _registry()
    name = str(chapter)
    if name not in registry and Path(chapter).resolve().is_relative_to(book_layout.BOOK):
        name = chapter_name(Path(chapter))
    if name not in registry:
        raise ValueError(f"no run list for chapter {name!r}; chapters with one: {', '.join(registry)}")
    return list(registry[name](profiles.get(profile)))


def dependencies(spec: RunSpec) -> list[RunSpec]:
    """The runs ``spec`` stands on directly: its teacher, then its input runs (trained before it)."""
    return [s for s in (spec.teacher, *spec.inputs().values()) if s is not None]


def expand(specs: Iterable[RunSpec]) -> list[RunSpec]:
    """``specs`` and every run they stand on, each once (by key), every run after the runs it stands on."""
    ordered: dict[str, RunSpec] = {}

    def visit(spec: RunSpec) -> None:
        if spec.key() in ordered:
            return
        for upstream in dependencies(spec):
            visit(upstream)
        ordered[spec.key()] = spec

    for spec in specs:
        visit(spec)
    return list(ordered.values())


# ------------------------------------------------------------------------------------------------ cost
#: Training images of each data set's whole training split (a subset of ``train_per_class`` is that times the
#: number of classes). For the estimate only: the files are never read to plan.
TRAIN_IMAGES = {"fashion_mnist": 60000, "mnist": 60000, "cifar10": 50000, "cifar100": 50000,
                "cluttered_fashion_mnist": 60000, "cub200": 5994}


def steps_of(spec: RunSpec) -> int | None:
    """Optimizer steps of ``spec`` (epochs × batches per epoch); ``None`` for a data set of unknown size."""
    info = data.info(spec.dataset)
    images = (spec.train_per_class * info.num_classes if spec.train_per_class is not None
              else TRAIN_IMAGES.get(spec.dataset))
    if images is None:
        return None
    return spec.schedule.epochs * math.ceil(images / spec.schedule.batch_size)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Seconds per training step of a model at a batch size on ``device``, measured once per (data set, model,
    model options, batch size, training or forward only) and reused for every run that shares them."""

    def __init__(self, device: torch.device | str, steps: int = 2):
        self.device = torch.device(device)
        self.steps = steps
        self._seconds: dict[tuple, float] = {}

    def __call__(self, spec: RunSpec, train: bool = True) -> float:
        key = (spec.dataset, spec.model, spec.model_args, spec.schedule.batch_size, train)
        if key not in self._seconds:
            self._seconds[key] = self._measure(spec, train)
        return self._seconds[key]

    def _measure(self, spec: RunSpec, train: bool) -> float:
        info = data.info(spec.dataset)
        batch = spec.schedule.batch_size
        with torch.random.fork_rng(devices=[]):  # timing leaves the caller's random stream as it was
            model = runs.build_model(spec).to(self.device).train(train)
            x = torch.randn(batch, info.in_channels, info.image_size, info.image_size, device=self.device)
            y = torch.randint(0, info.num_classes, (batch,), device=self.device)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

            def step() -> None:
                if not train:
                    with torch.no_grad():
                        model(x)
                    return
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()

            step()  # warm-up: allocations, kernel selection
            _synchronize(self.device)
            began = time.perf_counter()
            for _ in range(self.steps):
                step()
            _synchronize(self.device)
        return (time.perf_counter() - began) / self.steps

    def run_seconds(self, spec: RunSpec) -> float | None:
        """Estimated training time of ``spec``: its steps × (a CE step of its model + its teacher's forward);
        a part run (the teacher's auto-encoder) × the teacher's forward."""
        steps = steps_of(spec)
        if steps is None:
            return None
        if distill.method_class(spec.method).part:
            per_step = self(spec.teacher, train=False)
        else:
            per_step = self(spec) + (self(spec.teacher, train=False) if spec.teacher is not None else 0.0)
        return steps * per_step


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class PlannedRun:
    """One run of the plan: its spec, the chapters asking for it (directly or through a run standing on it),
    whether the run cache holds it finished, and its estimated training time (``None``: not estimated)."""

    spec: RunSpec
    chapters: list[str] = field(default_factory=list)
    cached: bool = False
    seconds: float | None = None

    @property
    def key(self) -> str:
        return self.spec.key()


@dataclass
class Plan:
    """The runs of some chapters at a profile, dependencies first, on ``device`` (where costs were timed)."""

    profile: str
    device: str
    chapters: list[str]
    runs: list[PlannedRun]

    def uncached(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.cached]

    def total_seconds(self, uncached_only: bool = True) -> float:
        return sum(r.seconds or 0.0 for r in self.runs if not (uncached_only and r.cached))


def make(names: list[str], profile: str | Profile | None = None, estimate: bool = True,
         device: torch.device | str | None = None, root: str | Path | None = None) -> Plan:
    """The plan of the chapters ``names`` (default: all) at ``profile``: every run they ask for, expanded and
    deduplicated, dependencies first, each marked cached or not (in ``root``, default the run cache) and, with
    ``estimate``, its training time timed on ``device`` (default: :func:`kdnb.device`)."""
    from . import device as default_device

    chosen = book_layout.resolve(names)  # an unknown name: an error listing the chapters
    profile = profiles.get(profile)
    asked: dict[str, PlannedRun] = {}
    ordered: list[RunSpec] = []
    for chapter in chosen:
        name = chapter_name(chapter)
        for spec in expand(chapter_runs(name, profile)):
            if spec.key() not in asked:
                asked[spec.key()] = PlannedRun(spec)
                ordered.append(spec)
            if name not in asked[spec.key()].chapters:
                asked[spec.key()].chapters.append(name)
    planned = [asked[spec.key()] for spec in expand(ordered)]  # dependencies first across chapters too
    device = torch.device(device) if device is not None else default_device()
    timer = StepTimer(device) if estimate else None
    for run in planned:
        run.cached = runs.finished(run.spec, root) is not None
        if timer is not None:
            run.seconds = timer.run_seconds(run.spec)
    return Plan(profile.name, str(device), [chapter_name(c) for c in chosen], planned)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(plan: Plan) -> str:
    """The plan as a table for the terminal, with the totals and what the estimate is."""
    header = (f"{'#':>4}  {'key':16}  {'model':14}  {'method':12}  {'seed':>5}  {'epochs':>6}  {'cached':6}  "
              f"{'estimate':>9}  chapters")
    lines = [f"kdnb plan: {len(plan.chapters)} chapter(s) at profile {plan.profile!r}: {len(plan.runs)} run(s), "
             f"{len(plan.runs) - len(plan.uncached())} cached", header]
    for i, run in enumerate(plan.runs, 1):
        spec = run.spec
        lines.append(f"{i:>4}  {run.key:16}  {spec.model:14}  {spec.method:12}  {spec.seed:>5}  "
                     f"{spec.schedule.epochs:>6}  {'yes' if run.cached else 'no':6}  {_duration(run.seconds):>9}  "
                     f"{', '.join(run.chapters)}")
    if all(r.seconds is None for r in plan.runs):
        lines.append(f"total, runs not cached: {len(plan.uncached())} run(s); cost not estimated (--no-estimate)")
        return "\n".join(lines)
    unknown = sum(1 for r in plan.uncached() if r.seconds is None)
    lines.append(f"total, runs not cached: {len(plan.uncached())} run(s), about {_duration(plan.total_seconds())} "
                 f"of training on {plan.device} (all runs: {_duration(plan.total_seconds(uncached_only=False))})"
                 + (f"; {unknown} run(s) not estimated" if unknown else ""))
    lines.append("an estimate: per model and batch size a few CE steps (plus the teacher's forward) timed on this "
                 "device, times each run's steps; methods with passes of their own (DML, LE, CRD) cost more, "
                 "evaluation is not counted, and one process trains one run at a time")
    return "\n".join(lines)


def main(names: list[str], profile: str | None = None, estimate: bool = True) -> int:
    """``python -m kdnb plan``: print the plan of the chapters ``names`` at ``profile``."""
    print(describe(make(names, profile, estimate=estimate)), flush=True)
    return 0
