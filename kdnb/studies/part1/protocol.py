"""Part I's protocol (Cheng et al., CVPR 2020, §4.1): which networks are trained, on what, how long, which
checkpoints are kept, which probe images are measured and with which estimator settings — in one place, so that
the four chapters of Part I ask the run cache and the analysis cache for the very same runs and entropy maps.

For every architecture of the scale (AlexNet, VGG-11 and ResNet-20 with three FC layers; ``book`` trains the
first two, see :func:`scale`) and every FC layer l:

- one **teacher** per architecture (:func:`teacher`), shared by every seed: cross-entropy on more data, with
  augmentation — our stand-in for the paper's ImageNet pre-training ("pre-trained on the ImageNet dataset …
  then fine-tuned", §4.1; the Table 2 teachers were "learned from scratch … data augmentation was used to boost
  the teacher"): more training images per class of the same data set than the students, random crops and flips,
  more epochs. It anchors Part I's premise (:func:`premise`): teacher > baseline > chance;
- per seed, a **student** (:func:`student`): method ``"mimic"`` (:mod:`kdnb.distill.mimic`) — its layers up to
  FC_l learn ‖f_T(x) − f_S(x)‖² alone, then are frozen while the layers above learn the labels; the checkpoints
  analysed lie in the mimic stage, as in the released code;
- per seed, a **baseline** (:func:`baseline`): the same architecture, data and checkpoints, cross-entropy alone
  ("learned from raw data").

A seed fixes a student's and its baseline's initialisation *and* their training subset (``subset_seed``): the
hypotheses are claims about the method, not about one subset, so seeds differ in both, and every student is
paired with the baseline of its own seed. Students and baselines train without augmentation. Every run records
the per-step path length of the FC layers' weights (probe ``path_length``) so :func:`weight_distances` gives
Hypothesis 2's weight distance at every checkpoint. The checkpoints are g_1 … g_M of Eqs. 4–5, never the initial
weights (epoch 0): the paper's sum and union run over j = 1 … M. :func:`probe_images` are test images with their
foreground boxes on the estimator grid; :func:`entropy` computes (or loads) their entropy maps through the
analysis cache with the scale's estimator settings. :func:`accuracies` gathers every network's test accuracy,
:func:`weak` finds those below :data:`CHANCE_FACTOR` × chance (reported apart and left out of the hypotheses'
tallies), and :func:`premise` states an architecture's premise with its numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import pandas as pd

from ... import data, profiles
from ...analysis import TEACHER_MARGIN, Premise, all_of, teacher_beats_student
from ...concepts.estimator import EntropyResult
from ...distill.mimic import LAYERS, MIMIC_FEATURE
from ...runs import RunSpec
from ...train import Schedule, step_of

__all__ = ["ARCHITECTURES", "LAYERS", "B", "LAMBDA", "FC_MODULE", "CHANCE_FACTOR", "TEACHER_SEED", "ConceptScale",
           "scale", "teacher", "student", "baseline", "ProbeImages", "probe_images", "entropy", "weight_distances",
           "feature_of", "estimator_options", "chance", "accuracies", "weak", "teacher_leads", "baseline_learned", "premise", "premise_over"]

ARCHITECTURES: tuple[str, ...] = ("alexnet_small", "vgg11-fc", "resnet20-fc")
# Eq. 3's threshold b: 0.25 for AlexNet ("it had much less layers"), 0.2 for the others (§4.1).
B: dict[str, float] = {"alexnet_small": 0.25, "vgg11-fc": 0.2, "resnet20-fc": 0.2}
# The released estimator's λ: 7 for VGG and AlexNet, 6 for ResNets (estimator.md §2.1).
LAMBDA: dict[str, float] = {"alexnet_small": 7.0, "vgg11-fc": 7.0, "resnet20-fc": 6.0}
# The module whose weights make an FC layer (the weight distance of the released code is one layer's weight).
FC_MODULE: dict[str, str] = {"fc1": "fc1", "fc2": "fc2", "fc3": "classifier"}
PROBE_SEED = 2020  # which test images are probed (a seed of its own: not the training subset's)
TEACHER_SEED = 0  # the one teacher per architecture: its initialisation and training subset
#: A network below CHANCE_FACTOR × chance accuracy has learned little of the task: its concept counts describe a
#: barely trained network, and comparisons that involve it say nothing about distillation. Such networks are
#: reported apart and left out of the hypotheses' tallies; a baseline below it fails Part I's premise.
CHANCE_FACTOR = 2.0


@dataclass(frozen=True)
class ConceptScale:
    """Part I's sizes at one profile (read by every Part I chapter; never literals in cells).

    ``dataset``: the data set of every run. ``architectures``: those trained at this profile; ``model_args``:
    per architecture, the model options (``width`` narrows the conv trunk to fit CPU budgets). Students and
    baselines: ``train_per_class`` images per class, ``epochs`` epochs of mimic (student) or of training
    (baseline), then ``classify_epochs`` of the student's classify stage; ``checkpoints``: the fractional
    epochs of g_1 … g_M in ``(0, epochs]`` (never 0, the initial weights: Eqs. 4–5 run over j = 1 … M), dense
    early and sparse late; ``seeds``: the seeds of students and baselines (initialisation and training subset).
    Teachers: one per architecture, ``teacher_per_class`` images per class with augmentation, ``teacher_epochs``
    epochs. ``images`` probe images of the test split, ``grid`` × ``grid`` estimator cells; ``mode`` the
    estimator mode of the grids of I.2–I.4 and ``options`` every mode's options (``options[mode]``);
    ``faithful_images``: how many probe images get the (costly) Monte-Carlo modes in I.1, at every architecture
    and layer.
    """

    profile: str
    dataset: str
    architectures: tuple[str, ...]
    model_args: dict[str, dict[str, Any]]
    train_per_class: int | None
    test_per_class: int | None
    teacher_per_class: int | None
    epochs: int
    classify_epochs: int
    teacher_epochs: int
    batch_size: int
    lr: float
    checkpoints: tuple[float, ...]
    images: int
    grid: int
    mode: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    faithful_images: int = 2
    mask: str = "box"
    seeds: tuple[int, ...] = (0,)

    @property
    def student_epochs(self) -> int:
        """The student's whole schedule: the mimic stage, then the classify stage."""
        return self.epochs + self.classify_epochs

    @property
    def mimic_share(self) -> float:
        return self.epochs / self.student_epochs

    def __post_init__(self) -> None:
        points = self.checkpoints
        if not points or points[0] <= 0 or any(b <= a for a, b in zip(points, points[1:])) \
                or points[-1] > self.epochs:
            raise ValueError(f"checkpoints must increase within (0, {self.epochs}] (g_1 … g_M, never the initial "
                             f"weights); got {points}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one; got {self.seeds}")


