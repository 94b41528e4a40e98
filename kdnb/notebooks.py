"""Headless execution of the chapters (papermill) and the static site (Jupyter Book) built from them."""
from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from . import book_layout as layout
from .book_pages import record_run, stage

def kernel_environment() -> None:
    """Make papermill start this interpreter's kernel: a stale user-level ``python3`` kernelspec would win
    otherwise (``JUPYTER_PATH`` is searched before the user's folder)."""
    share = Path(sys.prefix) / "share" / "jupyter"
    if (share / "kernels" / "python3").exists():
        paths = [str(share)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
        os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))


def _plain_text(text: str) -> str:
    """Tracebacks without ANSI colour codes, for logs."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@dataclass
class Outcome:
    chapter: Path
    seconds: float
    error: str | None = None


class _ProgressRelay:
    """Copies what the kernel appends to its progress file (``KDNB_PROGRESS_FILE``) to ``sink`` as it arrives.

    The kernel's own stderr cannot carry progress: ipykernel forwards file descriptor 2 into the notebook too.
    """

    def __init__(self, sink: Callable[[str], None], interval: float = 0.25):
        handle, name = tempfile.mkstemp(prefix="kdnb-progress-", suffix=".txt")
        os.close(handle)
        self.path = Path(name)
        self.sink = sink
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="kdnb-progress-relay", daemon=True)

    def __enter__(self) -> "_ProgressRelay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # tqdm's blocks are multi-byte
        with open(self.path, "rb") as source:
            while True:
                last = self._stop.is_set()  # read once more after the kernel is gone
                text = decoder.decode(source.read(), final=last)
                if text:
                    self.sink(text)
                if last:
                    return
                self._stop.wait(self.interval)


def _to_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _kernel_progress_mode() -> str:
    """``KDNB_PROGRESS`` for the kernel: ``auto`` becomes a bar when our stderr is a terminal, else one line
    per epoch; ``bar``, ``log`` and ``off`` pass through (the kernel rejects an unknown value)."""
    from .progress import MODE_VARIABLE

    mode = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if mode == "auto":
        mode = "bar" if sys.stderr is not None and sys.stderr.isatty() else "log"
    return mode


def kernel_config():
    """Configuration of the kernels papermill starts: CurveZMQ keys for the kernel's sockets, provisioned by
    the kernel manager when the kernelspec declares support (ipykernel 7 does). Without them ipykernel logs
    "Kernel is running over TCP without encryption" on every start."""
    import zmq
    from traitlets.config import Config

    config = Config()
    if zmq.has("curve"):  # the policy is refused by jupyter_client where libzmq lacks CurveZMQ
        config.KernelManager.transport_encryption = "auto"
    return config


def execute(chapter: Path, profile: str | None, parameters: dict | None = None,
            timeout: int = 3600, progress: Callable[[str], None] | None = None) -> Outcome:
    """Run one chapter with papermill into ``_build/executed/``; errors come back as text, not raised.

    Training progress from the kernel (see :mod:`kdnb.progress`) goes to ``progress`` as it arrives (default:
    this process's stderr), never into the executed notebook.
    """
    import jupytext
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from .progress import FILE_VARIABLE, MODE_VARIABLE

    kernel_environment()
    out = layout.executed_path(chapter)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    if profile is not None:
        params["PROFILE"] = profile
    saved = {name: os.environ.get(name) for name in (MODE_VARIABLE, FILE_VARIABLE)}
    began = time.perf_counter()
    with _ProgressRelay(progress or _to_stderr) as relay:
        os.environ[MODE_VARIABLE] = _kernel_progress_mode()  # kernels inherit the environment at start
        os.environ[FILE_VARIABLE] = str(relay.path)
        try:
            pm.execute_notebook(jupytext.read(chapter), str(out), parameters=params, kernel_name="python3",
                                cwd=str(chapter.parent), progress_bar=False, execution_timeout=timeout,
                                start_timeout=120, config=kernel_config())
            return Outcome(chapter, time.perf_counter() - began)
        except pm.PapermillExecutionError as error:
            head = "\n".join("    " + line for line in error.source.splitlines()[:12])
            text = (f"cell In[{error.exec_count}] (notebook cell {error.cell_index}) raised {error.ename}: "
                    f"{error.evalue}\n  source:\n{head}\n  traceback:\n" + "\n".join(error.traceback)
                    + f"\n  executed notebook: {out}")
            return Outcome(chapter, time.perf_counter() - began, _plain_text(text))
        except (CellTimeoutError, DeadKernelError) as error:  # papermill wraps only cell errors
            return Outcome(chapter, time.perf_counter() - began,
                           f"{type(error).__name__}: {_plain_text(str(error))}\n  executed notebook (partial): {out}")
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

            record_run(chapter, out, time.perf_counter() - began)


class _ChapterProgress:
    """The runner's sink for one chapter: training progress on stderr, below the ``[i/n] chapter ...`` line."""

    def __init__(self) -> None:
        self.started = False
        self.at_line_start = True

    def __call__(self, text: str) -> None:
        if not self.started:
            print(flush=True)  # end the '[i/n] chapter ...' line first
            self.started = True
        _to_stderr(text)
        self.at_line_start = text.endswith("\n")

    def close(self) -> None:
        if self.started and not self.at_line_start:  # a bar cut short by an error
            _to_stderr("\n")


def _shown(path: Path) -> str:
    return str(path.relative_to(layout.ROOT)) if path.is_relative_to(layout.ROOT) else str(path)


def run(names: list[str], profile: str | None) -> int:
    """``python -m kdnb run``: execute chapters, one line each, with the training progress of the running
    chapter below it (``KDNB_PROGRESS``); non-zero exit on any failure."""
    from . import profiles

    chosen = layout.resolve(names)
    profile_name = profiles.get(profile).name
    print(f"kdnb run: {len(chosen)} chapter(s) at profile {profile_name!r} -> {_shown(layout.EXECUTED)}/", flush=True)
    failures = 0
    for i, chapter in enumerate(chosen, 1):
        head = f"[{i}/{len(chosen)}] {_shown(chapter)} ..."
        print(head, end="", flush=True)
        shown = _ChapterProgress()
        outcome = execute(chapter, profile_name, progress=shown)
        shown.close()
        if shown.started:  # progress lines came between: repeat the chapter on the result line
            print(head, end="")
        if outcome.error is None:
            print(f" ok ({outcome.seconds:.0f} s)", flush=True)
        else:
            failures += 1
            print(f" FAILED ({outcome.seconds:.0f} s)\n{outcome.error}", flush=True)
    return 1 if failures else 0


# JavaScript and fonts the site serves itself (vendored from npm by `make vendor`, licences beside them), so that
# pages need no network: MathJax 3 for equations, @jupyter-widgets/html-manager for explorers.
VENDOR = layout.BOOK / "_vendor"
SITE_VENDOR = "vendor"  # their folder in the built site
MATHJAX_JS = "tex-chtml-full.js"   # in _vendor/mathjax/
WIDGETS_JS = "embed.js"            # in _vendor/html-manager/
WIDGETS_MATHJAX_SHIM = "widgets-mathjax3.js"  # ours, in _vendor/kdnb/


def _serve_vendored(config: dict, name: str) -> str:
    """Copy ``book/_vendor/<name>`` into the site (through ``html_extra_path``) and return the path of the
    copy relative to ``_static/``, the folder Sphinx resolves script paths against."""
    source = VENDOR / name
    if not source.is_dir():
        raise SystemExit(f"cannot build the site: {source.relative_to(layout.ROOT)} is missing (run `make vendor`)")
    # html_extra_path, not html_static_path: Jupyter Book adds every .js under a static path to every page
    # when the source has a _static/ folder.
    extra = layout.SITE_SOURCE / "_extra"
    shutil.copytree(source, extra / SITE_VENDOR / name)
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["html_extra_path"] = ["_extra"]
    return f"../{SITE_VENDOR}/{name}"


def _bundle_mathjax(config: dict) -> None:
    """Serve MathJax 3 (the TeX-to-CHTML component with every TeX extension built in, and its woff fonts) from
    the site itself, so equations typeset without a network, over http and from ``file://``; Sphinx would
    otherwise load it from a CDN. MyST's MathJax 3 settings apply as they are."""
    folder = _serve_vendored(config, "mathjax")
    config["sphinx"]["config"]["mathjax_path"] = f"{folder}/{MATHJAX_JS}"


def _bundle_widgets_js(config: dict) -> None:
    """Serve the widget manager for static pages (``embed.js`` of ``@jupyter-widgets/html-manager``, with the
    fonts it loads relative to itself) from the site itself; myst-nb adds it to the pages that hold widget
    state only. Its default loads require.js and the manager from CDNs: offline, explorers stay blank.
    Before it, a shim of ours (``_vendor/kdnb/``) gives MathJax 3 the MathJax 2 call the controls make."""
    folder = _serve_vendored(config, "html-manager")
    shims = _serve_vendored(config, "kdnb")
    config["sphinx"]["config"]["nb_ipywidgets_js"] = {f"{shims}/{WIDGETS_MATHJAX_SHIM}": {"defer": "defer"},
                                                      f"{folder}/{WIDGETS_JS}": {}}


def _stage_site_source() -> Path:
    """A copy of the book whose notebook pages are the executed ``.ipynb`` files (Jupyter Book then renders
    them without executing anything)."""
    import nbformat

    if layout.SITE_SOURCE.exists():
        shutil.rmtree(layout.SITE_SOURCE)
    layout.SITE_SOURCE.mkdir(parents=True)
    config = yaml.safe_load((layout.ROOT / "_config.yml").read_text())
    config["execute"] = dict(config.get("execute", {}), execute_notebooks="off")
    config["exclude_patterns"] = [p for p in config.get("exclude_patterns", []) if "ipynb" not in p
                                  or "checkpoints" in p]
    _bundle_mathjax(config)
    _bundle_widgets_js(config)
    (layout.SITE_SOURCE / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(layout.ROOT / "_toc.yml", layout.SITE_SOURCE / "_toc.yml")
    # literalinclude paths in pages are relative to the repository layout.
    (layout.SITE_SOURCE / "kdnb").symlink_to(layout.ROOT / "kdnb", target_is_directory=True)
    shutil.copytree(layout.BOOK, layout.SITE_SOURCE / "book",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", VENDOR.name))
    problems = []
    for chapter in layout.chapters():
        executed = layout.executed_path(chapter)
        staged = layout.SITE_SOURCE / chapter.relative_to(layout.ROOT)
        if not executed.exists():
            problems.append(f"{chapter.relative_to(layout.ROOT)}: not executed yet (run `python -m kdnb run` first)")
            continue
        notebook = nbformat.read(executed, as_version=4)
        errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            problems.append(f"{chapter.relative_to(layout.ROOT)}: {errors[0]['ename']}: {errors[0]['evalue']}")
        staged.unlink()
        shutil.copy(executed, staged.with_suffix(".ipynb"))
    if problems:
        raise SystemExit("cannot build the site:\n  " + "\n  ".join(problems))
    stage(layout.SITE_SOURCE)
    return layout.SITE_SOURCE


def site(profile: str | None = None, execute_missing: bool = True) -> int:
    """``python -m kdnb site``: build the HTML book from the executed chapters (running any that are
    missing first); fails on any notebook error or build error."""
    if execute_missing:
        missing = [c for c in layout.chapters() if not layout.executed_path(c).exists()]
        if missing and run([str(c) for c in missing], profile):
            return 1
    source = _stage_site_source()
    if layout.SITE.exists():
        shutil.rmtree(layout.SITE)
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source),
               "--path-output", str(layout.SITE)]
    print("kdnb site:", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=layout.ROOT)
    if result.returncode == 0:
        print(f"kdnb site: open {layout.SITE / '_build' / 'html' / 'index.html'}")
    return result.returncode
