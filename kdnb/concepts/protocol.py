"""Part I's protocol (Cheng et al., CVPR 2020, §4.1): which networks are trained, on what, how long, which
checkpoints are kept, which probe images are measured and with which estimator settings — in one place, so that
the four chapters of Part I ask the run cache and the analysis cache for the very same runs and entropy maps.

For every architecture (AlexNet, VGG-11 and ResNet-20 with three FC layers) and every FC layer l:

- a **teacher** (:func:`teacher`): cross-entropy on more data, with augmentation — our stand-in for the
  paper's ImageNet pre-training ("pre-trained on the ImageNet dataset … then fine-tuned", §4.1; the Table 2
  teachers were "learned from scratch … data augmentation was used to boost the teacher"): more training
  images per class of the same data set than the students (2× at ``book``), random crops and flips, and so more
  SGD steps;
- a **student** (:func:`student`): method ``"mimic"`` (:mod:`kdnb.distill.mimic`) — its layers up to FC_l learn
  ‖f_T(x) − f_S(x)‖² alone, then are frozen while the layers above learn the labels; the checkpoints analysed
  lie in the mimic stage, as in the released code;
- a **baseline** (:func:`baseline`): the same architecture, data and checkpoints, cross-entropy alone ("learned
  from raw data").

Students and baselines train on the same subset, without augmentation. Every run records the per-step path
length of the FC layers' weights (probe ``path_length``) so :func:`weight_distances` gives Hypothesis 2's
weight distance at every checkpoint. :func:`probe_images` are test images with their foreground boxes on the
estimator grid; :func:`entropy` computes (or loads) their entropy maps through the analysis cache with the
scale's estimator settings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import data, profiles
from ..distill.mimic import LAYERS, MIMIC_FEATURE
from ..runs import RunSpec
from ..train import Schedule, step_of
from .estimator import EntropyResult

__all__ = ["ARCHITECTURES", "LAYERS", "B", "LAMBDA", "FC_MODULE", "ConceptScale", "scale", "teacher", "student",
           "baseline", "ProbeImages", "probe_images", "entropy", "weight_distances", "feature_of"]

ARCHITECTURES: tuple[str, ...] = ("alexnet_small", "vgg11-fc", "resnet20-fc")
# Eq. 3's threshold b: 0.25 for AlexNet ("it had much less layers"), 0.2 for the others (§4.1).
B: dict[str, float] = {"alexnet_small": 0.25, "vgg11-fc": 0.2, "resnet20-fc": 0.2}
# The released estimator's λ: 7 for VGG and AlexNet, 6 for ResNets (estimator.md §2.1).
LAMBDA: dict[str, float] = {"alexnet_small": 7.0, "vgg11-fc": 7.0, "resnet20-fc": 6.0}
# The module whose weights make an FC layer (the weight distance of the released code is one layer's weight).
FC_MODULE: dict[str, str] = {"fc1": "fc1", "fc2": "fc2", "fc3": "classifier"}
PROBE_SEED = 2020  # which test images are probed (a seed of its own: not the training subset's)


@dataclass(frozen=True)
class ConceptScale:
    """Part I's sizes at one profile (read by every Part I chapter; never literals in cells).

    ``dataset``: the data set of every run. ``architectures``: those trained at this profile; ``model_args``:
    per architecture, the model options (``width`` narrows the conv trunk to fit CPU budgets). Students and
    baselines: ``train_per_class`` images per class, ``epochs`` epochs of mimic (student) or of training
    (baseline), then ``classify_epochs`` of the student's classify stage; ``checkpoints``: fractional epochs in
    ``[0, epochs]``, dense early and sparse late. Teachers: ``teacher_per_class`` images per class with
    augmentation, ``teacher_epochs`` epochs. ``images`` probe images of the test split, ``grid`` × ``grid``
    estimator cells; ``mode`` the estimator mode of the grids of I.2–I.4 and ``options`` every mode's options
    (``options[mode]``); ``faithful_images``: how many probe images get the (costly) Monte-Carlo modes in I.1.
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

    @property
    def student_epochs(self) -> int:
        """The student's whole schedule: the mimic stage, then the classify stage."""
        return self.epochs + self.classify_epochs

    @property
    def mimic_share(self) -> float:
        return self.epochs / self.student_epochs


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
        train_per_class=8, test_per_class=4, teacher_per_class=12, epochs=2, classify_epochs=1, teacher_epochs=2,
        batch_size=32, lr=0.05, checkpoints=(0, 0.5, 1, 2), images=4, grid=8, mode="linearised",
        options=_ESTIMATOR_SMOKE, faithful_images=1),
    "book": ConceptScale(
        profile="book", dataset="cluttered_fashion_mnist", architectures=ARCHITECTURES,
        model_args={"alexnet_small": {"width": 0.5, "fc_width": 256}, "vgg11-fc": {"width": 0.125, "fc_width": 256},
                    "resnet20-fc": {"width": 0.5, "fc_width": 256}},
        train_per_class=200, test_per_class=50, teacher_per_class=400, epochs=8, classify_epochs=2,
        teacher_epochs=8, batch_size=64, lr=0.05, checkpoints=(0, 0.125, 0.25, 0.5, 1, 2, 3, 4, 6, 8), images=20,
        grid=12, mode="linearised", options=_ESTIMATOR_BOOK, faithful_images=3),
    "paper": ConceptScale(
        profile="paper", dataset="cub200", architectures=ARCHITECTURES,
        model_args={arch: {} for arch in ARCHITECTURES},
        train_per_class=None, test_per_class=None, teacher_per_class=None, epochs=150, classify_epochs=100,
        teacher_epochs=150, batch_size=64, lr=0.01,
        checkpoints=(0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 70, 90, 110, 130, 150), images=50, grid=16,
        mode="faithful", options=_ESTIMATOR_PAPER, faithful_images=50),
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


