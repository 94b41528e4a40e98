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
from bs4 import BeautifulSoup
from conftest import chromium

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
    user = tmp_path_factory.mktemp("lab-user")  # workspaces and user settings: not the home folder
    # The same file `make lab` installs as the venv's overrides.json.
    shutil.copy(ROOT / ".jupyter-lab-overrides.json", settings / "overrides.json")
    port = free_port()
    jupyter = Path(sys.executable).parent / "jupyter"
    process = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--LabApp.app_settings_dir={settings}",
         f"--LabApp.user_settings_dir={user / 'settings'}", f"--LabApp.workspaces_dir={user / 'workspaces'}",
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


@pytest.mark.timeout(120)
def test_myst_extension_is_enabled(lab):
    """jupyterlab-myst renders the chapters' MyST in Markdown cells (labels, math, equation references)."""
    extensions = {e["name"]: e for e in get(f"{lab}/lab/api/extensions")}
    myst = extensions.get("jupyterlab-myst")
    assert myst is not None, f"jupyterlab-myst is not installed; extensions: {sorted(extensions)}"
    assert myst["enabled"] and myst["installed"]


@pytest.mark.timeout(300)
def test_chapter_markdown_renders_as_myst(lab, tmp_path):
    """Opened in JupyterLab, Chapter 0's Markdown cells show MyST rendered, not its markup."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,4000",
               "--virtual-time-budget=40000", "--dump-dom", f"{lab}/lab/tree/part0/distillation.md?token={TOKEN}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    soup = BeautifulSoup(result.stdout, "html.parser")
    rendered = soup.select(".jp-MarkdownCell .myst")
    assert len(rendered) >= 5, f"{len(rendered)} Markdown cells rendered by jupyterlab-myst"
    text = " ".join(" ".join(cell.get_text(" ").split()) for cell in rendered)
    assert "Distillation in one notebook" in text
    for raw in ("(chapter-distillation)=", "{cite}", "{eq}", "{glue:text}", "{doc}", "$$"):
        assert raw not in text, f"MyST markup shown raw in JupyterLab: {raw}"
    assert soup.select(".jp-MarkdownCell .myst .katex"), "no equation typeset"