_ESTIMATOR_BOOK = {
    "linearised": dict(vjps=12, predict="faithful"),
    "faithful": dict(samples=16, sf_samples=48),
    "converged": dict(samples=16, sf_samples=48, converged_steps=30),
}
_ESTIMATOR_SMOKE = {
    "linearised": dict(vjps=4, predict="faithful"),
    "faithful": dict(samples=4, sf_samples=8, steps=12, extra_steps=4),
    "converged": dict(samples=4, sf_samples=8, converged_steps=4),
}
_ESTIMATOR_PAPER = {  # the released settings (estimator.md §2.1)
    "linearised": dict(vjps=64, predict="faithful"),
    "faithful": dict(samples=96, sf_samples=96),
    "converged": dict(samples=96, sf_samples=96, converged_steps=100),
}

_SCALES: dict[str, ConceptScale] = {
    "smoke": ConceptScale(
        profile="smoke", dataset="cluttered_fashion_mnist", architectures=("alexnet_small",),
        model_args={"alexnet_small": {"width": 0.25, "fc_width": 64}, "vgg11-fc": {"width": 0.125, "fc_width": 64},
                    "resnet20-fc": {"width": 0.25, "fc_width": 64}},
        train_per_class=8, test_per_class=4, teacher_per_class=12, epochs=1, classify_epochs=1, teacher_epochs=2,
        batch_size=32, lr=0.05, checkpoints=(0.25, 0.5, 1), images=4, grid=8, mode="linearised",
        options=_ESTIMATOR_SMOKE, faithful_images=1, seeds=(0, 1, 2)),
    "book": ConceptScale(
        profile="book", dataset="cluttered_fashion_mnist", architectures=("alexnet_small", "vgg11-fc"),
        model_args={"alexnet_small": {"width": 0.25, "fc_width": 256}, "vgg11-fc": {"width": 0.125, "fc_width": 256},
                    "resnet20-fc": {"width": 0.5, "fc_width": 256}},
        train_per_class=200, test_per_class=100, teacher_per_class=600, epochs=6, classify_epochs=2,
        teacher_epochs=10, batch_size=64, lr=0.05, checkpoints=(0.25, 0.5, 1, 2, 4, 6), images=20,
        grid=12, mode="linearised", options=_ESTIMATOR_BOOK, faithful_images=20, seeds=(0, 1, 2, 3, 4)),
    "paper": ConceptScale(
        profile="paper", dataset="cub200", architectures=ARCHITECTURES,
        model_args={arch: {} for arch in ARCHITECTURES},
        train_per_class=None, test_per_class=None, teacher_per_class=None, epochs=150, classify_epochs=100,
        teacher_epochs=150, batch_size=64, lr=0.01,
        checkpoints=(2, 5, 10, 15, 20, 25, 30, 40, 50, 70, 90, 110, 130, 150), images=50, grid=16,
        mode="faithful", options=_ESTIMATOR_PAPER, faithful_images=50, seeds=(0, 1, 2, 3, 4)),
}


