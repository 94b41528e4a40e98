"""Shared set-up for the notebook and site tests.

The environment is fixed here, at import time, before any kernel starts (kernels inherit it):

- ``KDNB_RUNS`` points to a fresh temporary folder, so the smoke runs really train and never reuse (or fill)
  the user's ``runs/``;
- ``KDNB_PROGRESS=off``: no progress bars in the executed notebooks;
- ``MPLBACKEND`` is removed: with a non-inline backend (``agg``) the kernels would emit no figures;
- ``OMP_NUM_THREADS`` is left as it is.

The executed notebooks and the site go to ``_build/test/`` instead of ``_build/executed/`` and ``_build/site/``
(the module paths of :mod:`kdnb.notebooks` are redirected for the session), so ``make test`` never replaces
the book-profile pages that ``make book`` built with smoke-profile ones. ``_build/test/`` is kept after the
session for inspection.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import pytest

_RUNS = Path(tempfile.mkdtemp(prefix="kdnb-test-runs-"))
os.environ["KDNB_RUNS"] = str(_RUNS)
os.environ["KDNB_PROGRESS"] = "off"
os.environ.pop("MPLBACKEND", None)

from kdnb import book_layout, notebooks  # noqa: E402  (after the environment is set)

TEST_BUILD = book_layout.ROOT / "_build" / "test"
SMOKE_CELL_TIMEOUT = 900  # seconds per cell; a smoke chapter takes about a minute in all


# Whichever test first asks for ``smoke_book`` pays for executing every chapter in its set-up, and pytest-timeout
# counts set-up against that test. So every such test gets the whole book's allowance (a minute or two per chapter
# on a quiet 2-core machine; ten minutes each leaves room for a loaded one), not the default 900 s of one test.
SMOKE_BOOK_TIMEOUT = 600 + 600 * len(book_layout.chapters())


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "smoke_book" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(SMOKE_BOOK_TIMEOUT), append=False)


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_RUNS, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def test_build_dirs():
    """Executed notebooks and the site of this session live under ``_build/test/``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(book_layout, "EXECUTED", TEST_BUILD / "executed")
        mp.setattr(book_layout, "SITE_SOURCE", TEST_BUILD / "site-src")
        mp.setattr(book_layout, "SITE", TEST_BUILD / "site")
        yield TEST_BUILD


@pytest.fixture(scope="session")
def smoke_book(test_build_dirs) -> dict[Path, notebooks.Outcome]:
    """Every chapter of ``_toc.yml`` executed once at profile ``smoke`` (widgets on): {chapter: Outcome}.

    Shared by the notebook and the site tests, so each chapter runs once per session.
    """
    executed = book_layout.EXECUTED
    if executed.exists():
        shutil.rmtree(executed)  # a notebook left by an earlier session must not stand in for this one
    outcomes = {}
    window_began = time.time()
    for chapter in book_layout.chapters():
        began = time.perf_counter()
        try:
            outcomes[chapter] = notebooks.execute(chapter, "smoke", {"SHOW_WIDGETS": True},
                                                  timeout=SMOKE_CELL_TIMEOUT)
        except Exception as error:  # execute() should report, not raise (test_notebooks checks that)
            outcomes[chapter] = notebooks.Outcome(chapter, time.perf_counter() - began,
                                                  f"execute() raised {type(error).__name__}: {error}\n"
                                                  + traceback.format_exc())
        print(f"smoke run {chapter.relative_to(book_layout.ROOT)}: {outcomes[chapter].seconds:.0f} s"
              + ("" if outcomes[chapter].error is None else " FAILED"))
    # The runs the chapters asked for, read now, before another test can take a lock: `train_or_load` opens a
    # run's lock `.<key>.lock` for writing (a new file time) whether it trains the run or loads it, and the lock of
    # every run it stands on. File times are coarser than time.time(): a tenth of a second of margin.
    _SMOKE_BOOK_RUNS.update(p.name[1:-len(".lock")] for p in _RUNS.glob(".*.lock")
                            if p.stat().st_mtime >= window_began - 0.1)
    return outcomes


_SMOKE_BOOK_RUNS: set[str] = set()


@pytest.fixture(scope="session")
def smoke_book_runs(smoke_book) -> frozenset[str]:
    """The keys of the runs the chapters asked the run cache for while ``smoke_book`` executed them (trained or
    loaded; runs other tests trained are not among them): tests/test_plan.py compares them with the plan."""
    return frozenset(_SMOKE_BOOK_RUNS)


def chromium() -> str:
    """Debian's chromium for the browser tests: skipped where it is missing, a failure where CI requires it."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("KDNB_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not installed, and KDNB_REQUIRE_BROWSER=1: apt-get install chromium")
        pytest.skip("chromium not installed: apt-get install chromium")
    return found


@pytest.fixture(scope="session")
def smoke_site(smoke_book) -> Path:
    """The site built once per session from the smoke runs (shared by the site and claims tests): the HTML root."""
    failed = {c: o for c, o in smoke_book.items() if o.error is not None}
    if failed:
        pytest.fail("cannot build the site, smoke runs failed (see test_notebooks):\n"
                    + "\n".join(f"{c.relative_to(book_layout.ROOT)}: {o.error.splitlines()[0]}"
                                for c, o in failed.items()), pytrace=False)
    assert notebooks.site(profile="smoke", execute_missing=False) == 0, "jupyter-book build failed"
    return book_layout.SITE / "_build" / "html"


@pytest.fixture
def count_trainers(monkeypatch):
    """Counts Trainer constructions inside kdnb.runs (one per trained run): ``[desc, ...]``."""
    from kdnb import runs
    from kdnb.train import Trainer

    made = []

    class Counting(Trainer):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("desc"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runs, "Trainer", Counting)
    return made


@pytest.fixture
def one_thread(monkeypatch):
    """Bit-equality between runs needs a fixed thread count (it changes float reduction order); no bars."""
    import torch

    monkeypatch.setenv("KDNB_PROGRESS", "off")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_resume_equals_uninterrupted(make_trainer, tmp_path: Path, stop_after: int = 2):
    """Train once uninterrupted (``make_trainer(tmp_path / "a")``), and once killed after epoch ``stop_after`` and
    resumed by a fresh trainer on the same folder: the two methods' state dicts (buffers included) are equal to
    the bit. ``make_trainer(run_dir, **kwargs)`` builds a fresh method and Trainer. Returns the reference trainer."""
    import torch

    reference = make_trainer(tmp_path / "a")
    reference.fit()

    def stop(metrics):
        if metrics["epoch"] == stop_after:
            raise KeyboardInterrupt  # the process dies here

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "b", on_epoch_end=stop).fit()
    resumed = make_trainer(tmp_path / "b")
    resumed.fit()
    for k, v in reference.method.state_dict().items():
        assert torch.equal(v, resumed.method.state_dict()[k]), k
    return reference
