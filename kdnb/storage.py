"""Atomic, checksummed files for the run cache.

Every file written here gets a ``<name>.sha256`` sidecar. A reader recomputes the digest and raises
:class:`CorruptFile` on any mismatch, so a truncated or damaged checkpoint is redone, never silently used.
The files themselves stay plain ``torch.save``/JSON files: ``torch.load(path, weights_only=True)`` reads a
checkpoint directly.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch


class CorruptFile(RuntimeError):
    """A cached file is missing its checksum, is truncated, or does not match its checksum: redo it."""


class UnreadableFile(RuntimeError):
    """A file whose checksum is right but which cannot be read back (an unpickler refusal, a format change).

    This is a bug or a version mismatch, not damage: redoing the work would write the same file again, so the
    error is raised rather than treated as :class:`CorruptFile`.
    """


class UnsaveableValue(TypeError):
    """A value that the cache cannot store safely (e.g. a numpy scalar in a metric, a custom class)."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, keeping its sha256 sidecar valid at every moment.

    The sidecar first accepts both the old and the new digest, then the data file is swapped in (one
    ``os.replace``), then the sidecar names the new digest alone. A process killed at any point leaves the old
    or the new content, each with a digest that vouches for it, so a resumable state is never lost.
    """
    path = Path(path)
    side = _sidecar(path)
    digest = hashlib.sha256(data).hexdigest()
    previous = side.read_text().split() if side.exists() else []
    _atomic_write_bytes(side, "\n".join(dict.fromkeys([digest, *previous])).encode() + b"\n")
    _atomic_write_bytes(path, data)
    _atomic_write_bytes(side, digest.encode() + b"\n")


def read_bytes(path: str | Path) -> bytes:
    """Read a file written by :func:`write_bytes`, verifying its checksum."""
    path = Path(path)
    side = _sidecar(path)
    if not path.exists() or not side.exists():
        raise CorruptFile(f"{path}: file or its checksum is missing (interrupted write?)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() not in side.read_text().split():
        raise CorruptFile(f"{path}: checksum mismatch ({len(data)} bytes); the file is damaged")
    return data


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created if needed): two kernels asking for the same run
    or analysis must not compute it twice or interleave writes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove(path: str | Path) -> None:
    path = Path(path)
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)


def exists(path: str | Path) -> bool:
    path = Path(path)
    return path.exists() and _sidecar(path).exists()


def save_torch(obj: Any, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True`` after verifying its checksum."""
    data = read_bytes(path)
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # the bytes are the ones written: the code, not the file, is at fault
        raise UnreadableFile(f"{path}: checksum is right but the file cannot be loaded ({error})") from error


def _refuse(value: Any) -> Any:
    raise UnsaveableValue(f"cannot store {value!r} (type {type(value).__module__}.{type(value).__qualname__}) "
                          "as JSON: convert it to a plain float/int/str/list/dict first")


def save_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as JSON; anything but plain Python values raises :class:`UnsaveableValue` naming it."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_refuse) + "\n").encode())


def load_json(path: str | Path) -> Any:
    return json.loads(read_bytes(path))