def scale(profile: Any = None) -> ConceptScale:
    """Part I's :class:`ConceptScale` at ``profile`` (a name, a :class:`~kdnb.profiles.Profile` or ``None`` for
    the default). ``paper`` is the paper's CUB-200-2011 setting (150 + 100 epochs, the released checkpoint list,
    the released estimator settings) for GPU boxes."""
    return _SCALES[profiles.get(profile).name]


def _check(arch: str, layer: str | None = None) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown Part I architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if layer is not None and layer not in LAYERS:
        raise ValueError(f"unknown FC layer {layer!r}; choose one of: {', '.join(LAYERS)}")


def feature_of(layer: str) -> str:
    """The feature measured (and mimicked) at FC layer ``layer``: its output before the ReLU (the logits for fc3)."""
    _check(ARCHITECTURES[0], layer)
    return MIMIC_FEATURE[layer]


def _schedule(s: ConceptScale, epochs: int, checkpoints: tuple[float, ...]) -> Schedule:
    return Schedule(epochs=epochs, batch_size=s.batch_size, lr=s.lr, lr_schedule="cosine", weight_decay=5e-4,
                    checkpoints=checkpoints)


def _probes() -> tuple[str, ...]:
    return tuple(f"path_length:{FC_MODULE[layer]}" for layer in LAYERS)


def teacher(profile: Any, arch: str) -> RunSpec:
    """The one teacher of ``arch`` (seed :data:`TEACHER_SEED`): cross-entropy on ``teacher_per_class`` images
    per class (more than the students') with random crops and flips, ``teacher_epochs`` epochs — our stand-in
    for the paper's ImageNet-pre-trained teachers: a network that has seen more (and more varied) data than the
    student. Every student of ``arch``, whatever its seed, distils this run."""
    _check(arch)
    s = scale(profile)
    return RunSpec(dataset=s.dataset, model=arch, schedule=_schedule(s, s.teacher_epochs, (s.teacher_epochs,)),
                   model_args=s.model_args[arch], train_per_class=s.teacher_per_class,
                   test_per_class=s.test_per_class, augment="default", seed=TEACHER_SEED,
                   subset_seed=TEACHER_SEED)


