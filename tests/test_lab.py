"""`make lab`: JupyterLab from the venv opens the MyST chapters as notebooks (a live server on loopback)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "kdnb-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    settings = tmp_path_factory.mktemp("lab-settings")
    # The same file `make lab` installs as the venv's overrides.json.
    shutil.copy(ROOT / ".jupyter-lab-overrides.json", settings / "overrides.json")
    port = free_port()
    jupyter = Path(sys.executable).parent / "jupyter"
    process = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--LabApp.app_settings_dir={settings}",
         f"--ServerApp.root_dir={ROOT / 'book'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # at most ~60 s to start
            try:
                get(f"{base}/api/status")
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {process.stderr.read()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within 60 s")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.timeout(120)
def test_markdown_opens_with_jupytext_by_default(lab):
    schema = get(f"{lab}/lab/api/settings/@jupyterlab/docmanager-extension:plugin")["schema"]
    assert schema["properties"]["defaultViewers"]["default"]["markdown"] == "Jupytext Notebook"


@pytest.mark.timeout(120)
def test_chapter_is_served_as_a_notebook(lab):
    model = get(f"{lab}/api/contents/part0/distillation.md?type=notebook&content=1")
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells if c["cell_type"] == "code")
