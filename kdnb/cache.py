"""The analysis cache: costly analyses are computed once and read back on every later execution.

σ maps of the entropy estimator, CKA matrices, sharpness curves and explanation maps depend only on the runs
they look at and a few arguments. A chapter wraps each one in :func:`cached`::

    sigma = cache.cached("sigma_maps", lambda: estimator.sigma(net, images),
                         runs=[student], args={"epoch": 3, "images": images, "lam": 1.0})

The first call computes and stores the value; every later call with the same inputs (in this kernel, the next
execution of the chapter, or another chapter) loads it instead. The files sit in the run cache folder
(:func:`kdnb.runs.runs_root`, ``$KDNB_RUNS``)::

    analyses/<name>/<key>.pt      the value (``torch.load(path, weights_only=True)`` reads it)
    analyses/<name>/<key>.json    its inputs, for humans (the runs' labels, the arguments)

What the key is made of
    ``name``; ``version`` (bump it when the analysis code changes, and only that analysis is recomputed); the
    keys of the ``runs``, in order (a :class:`~kdnb.runs.Run` or a :class:`~kdnb.runs.RunSpec`: a run's key
    already covers its spec, the method version and the global cache version); and ``args``. Arguments may be
    ``None``/bools/numbers/strings, lists and tuples (the same key for both), dicts, runs, and tensors or
    numpy arrays, which count by their dtype, shape and bytes (so equal tensors give the same entry wherever
    they come from, and a tensor whose values change gives a new one). Whole floats count as ints (``4.0`` and
    ``4`` are the same argument), as in run specs. A checkpoint epoch is an argument like any other.

What may be cached
    Tensors, plain numbers, strings, ``None``, and lists/tuples/dicts of them: what ``torch.load`` reads with
    ``weights_only=True``. Anything else (a numpy scalar, a module, a custom class) raises
    :class:`kdnb.storage.UnsaveableValue` naming the analysis and where the value sits, when the value is
    saved. Values come back on the CPU, the same on the first call as on every later one.

Files are written atomically with a sha256 sidecar (:mod:`kdnb.storage`). A damaged file (checksum) is
recomputed, with a one-line message. A file whose checksum is right but which cannot be loaded is a bug or a
version mismatch, not damage: :class:`kdnb.storage.UnreadableFile` is raised instead of recomputing silently.
A per-entry lock makes a second kernel asking for the same analysis wait for the first one's result.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import torch

from . import storage

T = TypeVar("T")

__all__ = ["cached", "key", "path", "entries", "canonical_args"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------- the key
def _tensor_bytes(value: torch.Tensor) -> bytes:
    flat = value.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype.is_complex:
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _array_entry(dtype: str, shape: Iterable[int], data: bytes) -> dict:
    return {"tensor": {"dtype": dtype, "shape": list(shape), "sha256": hashlib.sha256(data).hexdigest()}}


def _run_key(value: Any) -> str | None:
    """The key of a :class:`~kdnb.runs.Run` (``.spec.key()``) or :class:`~kdnb.runs.RunSpec` (``.key()``)."""
    spec = getattr(value, "spec", value)
    key_method = getattr(spec, "key", None)
    if callable(key_method) and not isinstance(spec, (dict, str, bytes)):
        key = key_method()
        if isinstance(key, str):
            return key
    return None


def _run_entry(value: Any) -> dict:
    spec = getattr(value, "spec", value)
    entry = {"run": _run_key(value)}
    label = getattr(spec, "label", None)
    if isinstance(label, str):
        entry["label"] = label  # for the humans' JSON only; not part of the key
    return entry


def canonical_args(value: Any, where: str = "args") -> Any:
    """``value`` as plain JSON data that names it exactly: tensors and arrays by dtype, shape and a sha256 of
    their bytes, runs by their key, tuples as lists, whole floats as ints. Anything else is a ``TypeError``
    naming ``where`` it sits."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        if math.isnan(value) or math.isinf(value):
            return {"float": repr(value)}
        return value
    if isinstance(value, torch.Tensor):
        return _array_entry(str(value.dtype).removeprefix("torch."), value.shape, _tensor_bytes(value))
    if isinstance(value, (list, tuple)):
        return [canonical_args(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string; analysis arguments are keyed by name")
            out[k] = canonical_args(v, f"{where}[{k!r}]")
        return out
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"{where}: a numpy array of Python objects cannot name an analysis")
            array = numpy.ascontiguousarray(value)
            return _array_entry(str(array.dtype), array.shape, array.tobytes())
        if isinstance(value, numpy.generic):
            return canonical_args(value.item(), where)
    if _run_key(value) is not None:
        return {"run": _run_key(value)}
    raise TypeError(f"{where} = {_short(value)} (type {_type_name(value)}): an analysis argument must be None, a "
                    "bool/number/string, a list/tuple/dict of them, a tensor or numpy array, or a run")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"analysis name {name!r}: use letters, digits, '_', '-', '.' (it names a folder)")


def _as_list(runs: Any) -> list:
    if runs is None:
        return []
    if isinstance(runs, (list, tuple)):
        return list(runs)
    return [runs]  # a single run or spec