def student(profile: Any, arch: str, layer: str, seed: int = 0) -> RunSpec:
    """The student of seed ``seed`` distilled at ``layer`` from :func:`teacher`: method ``"mimic"``, ``epochs``
    of mimic then ``classify_epochs`` of classifier on the training subset of ``seed``, checkpoints at
    ``scale.checkpoints`` (all in the mimic stage), the path length of every FC layer's weights recorded per
    step."""
    _check(arch, layer)
    s = scale(profile)
    return RunSpec(dataset=s.dataset, model=arch, schedule=_schedule(s, s.student_epochs, s.checkpoints),
                   method="mimic", method_args={"layer": layer, "mimic_share": s.mimic_share},
                   teacher=teacher(profile, arch), model_args=s.model_args[arch],
                   train_per_class=s.train_per_class, test_per_class=s.test_per_class, augment=None, seed=seed,
                   subset_seed=seed, probes=_probes())


def baseline(profile: Any, arch: str, seed: int = 0) -> RunSpec:
    """The baseline of seed ``seed``: cross-entropy on the training subset of the students of that seed (and
    their initialisation), ``epochs`` epochs, the same checkpoints and path-length probes (one per FC layer), no
    augmentation."""
    _check(arch)
    s = scale(profile)
    return RunSpec(dataset=s.dataset, model=arch, schedule=_schedule(s, s.epochs, s.checkpoints),
                   model_args=s.model_args[arch], train_per_class=s.train_per_class,
                   test_per_class=s.test_per_class, augment=None, seed=seed, subset_seed=seed, probes=_probes())


# ------------------------------------------------------------------------------------ accuracies and premise
NETWORK_NAMES = ("teacher", "baseline", "student")


def chance(profile: Any) -> float:
    """Chance accuracy (%) of the scale's data set: 100 / classes."""
    return 100.0 / data.info(scale(profile).dataset).num_classes


def networks(profile: Any, architectures: Any = None, seeds: Any = None) -> list[tuple[dict, RunSpec]]:
    """Every Part I network at ``profile`` (or of ``architectures`` / ``seeds``), as ``(labels, spec)``: per
    architecture the teacher, then per seed the baseline and the student of each FC layer. ``labels`` holds
    ``architecture``, ``network`` (``"teacher"``, ``"baseline"``, ``"student"``), ``layer`` (``""`` but for
    students) and ``seed``. :func:`accuracies` trains these; the plan lists them."""
    s = scale(profile)
    out = []
    for arch in architectures or s.architectures:
        out.append(({"architecture": arch, "network": "teacher", "layer": "", "seed": TEACHER_SEED},
                    teacher(profile, arch)))
        for seed in seeds if seeds is not None else s.seeds:
            out.append(({"architecture": arch, "network": "baseline", "layer": "", "seed": seed},
                        baseline(profile, arch, seed)))
            out += [({"architecture": arch, "network": "student", "layer": layer, "seed": seed},
                     student(profile, arch, layer, seed)) for layer in LAYERS]
    return out


def teacher_runs(profile: Any) -> list[RunSpec]:
    """The runs chapter I.1 trains: the teacher of every architecture of the scale."""
    return [teacher(profile, arch) for arch in scale(profile).architectures]


def chapter_runs(profile: Any) -> list[RunSpec]:
    """The runs chapters I.2–I.4 train (:func:`accuracies` and :func:`~.dynamics.measure_all`): every network of
    :func:`networks`."""
    return [spec for _, spec in networks(profile)]


def accuracies(profile: Any, architectures: Any = None, seeds: Any = None) -> pd.DataFrame:
    """Every Part I network's final test accuracy, training the runs that are not cached: one row per run of
    :func:`networks` with ``architecture``, ``network`` (``"teacher"``, ``"baseline"``, ``"student"``),
    ``layer`` (the student's FC layer; ``""`` otherwise), ``seed`` and ``accuracy`` (%)."""
    from ... import runs

    rows = [{**labels, "accuracy": 100 * runs.train_or_load(spec).final["test_acc"]}
            for labels, spec in networks(profile, architectures, seeds)]
    return pd.DataFrame(rows, columns=["architecture", "network", "layer", "seed", "accuracy"])


