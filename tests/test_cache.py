"""The analysis cache (kdnb.cache): computed once, keyed by everything it depends on, stored like runs."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from kdnb import cache, storage


class Counter:
    """A compute function that counts its calls."""

    def __init__(self, value=None):
        self.calls = 0
        self.value = value if value is not None else {"sigma": torch.arange(6.0).reshape(2, 3), "n": 3}

    def __call__(self):
        self.calls += 1
        return self.value


@dataclass(frozen=True)
class FakeSpec:
    """Stands in for kdnb.runs.RunSpec: the cache only asks for ``key()`` (and ``label`` for humans)."""

    name: str

    def key(self) -> str:
        return f"spec-{self.name}"

    @property
    def label(self) -> str:
        return f"ce:{self.name} seed=0"


@dataclass
class FakeRun:
    """Stands in for kdnb.runs.Run: ``.spec.key()``."""

    spec: FakeSpec


def test_second_call_loads_instead_of_computing(tmp_path):
    compute = Counter()
    first = cache.cached("sigma", compute, runs=[FakeSpec("a")], args={"epoch": 2}, root=tmp_path)
    second = cache.cached("sigma", compute, runs=[FakeSpec("a")], args={"epoch": 2}, root=tmp_path)
    assert compute.calls == 1
    assert torch.equal(first["sigma"], second["sigma"]) and first["n"] == second["n"] == 3
    # The files are where the docs say, and the value is a plain weights_only checkpoint.
    stored = cache.path("sigma", runs=[FakeSpec("a")], args={"epoch": 2}, root=tmp_path)
    assert stored.parent == tmp_path / "analyses" / "sigma"
    assert torch.equal(torch.load(stored, weights_only=True)["sigma"], compute.value["sigma"])
    described = json.loads(stored.with_suffix(".json").read_text())
    assert described["name"] == "sigma" and described["args"] == {"epoch": 2}
    assert described["runs"] == [{"run": "spec-a", "label": "ce:a seed=0"}]
    assert cache.entries("sigma", root=tmp_path) == [stored]


def test_first_call_returns_what_later_calls_load(tmp_path):
    compute = Counter({"t": (torch.ones(2), [1, 2.5, "x"])})
    first = cache.cached("shape", compute, root=tmp_path)
    second = cache.cached("shape", compute, root=tmp_path)
    assert type(first["t"]) is type(second["t"]) is tuple
    assert first["t"][1] == second["t"][1] == [1, 2.5, "x"]


@pytest.mark.parametrize("change", [
    {"name": "cka"},
    {"version": 2},
    {"runs": [FakeSpec("b")]},
    {"runs": [FakeSpec("a"), FakeSpec("b")]},
    {"runs": []},
    {"args": {"epoch": 3}},
    {"args": {"epoch": 2, "lam": 0.5}},
    {"args": {"epoch": "2"}},
])
def test_every_input_is_part_of_the_key(tmp_path, change):
    base = dict(name="sigma", runs=[FakeSpec("a")], args={"epoch": 2}, version=1)
    compute = Counter()
    cache.cached(base["name"], compute, runs=base["runs"], args=base["args"], version=base["version"], root=tmp_path)
    changed = dict(base, **change)
    cache.cached(changed["name"], compute, runs=changed["runs"], args=changed["args"], version=changed["version"],
                 root=tmp_path)
    assert compute.calls == 2, f"{change} reused the entry of {base}"


def test_runs_and_specs_name_the_same_entry():
    spec = FakeSpec("a")
    assert cache.key("x", runs=[FakeRun(spec)]) == cache.key("x", runs=[spec]) == cache.key("x", runs=spec)
    assert cache.key("x", runs=[FakeSpec("a"), FakeSpec("b")]) != cache.key("x", runs=[FakeSpec("b"), FakeSpec("a")])
    assert cache.key("x", args={"teacher": FakeRun(spec)}) == cache.key("x", args={"teacher": spec})
    with pytest.raises(TypeError, match="runs\\[0\\]"):
        cache.key("x", runs=["not a run"])


def test_tensor_arguments_count_by_value_dtype_and_shape():
    images = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    key = cache.key("sigma", args={"images": images})
    assert key == cache.key("sigma", args={"images": images.clone()})  # equal values, another tensor
    assert key == cache.key("sigma", args={"images": images.t().contiguous().t()})  # another memory layout
    assert key == cache.key("sigma", args={"images": images.numpy()})  # the same array from numpy
    changed = images.clone()
    changed[1, 2] += 1e-6
    assert key != cache.key("sigma", args={"images": changed})
    assert key != cache.key("sigma", args={"images": images.double()})
    assert key != cache.key("sigma", args={"images": images.reshape(4, 3)})
    assert key != cache.key("sigma", args={"images": images.reshape(-1)})
    assert cache.key("s", args={"x": torch.zeros(0)}) != cache.key("s", args={"x": torch.zeros(0, 2)})


def test_plain_arguments_are_canonical():
    assert cache.key("s", args={"t": 4.0}) == cache.key("s", args={"t": 4})
    assert cache.key("s", args={"layers": (1, 2)}) == cache.key("s", args={"layers": [1, 2]})
    assert cache.key("s", args={"a": 1, "b": 2}) == cache.key("s", args={"b": 2, "a": 1})
    assert cache.key("s", args={"t": np.float64(0.5)}) == cache.key("s", args={"t": 0.5})
    assert cache.key("s", args={"flag": True}) != cache.key("s", args={"flag": 1})
    assert cache.key("s", args={"t": 0.1}) != cache.key("s", args={"t": 0.10000000000000002})
    with pytest.raises(TypeError, match="args\\['fn'\\]"):
        cache.key("s", args={"fn": print})
    with pytest.raises(ValueError, match="name"):
        cache.key("../escape")


def test_damaged_file_is_recomputed_with_a_message(tmp_path, capsys):
    compute = Counter()
    cache.cached("sigma", compute, root=tmp_path)
    stored = cache.path("sigma", root=tmp_path)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    value = cache.cached("sigma", compute, root=tmp_path)
    assert compute.calls == 2
    assert torch.equal(value["sigma"], compute.value["sigma"])
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "sigma" in message[0] and "recomputing" in message[0]
    cache.cached("sigma", compute, root=tmp_path)
    assert compute.calls == 2, "the recomputed value was not stored"


def test_truncated_file_is_recomputed(tmp_path):
    compute = Counter()
    cache.cached("sigma", compute, root=tmp_path)
    stored = cache.path("sigma", root=tmp_path)
    stored.write_bytes(stored.read_bytes()[:100])
    cache.cached("sigma", compute, root=tmp_path)
    assert compute.calls == 2


def test_unreadable_file_with_right_checksum_is_an_error_not_a_recompute(tmp_path):
    compute = Counter()
    stored = cache.path("sigma", root=tmp_path)
    # A pickle that weights_only=True refuses (an arbitrary class), written with a valid checksum.
    import io

    buffer = io.BytesIO()
    torch.save({"value": Path("x")}, buffer)
    storage.write_bytes(stored, buffer.getvalue())
    with pytest.raises(storage.UnreadableFile, match="sigma"):
        cache.cached("sigma", compute, root=tmp_path)
    assert compute.calls == 0


@pytest.mark.parametrize("bad, where", [
    (np.float64(0.5), "value"),
    ({"cka": [torch.ones(1), np.ones(2)]}, "value['cka'][1]"),
    ({"net": torch.nn.Linear(2, 2)}, "value['net']"),
    (Path("x"), "value"),
])
def test_unsaveable_value_is_refused_with_the_analysis_name(tmp_path, bad, where):
    with pytest.raises(storage.UnsaveableValue) as raised:
        cache.cached("cka_matrix", lambda: bad, root=tmp_path)
    message = str(raised.value)
    assert "cka_matrix" in message and where in message
    assert type(bad).__name__ in message
    assert not list(tmp_path.rglob("*.pt")), "a refused value left a file behind"


def test_exception_in_compute_leaves_no_file(tmp_path):
    def broken():
        raise RuntimeError("estimator diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        cache.cached("sigma", broken, root=tmp_path)
    folder = tmp_path / "analyses" / "sigma"
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".lock")] == []
    compute = Counter()
    cache.cached("sigma", compute, root=tmp_path)
    assert compute.calls == 1


def test_two_processes_compute_once(tmp_path):
    """The entry lock: a second process asking for the same analysis waits and loads the first one's value."""
    code = (
        "import sys, time, torch\n"
        "from kdnb import cache\n"
        "def compute():\n"
        "    with open(sys.argv[2], 'a') as log: log.write('computed\\n')\n"
        "    time.sleep(1.0)\n"
        "    return torch.ones(3)\n"
        "print(cache.cached('slow', compute, root=sys.argv[1]).sum().item())\n"
    )
    log = tmp_path / "calls.txt"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(log)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["3.0", "3.0"]
    assert log.read_text().splitlines() == ["computed"]


def test_import_is_cheap():
    code = ("import sys, kdnb.cache\n"
            "heavy = [m for m in ('kdnb.distill', 'kdnb.explain', 'kdnb.concepts', 'kdnb.runs', 'kdnb.train')"
            " if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
