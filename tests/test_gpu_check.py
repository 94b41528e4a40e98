"""`make gpu-check`: where CUDA is absent it says so and exits 0; its checks' logic runs here on the CPU, so the
script keeps working as the code it checks changes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdnb import gpu_check

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: `make gpu-check` runs the checks")
def test_without_cuda_it_says_so_and_exits_zero():
    out = subprocess.run(["make", "-s", "gpu-check"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no CUDA device" in out.stdout


def test_every_check_passes_on_the_cpu(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "PER_CLASS", 16)  # 3 steps per epoch: the logic, not the scale
    passed, failed = gpu_check.run_checks("cpu")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert failed == 0, "\n".join(lines)
    assert passed == len(lines) == 9