def _identity(name: str, runs: Any, args: dict | None, version: int) -> dict:
    _check_name(name)
    if not isinstance(version, int) or isinstance(version, bool):
        raise TypeError(f"analysis {name!r}: version must be an int, not {version!r}")
    run_keys = []
    for i, run in enumerate(_as_list(runs)):
        key = _run_key(run)
        if key is None:
            raise TypeError(f"analysis {name!r}: runs[{i}] = {_short(run)} is neither a Run nor a RunSpec")
        run_keys.append(key)
    if args is not None and not isinstance(args, dict):
        raise TypeError(f"analysis {name!r}: args must be a dict of named arguments, not {_type_name(args)}")
    return {"name": name, "version": version, "runs": run_keys, "args": canonical_args(dict(args or {}))}


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def key(name: str, *, runs: Any = (), args: dict | None = None, version: int = 1) -> str:
    """The entry's key: a hash of ``name``, ``version``, the runs' keys and the canonical ``args``."""
    return _digest(_identity(name, runs, args, version))


def _root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root)
    from .runs import runs_root  # at call time: importing kdnb.cache stays cheap

    return runs_root()


def path(name: str, *, runs: Any = (), args: dict | None = None, version: int = 1,
         root: str | Path | None = None) -> Path:
    """Where the value of this analysis is (or will be) stored."""
    return _root(root) / "analyses" / name / f"{key(name, runs=runs, args=args, version=version)}.pt"


def entries(name: str | None = None, root: str | Path | None = None) -> list[Path]:
    """The stored values of one analysis (or of all), for inspection and clean-up."""
    base = _root(root) / "analyses"
    pattern = f"{name}/*.pt" if name is not None else "*/*.pt"
    return sorted(base.glob(pattern))


# ------------------------------------------------------------------------------------------- the value
def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_storable(value: Any, name: str, where: str = "value") -> None:
    """Walk the value; anything ``torch.load(weights_only=True)`` would refuse raises ``UnsaveableValue``."""
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return
    if type(value) in (torch.Tensor, torch.nn.Parameter):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_storable(item, name, f"{where}[{i}]")
        return
    if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
        for k, item in value.items():
            if type(k) not in (str, int, float, bool, tuple) and k is not None:
                raise storage.UnsaveableValue(
                    f"analysis {name!r}: cannot cache the dict key {_short(k)} (type {_type_name(k)}) in {where}")
            _check_storable(item, name, f"{where}[{k!r}]")
        return
    hint = " (convert it with float()/int() or torch.as_tensor())" if type(value).__module__ == "numpy" else ""
    raise storage.UnsaveableValue(
        f"analysis {name!r}: cannot cache {where} = {_short(value)} (type {_type_name(value)}){hint}; a cached "
        "value holds tensors, plain numbers and strings, and lists/tuples/dicts of them")


def _serialise(value: Any, name: str) -> tuple[bytes, Any]:
    """The bytes to store and the value as every later call will read it back (CPU tensors)."""
    _check_storable(value, name)
    buffer = io.BytesIO()
    torch.save(value, buffer)
    data = buffer.getvalue()
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # caught here, never by the next execution of the chapter
        raise storage.UnsaveableValue(f"analysis {name!r}: the value cannot be read back with weights_only=True "
                                      f"({error})") from error
    return data, loaded


_MISSING = object()


def _load(file: Path, name: str, report: bool = True) -> Any:
    """The stored value, or ``_MISSING`` when there is none or it is damaged (said in one line if
    ``report``)."""
    if not file.exists() and not file.with_name(file.name + ".sha256").exists():
        return _MISSING  # never computed (a lone file or checksum is an interrupted or damaged write)
    try:
        return storage.load_torch(file, map_location="cpu")
    except storage.CorruptFile as error:
        if not report:
            return _MISSING
        print(f"[kdnb] analysis {name!r}: {error}; recomputing it", file=sys.stderr, flush=True)
        return _MISSING
    except storage.UnreadableFile as error:
        raise storage.UnreadableFile(f"analysis {name!r}: {error}. If the analysis changed what it stores, "
                                     "bump its version= (or delete the file) to recompute it") from error


def cached(name: str, compute: Callable[[], T], *, runs: Any = (), args: dict | None = None, version: int = 1,
           root: str | Path | None = None) -> T:
    """The value of analysis ``name`` for ``runs`` and ``args``: loaded when stored, else ``compute()``d
    and stored.

    ``runs``: the :class:`~kdnb.runs.Run`/:class:`~kdnb.runs.RunSpec` objects the analysis reads (one or a
    list); ``args``: everything else it depends on (see the module docstring); ``version``: bump it when the
    analysis code changes; ``root``: the cache folder (default: the run cache, ``$KDNB_RUNS``).
    """
    identity = _identity(name, runs, args, version)
    entry = _digest(identity)
    folder = _root(root) / "analyses" / name
    file = folder / f"{entry}.pt"
    value = _load(file, name, report=False)  # damage is reported once, below, under the lock
    if value is not _MISSING:
        return value
    with storage.locked(folder / f".{entry}.lock"):
        value = _load(file, name)  # another kernel may have computed it while this one waited
        if value is not _MISSING:
            return value
        began = time.perf_counter()
        result = compute()
        seconds = time.perf_counter() - began
        data, value = _serialise(result, name)
        described = dict(identity, runs=[_run_entry(r) for r in _as_list(runs)], compute_seconds=round(seconds, 3),
                         created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        storage.write_bytes(file, data)  # the value first: the JSON is only a description
        storage.save_json(described, file.with_suffix(".json"))
    return value
