"""One run trained by several processes: ``torchrun --nproc_per_node=N -m kdnb train SPEC``.

Each process holds the whole method (student, peer, connectors) and its frozen teacher, trains on its share of
every batch and, after each update's backward pass, the gradients of that update's parameters are averaged over
the processes (an all-reduce), so every process takes the same optimiser step. Process 0 alone evaluates and
writes the run cache, with the single-process code (:func:`kdnb.runs.train_run`, :class:`kdnb.train.Trainer`).

Why these choices
-----------------
- **The run's identity does not change.** Process ``r`` of ``n`` takes its contiguous share of each global batch of
  the single-process order (:meth:`kdnb.data.TensorBatches.shard`), so the ``n`` processes together see, at every
  step, exactly the images, crops and flips the single process sees; the batch size in the spec is the global
  batch. A run trained on ``n`` processes therefore has the key of the single-process run (``metrics.json`` says
  ``"processes": n``). ``DistributedSampler`` would stride a permutation of its own: other batches, another run.
- **Gradients are averaged by hand, not by wrapping modules in ``DistributedDataParallel``.** Methods over several
  networks (DML, IE-DML) run one optimiser per :class:`~kdnb.distill.base.Update`, each after the previous one
  changed its network, and methods call networks in ways DDP's forward hooks do not expect (a peer's prediction
  under ``no_grad``, a frozen teacher, staged freezing). One all-reduce per update over that update's gradients
  works for every method. Each process's gradient is weighted by its share of the batch, so a last batch that
  does not split evenly still gives the gradient of the mean loss over the whole batch.
- **BatchNorm normalises each process's share with that share's statistics.** ``nn.SyncBatchNorm`` would use the
  whole batch's, but it refuses CPU tensors in torch 2.14 (gloo), and one behaviour on every device is easier to
  reason about than two. The running statistics are averaged over the processes after every step, so they stay
  identical on every process (and equal, for the mean, to the single-process running mean). See the README
  ("Several processes") for what this changes numerically.
- **Resume** is the single-process resume: process 0 writes ``state.pt`` after each epoch; a relaunch after a kill
  loads it on every process, and since every process held identical parameters, optimiser state and BatchNorm
  statistics, the resumed run continues as the uninterrupted one would.

Runs the method takes (teacher, input runs) are obtained the same way first: cached ones are loaded, missing ones
trained by the same processes.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import runs, storage
from .runs import Run, RunSpec

TIMEOUT = datetime.timedelta(minutes=30)  # a collective waits this long for a process that died (then fails)


@dataclass(frozen=True)
class Group:
    """This process's place among the processes that train a run together (torch.distributed's default group):
    ``rank`` of ``size``, on ``device``. Implements :class:`kdnb.train.Replicas`."""

    rank: int
    size: int
    device: torch.device

    def average_gradients(self, parameters: list[nn.Parameter], samples: int) -> None:
        """Every gradient becomes ``sum_r samples_r * grad_r / sum_r samples_r``: the gradient of the mean loss
        over the whole batch (one all-reduce; the sample counts travel in the same buffer)."""
        _weighted_mean([p.grad for p in parameters if p.grad is not None], samples)  # same parameters everywhere

    def average_statistics(self, module: nn.Module, samples: int) -> None:
        """BatchNorm running statistics of the layers that recorded them this step (in training mode) become
        their mean over the processes weighted by ``samples``: identical everywhere, as the parameters are, and for
        the running mean exactly the single-process value (an average of per-share means weighted by share)."""
        _weighted_mean([s for m in module.modules()
                        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
                        and m.running_mean is not None for s in (m.running_mean, m.running_var)], samples)

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over the processes (a new tensor)."""
        values = values.clone()
        dist.all_reduce(values)
        return values

    def agree(self, flag: bool) -> bool:
        """Process 0's ``flag``, on every process."""
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def barrier(self) -> None:
        dist.barrier()