def weak(frame: pd.DataFrame, profile: Any) -> pd.DataFrame:
    """The rows of an :func:`accuracies` frame below :data:`CHANCE_FACTOR` × chance: networks that learned
    little of the task, reported apart and left out of the hypotheses' tallies."""
    return frame[frame["accuracy"] < CHANCE_FACTOR * chance(profile)]


def _accuracy_of(frame: pd.DataFrame, arch: str, network: str) -> Any:
    rows = frame[(frame["architecture"] == arch) & (frame["network"] == network)]["accuracy"].to_numpy()
    if not len(rows):
        raise ValueError(f"no {network} accuracy for {arch!r} in the frame")
    return rows


def teacher_leads(frame: pd.DataFrame, arch: str) -> Premise:
    """The teacher of ``arch`` leads its baselines (mean over seeds) by at least
    :data:`kdnb.analysis.TEACHER_MARGIN` points (``frame``: :func:`accuracies`)."""
    return teacher_beats_student(
        _accuracy_of(frame, arch, "teacher"), _accuracy_of(frame, arch, "baseline"), what=f"{arch} teacher",
        against="baseline",
        remedy=f"A stronger {arch} teacher (more teacher images or epochs: teacher_per_class, teacher_epochs).")


def baseline_learned(frame: pd.DataFrame, arch: str, profile: Any) -> Premise:
    """The baselines of ``arch`` reach :data:`CHANCE_FACTOR` × chance on average: they learned the task."""
    b = _accuracy_of(frame, arch, "baseline")
    floor = CHANCE_FACTOR * chance(profile)
    return Premise(f"{arch} baseline ≥ {CHANCE_FACTOR:g} × chance ({floor:.0f}%)",
                   f"{b.mean():.2f}% (seeds {b.min():.1f}–{b.max():.1f})", held=bool(b.mean() >= floor),
                   remedy=f"Longer or larger {arch} baselines (train_per_class, epochs).")


def premise(frame: pd.DataFrame, arch: str, profile: Any) -> Premise:
    """Part I's premise for ``arch`` from an :func:`accuracies` frame: the teacher leads the baseline (mean over
    seeds) by at least :data:`kdnb.analysis.TEACHER_MARGIN` points (:func:`teacher_leads`) — the paper's student
    can only take from its teacher what the teacher knows beyond the baseline ("the teacher network had learned
    better representations", §4.2) — and the baseline reaches :data:`CHANCE_FACTOR` × chance
    (:func:`baseline_learned`)."""
    lead, learned = teacher_leads(frame, arch), baseline_learned(frame, arch, profile)
    both = all_of(lead, learned)
    return Premise(f"{arch}: teacher ≥ baseline + {TEACHER_MARGIN:g} points, baseline ≥ {CHANCE_FACTOR:g} × chance "
                   f"({CHANCE_FACTOR * chance(profile):.0f}%)",
                   f"teacher vs baseline {lead.measured}, baseline {learned.measured}", held=both.held,
                   remedy=both.remedy)


def premise_over(premises: dict[str, Premise]) -> Premise:
    """The premise of a claim over several architectures (``{arch: premise(...)}``): it holds when it holds for
    at least one of them — those are the architectures whose cells enter the claim's tally; the others are left
    out, and their numbers shown."""
    if not premises:
        raise ValueError("no premises")
    if len(premises) == 1:
        return next(iter(premises.values()))
    requirement = (f"teacher ≥ baseline + {TEACHER_MARGIN:g} points and baseline ≥ {CHANCE_FACTOR:g} × chance, for "
                   f"at least one architecture (those enter the tally)")
    measured = "; ".join(f"{arch}: {p.measured} ({'held' if p.held else 'unmet'})" for arch, p in premises.items())
    return Premise(requirement, measured, held=any(p.held for p in premises.values()),
                   remedy=" ".join(p.remedy for p in premises.values() if not p.held and p.remedy))


