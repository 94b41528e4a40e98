"""The static site: built from the smoke-run chapters with Jupyter Book, then loaded in headless Chromium.

Chromium is Debian's ``chromium`` (``make browser`` installs it where it can). Without it the browser tests
are skipped, unless ``KDNB_REQUIRE_BROWSER=1`` (CI), where they fail.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml
from bs4 import BeautifulSoup

from kdnb import notebooks

pytestmark = pytest.mark.site

ROOT = notebooks.ROOT
CHAPTERS = notebooks.chapters()
SITE_TIMEOUT = 900 + 600 * len(CHAPTERS)  # includes the smoke runs when this module runs alone
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCREENSHOT_COPY = ROOT / "_build" / "site-screenshot.png"
BROWSER_TIMEOUT = 60


def html_root() -> Path:
    return notebooks.SITE / "_build" / "html"


def page_html(chapter: Path) -> Path:
    return html_root() / chapter.relative_to(ROOT).with_suffix(".html")


def page_title(page: Path) -> str:
    """The first ``# `` heading of a MyST page (outside code fences)."""
    fence = None
    for line in page.read_text(encoding="utf-8").splitlines():
        opening = re.match(r"^(`{3,}|:{3,})", line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None and line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{page} has no top-level heading")


@pytest.fixture(scope="module")
def built_site(smoke_book) -> Path:
    failed = {c: o for c, o in smoke_book.items() if o.error is not None}
    if failed:
        pytest.fail("cannot build the site, smoke runs failed (see test_notebooks):\n"
                    + "\n".join(f"{c.relative_to(ROOT)}: {o.error.splitlines()[0]}" for c, o in failed.items()),
                    pytrace=False)
    assert notebooks.site(profile="smoke", execute_missing=False) == 0, "jupyter-book build failed"
    return html_root()


def root_page() -> str:
    """The site path of the book's root page (``root`` in ``_toc.yml``)."""
    return yaml.safe_load((ROOT / "_toc.yml").read_text())["root"] + ".html"


@pytest.mark.timeout(SITE_TIMEOUT)
def test_site_builds_and_links_chapters(built_site: Path):
    # sphinx-external-toc writes index.html as a redirect to the root page.
    index = (built_site / "index.html").read_text(encoding="utf-8")
    root = root_page()
    if root != "index.html":
        assert re.search(rf'http-equiv="Refresh"[^>]*url={re.escape(root)}', index, re.IGNORECASE), \
            f"index.html does not lead to {root}:\n{index[:500]}"
    soup = BeautifulSoup((built_site / root).read_text(encoding="utf-8"), "html.parser")
    base = f"http://site/{root}"
    links = {urlparse(urljoin(base, a["href"])).path.lstrip("/") for a in soup.find_all("a", href=True)}
    for chapter in CHAPTERS:
        target = chapter.relative_to(ROOT).with_suffix(".html").as_posix()
        assert target in links, f"{root} does not link to {target}"
        assert page_html(chapter).is_file()


# ------------------------------------------------------------------------------------------------- browser

def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("KDNB_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not installed, and KDNB_REQUIRE_BROWSER=1: apt-get install chromium")
        pytest.skip("chromium not installed: apt-get install chromium")
    return found


@pytest.fixture(scope="module")
def server(built_site: Path):
    """``http.server`` on a free port of 127.0.0.1, serving the built HTML; shut down after the module."""
    handler = functools.partial(QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


def browse(url: str, profile_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile_dir}", *extra, url]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s: {url}")
    assert result.returncode == 0, f"chromium exited {result.returncode} on {url}:\n{result.stderr[-2000:]}"
    return result


def pages() -> list[tuple[str, Path | None]]:
    """(page path in the site, chapter) for the root page and every notebook chapter."""
    return [(root_page(), None)] + [(c.relative_to(ROOT).with_suffix(".html").as_posix(), c) for c in CHAPTERS]


@pytest.mark.timeout(SITE_TIMEOUT)
@pytest.mark.parametrize("path,chapter", pages(), ids=[p for p, _ in pages()])
def test_page_in_browser(path: str, chapter: Path | None, server: str, built_site: Path, tmp_path):
    chromium()
    url = urljoin(server, path)
    # The virtual time budget lets MathJax (served by the site itself) typeset before the DOM is dumped.
    dom = browse(url, tmp_path / "chromium", "--virtual-time-budget=10000", "--dump-dom").stdout
    assert "<body" in dom, f"chromium returned no DOM for {url}"
    soup = BeautifulSoup(dom, "html.parser")

    title = page_title(chapter if chapter is not None else ROOT / "book" / "index.md")
    assert title in soup.get_text(" "), f"{path}: page title {title!r} not in the rendered page"

    text = soup.get_text(" ")
    assert "Traceback (most recent call last)" not in text, f"{path}: a traceback is shown"
    tracebacks = soup.find_all(class_=lambda c: c is not None and "traceback" in c.lower())
    assert not tracebacks, f"{path}: traceback element: {tracebacks[0].get_text()[:500]}"
    for stderr in soup.select(".stderr"):
        shown = stderr.get_text(" ")
        assert "Error" not in shown and "Traceback" not in shown, f"{path}: stderr output shows:\n{shown[:500]}"

    if chapter is None:
        return
    # Equations must render offline: every math span typeset by the MathJax copy bundled with the site.
    maths = soup.select("span.math.notranslate, div.math.notranslate")  # MathJax 2 adds span.math of its own
    assert maths, f"{path}: no equations found (the chapter has some)"
    raw = [m.get_text()[:60] for m in maths if not m.select(".MathJax, .MathJax_Display, script")]
    assert not raw, f"{path}: {len(raw)} of {len(maths)} equations not typeset, e.g. {raw[:3]}"
    pngs = []
    for img in soup.find_all("img"):
        src = img.get("src", "")
        parsed = urlparse(urljoin(url, src))
        if parsed.scheme == "data" or parsed.netloc != urlparse(server).netloc:
            continue
        local = built_site / unquote(parsed.path).lstrip("/")
        assert local.is_file(), f"{path}: <img src={src!r}> has no file {local}"
        if local.read_bytes()[:8] == PNG_SIGNATURE:
            pngs.append(local)
    assert len(pngs) >= 4, f"{path}: {len(pngs)} PNG figures rendered; expected at least 4"


@pytest.mark.timeout(SITE_TIMEOUT)
def test_chapter_screenshot(server: str, tmp_path):
    chromium()
    chapter = CHAPTERS[0]
    shot = tmp_path / "page.png"
    browse(urljoin(server, chapter.relative_to(ROOT).with_suffix(".html").as_posix()), tmp_path / "chromium",
           f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    assert shot.is_file(), "chromium wrote no screenshot"
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    assert shot.stat().st_size > 20_000, f"screenshot is only {shot.stat().st_size} bytes: a blank page?"
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOT_COPY)
