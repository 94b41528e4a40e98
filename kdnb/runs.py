"""The run cache: how chapters share training work.

A chapter never trains inline. It describes a run with a frozen :class:`RunSpec` and calls
:func:`train_or_load`, which returns the finished run from ``runs/<hash>/`` or trains it there first::

    runs/<hash>/spec.json      the spec, for humans and for `python -m kdnb clean`
    runs/<hash>/state.pt       resume point, rewritten after every epoch (removed when the run finishes)
    runs/<hash>/ckpt/epoch_XXX.pt   the student at the schedule's checkpoint epochs
    runs/<hash>/final.pt       the trained student
    runs/<hash>/metrics.json   per-epoch metrics and the final ones (written last: marks the run finished)

Every file carries a sha256 sidecar (:mod:`kdnb.storage`); a run with any damaged file is redone.
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
from .train import Schedule, Trainer

CACHE_VERSION = 1  # bump when a change to the code makes old runs wrong
EVAL_BATCH_SIZE = 500


def _frozen_items(values: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(values, dict):
        values = values.items()
    items = tuple(sorted((str(k), v) for k, v in values))
    for key, value in items:
        if not isinstance(value, (bool, int, float, str, type(None))):
            raise TypeError(f"hyper-parameter {key}={value!r}: only bool/int/float/str/None can be hashed")
    return items


def _canonical_numbers(value: Any) -> Any:
    """Whole floats as ints, so that ``temperature=4`` and ``temperature=4.0`` name the same run."""
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a training run, and nothing else (no paths, no device).

    ``train_per_class``/``test_per_class`` select deterministic class-stratified subsets (``None``: all);
    ``method_args`` are the method's hyper-parameters (a dict is accepted); ``teacher`` is the spec of the run
    whose final student is this run's teacher; ``augment="default"`` uses the dataset's standard augmentation.
    """

    dataset: str
    model: str
    schedule: Schedule
    method: str = "ce"
    method_args: tuple[tuple[str, Any], ...] = ()
    teacher: "RunSpec | None" = None
    train_per_class: int | None = None
    test_per_class: int | None = None
    subset_seed: int = 0
    augment: str | None = "default"
    seed: int = 0
    probes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_args", _frozen_items(self.method_args))
        object.__setattr__(self, "probes", tuple(self.probes))
        if isinstance(self.schedule, dict):
            object.__setattr__(self, "schedule", Schedule(**self.schedule))
        if isinstance(self.teacher, dict):
            object.__setattr__(self, "teacher", RunSpec.from_dict(self.teacher))
        if self.teacher is not None and self.teacher.dataset != self.dataset:
            raise ValueError(f"teacher trained on {self.teacher.dataset!r}, student on {self.dataset!r}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["method_args"] = dict(self.method_args)
        out["teacher"] = self.teacher.to_dict() if self.teacher is not None else None
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "RunSpec":
        values = dict(values)
        values["schedule"] = Schedule(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in values["schedule"].items()})
        values["probes"] = tuple(values.get("probes", ()))
        return cls(**values)

    def key(self) -> str:
        """Stable hash of the spec (and the cache version): the run's folder name."""
        canonical = json.dumps({"version": CACHE_VERSION, "spec": _canonical_numbers(self.to_dict())},
                               sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "RunSpec":
        return dataclasses.replace(self, **changes)

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


def runs_root() -> Path:
    """``$KDNB_RUNS``, else ``runs/`` at the repository root."""
    if os.environ.get("KDNB_RUNS"):
        return Path(os.environ["KDNB_RUNS"])
    return Path(__file__).resolve().parents[1] / "runs"


@dataclass
class Run:
    """A finished run: its spec, folder and metrics; :meth:`model` loads the trained student."""

    spec: RunSpec
    path: Path
    metrics: dict = field(repr=False)

    @property
    def history(self) -> list[dict]:
        return self.metrics["history"]

    @property
    def final(self) -> dict:
        return self.metrics["final"]

    def model(self, epoch: int | None = None, device: torch.device | str | None = None) -> nn.Module:
        """The student after training (``epoch=None``) or at one of the schedule's checkpoint epochs, in eval
        mode."""
        from . import device as default_device

        if epoch is None:
            path = self.path / "final.pt"
        elif epoch in self.spec.schedule.checkpoints:
            path = self.path / "ckpt" / f"epoch_{epoch:03d}.pt"
        else:
            raise ValueError(f"no checkpoint at epoch {epoch}; this run keeps {list(self.spec.schedule.checkpoints)}")
        net = build_model(self.spec)
        net.load_state_dict(storage.load_torch(path)["student"])
        return net.to(device if device is not None else default_device()).eval()

    def network(self, name: str, device: torch.device | str | None = None) -> nn.Module:
        """Another trained network of the method, by attribute name (e.g. DML's ``"peer"``), final weights,
        in eval mode."""
        from . import device as default_device

        if name == "student":
            return self.model(device=device)
        try:
            method = distill.create(self.spec.method, build_model(self.spec), None, **dict(self.spec.method_args))
        except ValueError as error:
            raise ValueError(f"run {self.spec.label} has no network {name!r} ({error})") from error
        if not isinstance(getattr(method, name, None), nn.Module):
            extras = [n for n, _ in method.named_children()]
            raise ValueError(f"run {self.spec.label} has no network {name!r}; it has: {', '.join(extras)}")
        final = storage.load_torch(self.path / "final.pt")
        method.load_state_dict({**{f"student.{k}": v for k, v in final["student"].items()}, **final["extras"]})
        return getattr(method, name).to(device if device is not None else default_device()).eval()


def build_model(spec: RunSpec) -> nn.Module:
    """The student network of ``spec``, initialised from ``spec.seed``."""
    info = data.info(spec.dataset)
    torch.manual_seed(spec.seed)
    return models.create(spec.model, num_classes=info.num_classes, in_channels=info.in_channels)


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
        for epoch in spec.schedule.checkpoints:
            storage.read_bytes(path / "ckpt" / f"epoch_{epoch:03d}.pt")
    except storage.CorruptFile as error:
        print(f"[kdnb] {error}; redoing run {path.name} ({spec.label})")
        shutil.rmtree(path, ignore_errors=True)
        return None
    return Run(spec, path, metrics)


def train_or_load(spec: RunSpec, root: str | Path | None = None, device: torch.device | str | None = None,
                  force: bool = False) -> Run:
    """Return the finished run for ``spec``: from the cache, by resuming an interrupted one, or by training it.

    A teacher named in ``spec.teacher`` is itself obtained with ``train_or_load`` first.
    """
    from . import device as default_device

    root = Path(root) if root is not None else runs_root()
    path = root / spec.key()
    with storage.locked(root / f".{spec.key()}.lock"):
        if force:
            shutil.rmtree(path, ignore_errors=True)
        finished = _load_finished(spec, path)
        if finished is not None:
            return finished
        device = torch.device(device) if device is not None else default_device()
        teacher = None
        if spec.teacher is not None:
            teacher = train_or_load(spec.teacher, root=root, device=device).model(device=device)
        method = distill.create(spec.method, build_model(spec), teacher, **dict(spec.method_args))
        storage.save_json(spec.to_dict(), path / "spec.json")
        trainer = Trainer(method, batches(spec, "train", device), spec.schedule, seed=spec.seed,
                          evaluation=batches(spec, "test", device), device=device,
                          probes=[probes.create(p) for p in spec.probes], run_dir=path, desc=spec.label)
        began = time.perf_counter()
        history = trainer.fit()
        # The student's weights once; everything else the method trained (e.g. DML's peer) beside them.
        extras = {k: v for k, v in method.state_dict().items() if not k.startswith("student.")}
        storage.save_torch({"student": method.student.state_dict(), "extras": extras}, path / "final.pt")
        final = {k: v for k, v in history[-1].items() if k not in ("epoch", "stage", "lr", "train_time_s")}
        metrics = {"history": history, "final": final, "device": str(device),
                   "wall_time_s": time.perf_counter() - began,
                   "train_images": trainer.train_batches.num_samples}
        storage.save_json(metrics, path / "metrics.json")
        storage.remove(path / "state.pt")
        return Run(spec, path, metrics)