@dataclass(frozen=True)
class ProbeImages:
    """The test images whose entropy maps are measured: ``images`` ``(N, C, H, W)`` normalised as the networks
    see them, ``fg`` bool ``(N, grid, grid)`` the foreground (the item's box) on the estimator grid, ``labels``
    ``(N,)``, ``indices`` ``(N,)`` into the test split."""

    images: Tensor
    fg: Tensor
    labels: Tensor
    indices: Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())


def probe_images(profile: Any) -> ProbeImages:
    """``scale.images`` test images, as many per class as fit (a fixed seed of their own), with their box masks
    on ``scale.grid`` (the released code's nearest, top-left-pixel rule)."""
    s = scale(profile)
    ds = data.dataset(s.dataset, "test")
    info = data.info(s.dataset)
    targets = torch.as_tensor(ds.targets)
    per_class = math.ceil(s.images / info.num_classes)
    chosen = data.stratified_subset(targets, per_class, seed=PROBE_SEED)
    order = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(PROBE_SEED))
    indices = chosen[order[: s.images]].sort().values
    raw, labels = data.as_tensors(ds, indices)
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)
    images = (raw.float() / 255.0 - mean) / std
    fg = ds.masks(indices, kind=s.mask, grid=s.grid)
    return ProbeImages(images=images, fg=fg, labels=labels, indices=indices)


def estimator_options(profile: Any, arch: str, mode: str) -> dict[str, Any]:
    """The estimator options of ``mode`` at ``profile`` for ``arch`` (λ by architecture where the mode takes it)."""
    s = scale(profile)
    if mode not in s.options:
        raise ValueError(f"unknown estimator mode {mode!r}; choose one of: {', '.join(s.options)}")
    options = dict(s.options[mode])
    if mode == "faithful" or (mode == "linearised" and options.get("predict") == "faithful"):
        options["lam"] = LAMBDA[arch]
    return options


def entropy(run: Any, layer: str, probe: ProbeImages, profile: Any, epoch: float | None = None,
            network: str = "student", mode: str | None = None) -> EntropyResult:
    """The entropy maps of ``probe`` at FC ``layer`` (feature :func:`feature_of`) of ``run``'s ``network`` at
    checkpoint ``epoch`` (``None``: final weights), with the scale's ``mode`` and options unless ``mode`` is
    given; computed once, then read from the analysis cache (:func:`kdnb.concepts.run_entropy`)."""
    from ...concepts import run_entropy

    s = scale(profile)
    _check(run.spec.model, layer)
    mode = mode or s.mode
    return run_entropy(run, feature_of(layer), probe.images, s.grid, epoch=epoch, network=network, mode=mode,
                       **estimator_options(profile, run.spec.model, mode))


def weight_distances(run: Any, layer: str, epochs: Any) -> Tensor:
    """Hypothesis 2's weight distance of FC ``layer`` at each checkpoint epoch of ``epochs``: the cumulative
    Σ_t ‖w_t − w_{t−1}‖ / ‖w_0‖ over optimiser steps (the released code sums per iteration, estimator.md §4.2),
    from the run's ``path_length:<module>`` series. Returns a float tensor ``(len(epochs),)``."""
    from ...concepts.metrics import weight_distance

    _check(ARCHITECTURES[0], layer)
    prefix = FC_MODULE[layer]
    series = run.series()
    key = f"path_length:{prefix}/step"
    if key not in series:
        raise ValueError(f"run {run.spec.label} has no probe 'path_length:{prefix}'; it has: {', '.join(series) or 'none'}")
    steps_per_epoch = run.metrics["steps_per_epoch"]
    init_norm = run.final[f"init_norm:{prefix}"] if f"init_norm:{prefix}" in run.final else \
        run.history[-1][f"init_norm:{prefix}"]
    return weight_distance(series[key], init_norm, [step_of(float(e), steps_per_epoch) for e in epochs])