def teacher(profile: Any, arch: str, seed: int = 0) -> RunSpec:
    """The teacher of ``arch``: cross-entropy on ``teacher_per_class`` images per class (more than the
    students') with random crops and flips, ``teacher_epochs`` epochs — our stand-in for the paper's
    ImageNet-pre-trained teachers: a network that has seen more (and more varied) data than the student."""
    _check(arch)
    s = scale(profile)
    return RunSpec(dataset=s.dataset, model=arch, schedule=_schedule(s, s.teacher_epochs, (0, s.teacher_epochs)),
                   model_args=s.model_args[arch], train_per_class=s.teacher_per_class,
                   test_per_class=s.test_per_class, augment="default", seed=seed)


def student(profile: Any, arch: str, layer: str, seed: int = 0) -> RunSpec:
    """The student distilled at ``layer`` from :func:`teacher` (seed 0): method ``"mimic"``, ``epochs`` of mimic
    then ``classify_epochs`` of classifier, checkpoints at ``scale.checkpoints`` (all in the mimic stage), the
    path length of every FC layer's weights recorded per step."""
    _check(arch, layer)
    s = scale(profile)
    return RunSpec(dataset=s.dataset, model=arch, schedule=_schedule(s, s.student_epochs, s.checkpoints),
                   method="mimic", method_args={"layer": layer, "mimic_share": s.mimic_share},
                   teacher=teacher(profile, arch), model_args=s.model_args[arch],
                   train_per_class=s.train_per_class, test_per_class=s.test_per_class, augment=None, seed=seed,
                   probes=_probes())


def baseline(profile: Any, arch: str, seed: int = 0) -> RunSpec:
    """The baseline of ``arch``: cross-entropy on the students' data, ``epochs`` epochs, the same checkpoints
    and path-length probes (one per FC layer), no augmentation."""
    _check(arch)
    s = scale(profile)
    return RunSpec(dataset=s.dataset, model=arch, schedule=_schedule(s, s.epochs, s.checkpoints),
                   model_args=s.model_args[arch], train_per_class=s.train_per_class,
                   test_per_class=s.test_per_class, augment=None, seed=seed, probes=_probes())


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
    from . import run_entropy

    s = scale(profile)
    _check(run.spec.model, layer)
    mode = mode or s.mode
    return run_entropy(run, feature_of(layer), probe.images, s.grid, epoch=epoch, network=network, mode=mode,
                       **estimator_options(profile, run.spec.model, mode))


def weight_distances(run: Any, layer: str, epochs: Any) -> Tensor:
    """Hypothesis 2's weight distance of FC ``layer`` at each checkpoint epoch of ``epochs``: the cumulative
    Σ_t ‖w_t − w_{t−1}‖ / ‖w_0‖ over optimiser steps (the released code sums per iteration, estimator.md §4.2),
    from the run's ``path_length:<module>`` series. Returns a float tensor ``(len(epochs),)``."""
    from .metrics import weight_distance

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