def _weighted_mean(tensors: list[Tensor], samples: int) -> None:
    """Each tensor becomes ``sum_r samples_r * tensor_r / sum_r samples_r`` over the processes, in place, with one
    all-reduce (the sample counts travel in the same buffer)."""
    if not tensors:
        return
    flat = torch.cat([*(t.reshape(-1) for t in tensors), tensors[0].new_ones(1)])
    flat.mul_(samples)
    dist.all_reduce(flat)
    flat.div_(flat[-1].clone())
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or anything else that sets ``WORLD_SIZE``/``RANK``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@contextlib.contextmanager
def process_group(device: str | None = None) -> Iterator[Group]:
    """Join the processes started by ``torchrun`` for the duration of the block and yield this one's
    :class:`Group`: NCCL on CUDA (process ``LOCAL_RANK`` on GPU ``LOCAL_RANK``), gloo on the CPU. ``device``
    (``"cpu"``/``"cuda"``) overrides ``$KDNB_DEVICE`` and the default (CUDA when present)."""
    from . import device as default_device

    kind = torch.device(device) if device is not None else default_device()
    if kind.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        where = torch.device("cuda", local)
    else:
        where = torch.device(kind.type)
    dist.init_process_group("nccl" if where.type == "cuda" else "gloo", timeout=TIMEOUT,
                            **({"device_id": where} if where.type == "cuda" else {}))
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), where)
    finally:
        dist.destroy_process_group()


def obtain(spec: RunSpec, root: Path, group: Group) -> Run:
    """:func:`kdnb.runs.train_or_load` for the processes of ``group`` together (every process calls it): the finished
    run from the cache, else its teacher and input runs first, then the run itself, trained or resumed. Process 0
    holds the run's lock (no other job trains it meanwhile), decides whether it is finished and writes its files."""
    path = root / spec.key()
    lock = storage.locked(root / f".{spec.key()}.lock") if group.rank == 0 else contextlib.nullcontext()
    with lock:
        finished = runs.finished(spec, root) if group.rank == 0 else None
        if not group.agree(finished is not None):
            teacher = None
            if spec.teacher is not None:
                teacher = obtain(spec.teacher, root, group).model(device=group.device)
            inputs = {k: obtain(v, root, group) for k, v in spec.inputs().items()}
            method = runs.build_method(spec, teacher, inputs)
            runs.train_run(spec, path, method, group.device, replicas=group)
        group.barrier()  # process 0 has written (or found) every file of the run
    return finished if finished is not None else Run(spec, path, storage.load_json(path / "metrics.json"))


def train(specs: Sequence[RunSpec], root: str | Path | None = None, device: str | None = None) -> list[Run]:
    """Train (or load) each of ``specs`` in turn: with the other processes when started by ``torchrun`` (one process
    group for all of them), else in this process alone (exactly :func:`kdnb.runs.train_or_load`)."""
    root = Path(root) if root is not None else runs.runs_root()
    for spec in specs:
        spec.validate()  # every chain, before anything trains or any process waits for another
    if not launched():
        return [runs.train_or_load(spec, root=root, device=device) for spec in specs]
    with process_group(device) as group:
        return [obtain(spec, root, group) for spec in specs]


def load_spec(given: str, root: str | Path | None = None) -> RunSpec:
    """The spec named on the command line: a ``spec.json`` file, a run folder holding one, or a run key (a folder
    name under the run cache, ``$KDNB_RUNS`` or ``runs/``)."""
    root = Path(root) if root is not None else runs.runs_root()
    candidates = [Path(given), Path(given) / "spec.json", root / given / "spec.json"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no spec at {given!r}: give a spec.json, a run folder or a run key under {root}")
    return RunSpec.from_dict(storage.load_json(found) if storage.exists(found) else _plain_json(found))


def _plain_json(path: Path) -> dict:
    """A spec.json written by hand (no checksum sidecar)."""
    return json.loads(path.read_text())
