"""The run cache: how chapters share training work.

A chapter never trains inline. It describes a run with a frozen :class:`RunSpec` and calls
:func:`train_or_load`, which returns the finished run from ``runs/<hash>/`` or trains it there first::

    runs/<hash>/spec.json      the spec, for humans and for `python -m kdnb clean`
    runs/<hash>/state.pt       resume point, rewritten after every epoch (removed when the run finishes)
    runs/<hash>/ckpt/step_XXXXXXXX.pt   every evaluated network at the schedule's checkpoints
    runs/<hash>/final.pt       the trained student, and beside it the other modules the method trained
    runs/<hash>/series.pt      per-step series of the probes (when the run has probes)
    runs/<hash>/metrics.json   per-epoch metrics and the final ones (written last: marks the run finished)

Every file carries a sha256 sidecar (:mod:`kdnb.storage`). A file whose checksum fails is damage: the run is
redone. A file whose checksum is right but which does not load, or a value that cannot be stored, is a bug: it
is raised, naming the run, never "redone" in a loop.

What a run's identity (its hash) holds, and why
------------------------------------------------
Everything that changes what is trained, and nothing else:

- the data: ``dataset``, ``train_per_class``/``test_per_class``, ``subset_seed``, ``augment``;
- the network: ``model`` and ``model_args`` (dropout, widths, input size);
- the method: ``method``, its arguments **bound against its signature with every default filled in** (so
  ``kd`` with ``{}`` and with ``{temperature: 4, alpha: 0.9}`` are one run; 4 and 4.0 too), and the
  method's ``version`` (bumping it redoes that method's runs only);
- the runs it stands on: ``teacher`` and any argument that is itself a ``RunSpec`` (an auto-encoder
  trained once per teacher, say), by their own identities, recursively;
- ``schedule`` (epochs, batch size, optimiser, learning-rate schedule, checkpoints) and ``seed``;
- ``probes``, because they decide which measurements the run holds;
- :data:`CACHE_VERSION`, bumped only for changes that make every cached run wrong.

Not in it: the device, the thread count, the chapter or part asking, paths, progress settings. So the
teacher trained in Part 0 is the run that Parts II and III get when they ask for the same spec.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data, distill, models, probes, storage
from .modules import parameters_under
from .train import Replicas, Schedule, Trainer, checkpoint_name, step_of

CACHE_VERSION = 2  # bump when a change to the code makes every old run wrong (2: stage-aware trainer)
EVAL_BATCH_SIZE = 500
_RUN_TAG = "__run__"  # how an argument that is a RunSpec is written in spec.json


def _freeze_value(key: str, value: Any) -> Any:
    """Arguments as hashable values: lists become tuples, a finished ``Run`` its spec, a dict written by
    :meth:`RunSpec.to_dict` for a nested spec becomes that spec again."""
    if isinstance(value, (bool, int, float, str, type(None), RunSpec)):
        return value
    if isinstance(value, Run):
        return value.spec
    if isinstance(value, dict) and set(value) == {_RUN_TAG}:
        return RunSpec.from_dict(value[_RUN_TAG])
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(key, v) for v in value)
    raise TypeError(f"argument {key}={value!r}: only bool/int/float/str/None, tuples or lists of them, and "
                    "RunSpecs (runs this run takes as inputs) can be part of a run's identity")


def _frozen_items(values: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(values, dict):
        values = values.items()
    return tuple(sorted((str(k), _freeze_value(str(k), v)) for k, v in values))


def _canonical_numbers(value: Any) -> Any:
    """Whole floats as ints, so that ``temperature=4`` and ``temperature=4.0`` name the same run."""
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _written(value: Any, spec_to_dict) -> Any:
    if isinstance(value, RunSpec):
        return {_RUN_TAG: spec_to_dict(value)}
    if isinstance(value, tuple):
        return [_written(v, spec_to_dict) for v in value]
    return value


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a training run, and nothing else (no paths, no device).

    ``train_per_class``/``test_per_class`` select deterministic class-stratified subsets (``None``: all);
    ``model_args`` are options of the model (``{"dropout": 0.3}``); ``method_args`` the method's
    hyper-parameters, checked against its signature and completed with its defaults when the spec is made;
    an argument may be another ``RunSpec``, a run this one takes as an input (the method receives the finished
    :class:`Run`); ``teacher`` is the spec of the run whose final student is this run's teacher;
    ``augment="default"`` uses the dataset's standard augmentation. Dicts are accepted for the argument fields.
    """

    dataset: str
    model: str
    schedule: Schedule
    method: str = "ce"
    method_args: tuple[tuple[str, Any], ...] = ()
    teacher: "RunSpec | None" = None
    model_args: tuple[tuple[str, Any], ...] = ()
    train_per_class: int | None = None
    test_per_class: int | None = None
    subset_seed: int = 0
    augment: str | None = "default"
    seed: int = 0
    probes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.schedule, dict):
            object.__setattr__(self, "schedule", Schedule(**{k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in self.schedule.items()}))
        if isinstance(self.teacher, dict):
            object.__setattr__(self, "teacher", RunSpec.from_dict(self.teacher))
        elif isinstance(self.teacher, Run):
            object.__setattr__(self, "teacher", self.teacher.spec)
        object.__setattr__(self, "model_args", _frozen_items(self.model_args))
        object.__setattr__(self, "probes", tuple(self.probes))
        given = dict(_frozen_items(self.method_args))
        try:
            bound = distill.bind(self.method, given)
        except TypeError as error:
            raise TypeError(f"run {self.method}:{self.model}: {error}") from None
        object.__setattr__(self, "method_args", _frozen_items(bound))
        if self.teacher is not None and self.teacher.dataset != self.dataset:
            raise ValueError(f"teacher trained on {self.teacher.dataset!r}, student on {self.dataset!r}")
        for name, value in self.inputs().items():
            if value.dataset != self.dataset:
                raise ValueError(f"input run {name!r} trained on {value.dataset!r}, this run on {self.dataset!r}")

    def inputs(self) -> dict[str, "RunSpec"]:
        """The method arguments that are runs of their own (trained first, handed over as :class:`Run`)."""
        return {k: v for k, v in self.method_args if isinstance(v, RunSpec)}

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["schedule"] = dataclasses.asdict(self.schedule)
        out["method_args"] = {k: _written(v, RunSpec.to_dict) for k, v in self.method_args}
        out["model_args"] = {k: _written(v, RunSpec.to_dict) for k, v in self.model_args}
        out["teacher"] = self.teacher.to_dict() if self.teacher is not None else None
        out["probes"] = list(self.probes)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "RunSpec":
        return cls(**dict(values))

    def identity(self) -> dict:
        """What the run's hash is computed from: :meth:`to_dict` with the method's version, and the runs it
        stands on by their own identities (see the module docstring)."""
        out = self.to_dict()
        out["method_version"] = distill.method_class(self.method).version
        out["method_args"] = {k: _written(v, RunSpec.identity) for k, v in self.method_args}
        out["teacher"] = self.teacher.identity() if self.teacher is not None else None
        return out

    def key(self) -> str:
        """Stable hash of the spec's identity (and the cache version): the run's folder name."""
        canonical = json.dumps({"version": CACHE_VERSION, "spec": _canonical_numbers(self.identity())},
                               sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "RunSpec":
        """A copy with ``changes``; changing the method re-binds its arguments (the old method's defaults
        do not carry over)."""
        if "method" in changes and "method_args" not in changes:
            defaults = distill.bind(self.method, {})
            changes["method_args"] = {k: v for k, v in self.method_args if k not in defaults or defaults[k] != v}
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Check this spec and every spec it stands on (teacher, inputs) before anything trains: the teacher
        the method needs, the dataset, the model with its arguments (built on the meta device: no memory, no
        time) and the probes. (Method arguments were already checked when the spec was made.)"""
        method = distill.method_class(self.method)
        if method.requires_teacher and self.teacher is None:
            raise ValueError(f"run {self.label}: method {self.method!r} needs a teacher run (RunSpec.teacher)")
        if method.part and self.teacher is not None and (self.model, self.model_args) != (
                self.teacher.model, self.teacher.model_args):
            raise ValueError(f"run {self.label}: a part run names its teacher's network as its model "
                             f"({self.teacher.model!r}; use runs.part)")
        if not method.takes_teacher and self.teacher is not None:
            raise ValueError(f"run {self.label}: method {self.method!r} takes no teacher run")
        info = data.info(self.dataset)
        try:
            with torch.device("meta"):
                model = models.create(self.model, num_classes=info.num_classes, in_channels=info.in_channels,
                                      **dict(self.model_args))
        except (TypeError, ValueError) as error:
            raise type(error)(f"run {self.label}: {error}") from None
        for probe in self.probes:
            probes.create(probe)
            kind, _, prefix = probe.partition(":")
            try:
                parameters_under(model, [prefix])
            except ValueError as error:
                raise ValueError(f"run {self.label}: probe {probe!r}: {error}") from None
        for upstream in [self.teacher, *self.inputs().values()]:
            if upstream is not None:
                upstream.validate()

    @property
    def label(self) -> str:
        return f"{self.method}:{self.model} seed={self.seed}"


def chain(*specs: RunSpec) -> list[RunSpec]:
    """Teacher → assistant → … → student: each spec after the first gets the previous one as its teacher.

    TAKD is ``chain(teacher, assistant, student)``; born-again generations are a chain of the same model.
    Each link is an ordinary cached run, so a later chapter asking for the same link reuses it.
    """
    linked = [specs[0]]
    for spec in specs[1:]:
        linked.append(spec.replace(teacher=linked[-1]))
    return linked


def part(teacher: RunSpec, method: str, schedule: Schedule, method_args: dict | None = None,
         seed: int = 0) -> RunSpec:
    """The spec of a *part* trained on its own for ``teacher`` (a method with ``part = True``, e.g. the factor
    auto-encoder of Huang et al. §3.1): the teacher's data, subset and augmentation, the teacher's network as the
    run's model (no student is built, evaluated or saved), ``schedule`` and ``seed`` of its own. Other runs take
    it as an input (``method_args={"autoencoder": part_spec}``); ``Run.network(name)`` returns the piece."""
    if not distill.method_class(method).part:
        raise ValueError(f"method {method!r} trains a student; runs.part is for parts (methods with part = True)")
    return RunSpec(teacher.dataset, teacher.model, schedule, method=method, method_args=method_args or {},
                   teacher=teacher, model_args=teacher.model_args, train_per_class=teacher.train_per_class,
                   test_per_class=teacher.test_per_class, subset_seed=teacher.subset_seed, augment=teacher.augment,
                   seed=seed)


def runs_root() -> Path:
    """``$KDNB_RUNS``, else ``runs/`` at the repository root."""
    if os.environ.get("KDNB_RUNS"):
        return Path(os.environ["KDNB_RUNS"])
    return Path(__file__).resolve().parents[1] / "runs"


@dataclass
class Run:
    """A finished run: its spec, folder and metrics; :meth:`model` loads the trained student,
    :meth:`network` any other network the method trained, :meth:`series` the probes' per-step series."""

    spec: RunSpec
    path: Path
    metrics: dict = field(repr=False)

    @property
    def history(self) -> list[dict]:
        return self.metrics["history"]

    @property
    def final(self) -> dict:
        return self.metrics["final"]

    def checkpoint_path(self, epoch: float) -> Path:
        """The checkpoint file of ``epoch``, one of ``spec.schedule.checkpoints`` (fractions allowed)."""
        if not any(abs(c - epoch) < 1e-9 for c in self.spec.schedule.checkpoints):
            raise ValueError(f"no checkpoint at epoch {epoch}; this run keeps {list(self.spec.schedule.checkpoints)}")
        return self.path / "ckpt" / checkpoint_name(step_of(epoch, self.metrics["steps_per_epoch"]))

    def model(self, epoch: float | None = None, device: torch.device | str | None = None) -> nn.Module:
        """The student after training (``epoch=None``) or at one of the schedule's checkpoints, in eval mode.
        (Loading leaves the caller's torch random stream as it was.)"""
        from . import device as default_device

        if distill.method_class(self.spec.method).part:
            raise ValueError(f"run {self.spec.label} trains a part, not a student: use Run.network(name)")
        path = self.path / "final.pt" if epoch is None else self.checkpoint_path(epoch)
        with torch.random.fork_rng(devices=[]):  # loading a run leaves the caller's random stream as it was
            net = build_model(self.spec)
        net.load_state_dict(storage.load_torch(path)["student"])
        return net.to(device if device is not None else default_device()).eval()

    def network(self, name: str, epoch: float | None = None, device: torch.device | str | None = None) -> nn.Module:
        """Another trained network of the method, in eval mode: one it evaluates (DML's ``"peer"``) or any
        module it holds (a Hint regressor, an encoder), final weights or (for evaluated networks) those of a
        checkpoint epoch."""
        from . import device as default_device

        if name == "student" and not distill.method_class(self.spec.method).part:
            return self.model(epoch, device)
        # Loading a run leaves the caller's random stream as it was: a method that loads an input run while it
        # builds its own modules must not have their initialisation reseeded by the input's seed.
        with torch.random.fork_rng(devices=[]):
            method = build_method(self.spec, teacher=_architecture(self.spec.teacher),
                                  inputs={k: train_or_load(v, root=self.path.parent)
                                          for k, v in self.spec.inputs().items()})
        evaluated = {k: v for k, v in method.evaluated().items() if k}
        children = dict(method.named_children())
        if name not in evaluated and name not in children:
            raise ValueError(f"run {self.spec.label} has no network {name!r}; it has: "
                             f"{', '.join(dict.fromkeys([*evaluated, *(c for c in children if c != 'student')]))}")
        if epoch is None:
            final = storage.load_torch(self.path / "final.pt")
            student = {f"student.{k}": v for k, v in (final["student"] or {}).items()}
            method.load_state_dict({**student, **final["extras"]})
            network = evaluated.get(name, children.get(name))
        else:
            if name not in evaluated:
                raise ValueError(f"checkpoints keep the networks the method evaluates ({', '.join(evaluated)}), "
                                 f"not {name!r}")
            network = evaluated[name]
            network.load_state_dict(storage.load_torch(self.checkpoint_path(epoch))["networks"][name])
        return network.to(device if device is not None else default_device()).eval()

    def series(self) -> dict[str, torch.Tensor]:
        """The probes' per-step series, e.g. ``"path_length:stage3/step"`` (one value per optimizer step)."""
        if not self.spec.probes:
            return {}
        return storage.load_torch(self.path / "series.pt")


def build_model(spec: RunSpec) -> nn.Module:
    """The student network of ``spec``, initialised from ``spec.seed``."""
    info = data.info(spec.dataset)
    torch.manual_seed(spec.seed)
    return models.create(spec.model, num_classes=info.num_classes, in_channels=info.in_channels,
                         **dict(spec.model_args))


def _architecture(spec: RunSpec | None) -> nn.Module | None:
    """A network with ``spec``'s architecture and untrained weights (to rebuild a method around it)."""
    return None if spec is None else build_model(spec).eval()


def build_method(spec: RunSpec, teacher: nn.Module | None, inputs: dict[str, "Run"]) -> distill.Method:
    """The method of ``spec`` around a fresh student (none for a part), with its teacher network and its input
    runs. The torch RNG is seeded from ``spec.seed`` before the method builds its own modules too."""
    arguments = {k: inputs[k] if isinstance(v, RunSpec) else v for k, v in spec.method_args}
    if distill.method_class(spec.method).part:
        torch.manual_seed(spec.seed)
        return distill.create(spec.method, None, teacher, **arguments)
    return distill.create(spec.method, build_model(spec), teacher, **arguments)


@functools.lru_cache(maxsize=8)
def _tensors(dataset: str, split: str, per_class: int | None, subset_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = data.dataset(dataset, split)
    targets = torch.as_tensor(ds.targets)
    indices = data.stratified_subset(targets, per_class, seed=subset_seed)
    return data.as_tensors(ds, indices)


def batches(spec: RunSpec, split: str, device: torch.device | str | None = None) -> "data.TensorBatches":
    """The deterministic batches a run trains on (``split="train"``) or is evaluated on (``"test"``)."""
    from . import device as default_device

    device = device if device is not None else default_device()
    info = data.info(spec.dataset)
    train = split == "train"
    images, labels = _tensors(spec.dataset, split, spec.train_per_class if train else spec.test_per_class,
                              spec.subset_seed)
    augment = spec.augment
    if augment == "default":
        augment = data.default_augment(spec.dataset)
    return data.TensorBatches(images, labels, spec.schedule.batch_size if train else EVAL_BATCH_SIZE,
                              info.mean, info.std, shuffle=train, augment=augment if train else None,
                              device=device)


def _load_finished(spec: RunSpec, path: Path) -> Run | None:
    """The finished run at ``path``, or ``None`` when it is unfinished or any of its files is damaged."""
    if not (path / "metrics.json").exists():
        return None
    try:
        metrics = storage.load_json(path / "metrics.json")
        storage.read_bytes(path / "final.pt")
        run = Run(spec, path, metrics)
        for epoch in spec.schedule.checkpoints:
            storage.read_bytes(run.checkpoint_path(epoch))
        if spec.probes:
            storage.read_bytes(path / "series.pt")
    except storage.CorruptFile as error:
        print(f"[kdnb] {error}; redoing run {path.name} ({spec.label})")
        shutil.rmtree(path, ignore_errors=True)
        return None
    return run


def finished(spec: RunSpec, root: str | Path | None = None) -> Run | None:
    """The finished run of ``spec`` in the cache (``root``, default :func:`runs_root`), or ``None``: what
    :func:`train_or_load` would return without training. A damaged run is removed (it would be redone anyway).
    The plan (:mod:`kdnb.plan`) asks this to say which runs are cached."""
    base = Path(root) if root is not None else runs_root()
    return _load_finished(spec, base / spec.key())


def train_or_load(spec: RunSpec, root: str | Path | None = None, device: torch.device | str | None = None,
                  force: bool = False) -> Run:
    """Return the finished run for ``spec``: from the cache, by resuming an interrupted one, or by training it.

    The whole chain (teacher, input runs) is validated first; then the teacher and the input runs are
    themselves obtained with ``train_or_load``, then this run.
    """
    spec.validate()  # the whole chain, once, before anything trains
    return _obtain(spec, Path(root) if root is not None else runs_root(), device, force)


def _obtain(spec: RunSpec, root: Path, device: torch.device | str | None, force: bool = False) -> Run:
    """:func:`train_or_load` for a spec whose chain is already validated."""
    from . import device as default_device

    key = spec.key()
    path = root / key
    with storage.locked(root / f".{key}.lock"):
        if force:
            shutil.rmtree(path, ignore_errors=True)
        finished = _load_finished(spec, path)
        if finished is not None:
            return finished
        device = torch.device(device) if device is not None else default_device()
        teacher = None
        if spec.teacher is not None:
            teacher = _obtain(spec.teacher, root, device).model(device=device)
        inputs = {k: _obtain(v, root, device) for k, v in spec.inputs().items()}
        method = build_method(spec, teacher, inputs)
        return Run(spec, path, train_run(spec, path, method, device))


def train_run(spec: RunSpec, path: Path, method: distill.Method, device: torch.device,
              replicas: "Replicas | None" = None) -> dict:
    """Train ``method`` (built by :func:`build_method`) as run ``spec`` in ``path``, or finish it from its
    ``state.pt``, and write the run's files; returns its metrics (what ``metrics.json`` holds).

    With ``replicas`` this is one of several processes training the run together (:mod:`kdnb.distributed`): it
    trains on its share of every batch and only process 0 writes files; the metrics it returns are complete on
    process 0 alone.
    """
    writes = replicas is None or replicas.rank == 0
    train_batches = batches(spec, "train", device)
    if replicas is not None:
        train_batches = train_batches.shard(replicas.rank, replicas.size)
    if writes:
        storage.save_json(spec.to_dict(), path / "spec.json")
    trainer = Trainer(method, train_batches, spec.schedule, seed=spec.seed,
                      evaluation=batches(spec, "test", device), device=device,
                      probes=[probes.create(p) for p in spec.probes], run_dir=path, desc=spec.label,
                      replicas=replicas)
    began = time.perf_counter()
    history = trainer.fit()
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "stage", "lr", "train_time_s")}
    metrics = {"history": history, "final": final, "device": str(device),
               "wall_time_s": time.perf_counter() - began, "steps_per_epoch": trainer.steps_per_epoch,
               "train_images": trainer.train_batches.num_samples}
    if replicas is not None:
        metrics["processes"] = replicas.size
    if not writes:
        return metrics
    # The student's weights once; everything else the method trained (e.g. DML's peer) beside them.
    extras = {k: v for k, v in method.state_dict().items() if not k.startswith("student.")}
    student = method.student.state_dict() if method.student is not None else None  # a part has none
    storage.save_torch({"student": student, "extras": extras}, path / "final.pt")
    if spec.probes:
        storage.save_torch(trainer.series(), path / "series.pt")
    try:
        storage.save_json(metrics, path / "metrics.json")
    except storage.UnsaveableValue as error:
        raise storage.UnsaveableValue(f"run {spec.label} ({path}): {error}") from None
    storage.remove(path / "state.pt")
    return metrics
