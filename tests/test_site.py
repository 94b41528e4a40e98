"""The static site: built from the smoke-run chapters with Jupyter Book, then loaded in headless Chromium.

Chromium is Debian's ``chromium`` (``make browser`` installs it where it can). Without it the browser tests
are skipped, unless ``KDNB_REQUIRE_BROWSER=1`` (CI), where they fail.

The offline tests drive Chromium over the DevTools protocol (:class:`DevTools`, on ``websocket-client``) with
every non-local request blocked and recorded: the site must typeset its equations and run its explorers with
what it serves itself, over http and from ``file://``.
"""
from __future__ import annotations

import base64
import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup
from conftest import chromium

from kdnb import book_layout, notebooks

pytestmark = pytest.mark.site

ROOT = book_layout.ROOT
CHAPTERS = book_layout.chapters()
SITE_TIMEOUT = 900 + 600 * len(CHAPTERS)  # includes the smoke runs when this module runs alone
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCREENSHOT_COPY = ROOT / "_build" / "site-screenshot.png"
BROWSER_TIMEOUT = 60


def html_root() -> Path:
    return book_layout.SITE / "_build" / "html"


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
def built_site(smoke_site) -> Path:
    assert smoke_site == html_root()
    return smoke_site


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
    # Sphinx's smart quotes turn a title's ' into ’.
    assert title.replace("'", "’") in soup.get_text(" ").replace("'", "’"), \
        f"{path}: page title {title!r} not in the rendered page"

    text = soup.get_text(" ")
    assert "Traceback (most recent call last)" not in text, f"{path}: a traceback is shown"
    tracebacks = soup.find_all(class_=lambda c: c is not None and "traceback" in c.lower())
    assert not tracebacks, f"{path}: traceback element: {tracebacks[0].get_text()[:500]}"
    for stderr in soup.select(".stderr"):
        shown = stderr.get_text(" ")
        assert "Error" not in shown and "Traceback" not in shown, f"{path}: stderr output shows:\n{shown[:500]}"

    if chapter is None:
        return
    # Equations must render offline: every math span typeset by the MathJax 3 copy served with the site.
    maths = soup.select("span.math.notranslate, div.math.notranslate")
    assert maths, f"{path}: no equations found (the chapter has some)"
    raw = [m.get_text()[:60] for m in maths if not m.select("mjx-container[jax=CHTML]")]
    assert not raw, f"{path}: {len(raw)} of {len(maths)} equations not typeset, e.g. {raw[:3]}"
    broken = [m.get_text()[:60] for m in maths if m.select("mjx-merror")]
    assert not broken, f"{path}: MathJax could not typeset {broken[:3]}"
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
    # Every figure the executed chapter holds is on the page (and every chapter has at least one).
    executed = nbformat.read(book_layout.executed_path(chapter), as_version=4)
    figures = sum("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
    assert len(pngs) >= max(figures, 1), f"{path}: {len(pngs)} PNG figures rendered; the notebook has {figures}"


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


# ------------------------------------------------------------------------------------------------- offline

# jupyter-book 1.0.4 puts sphinx-thebe's snippet into <head> twice, on every page: the second `const` throws.
ALLOWED_PAGE_EXCEPTION = "Identifier 'THEBE_JS_URL' has already been declared"
# Requests a page makes to show itself: each must succeed (status 200, http or file://).
LOADED_TYPES = {"Document", "Script", "Stylesheet", "Font", "Image", "XHR", "Fetch"}
SCHEMES = ("http", "file")


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("data", "blob", "file", "about", "chrome-error"):
        return True
    return parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname in ("127.0.0.1", "localhost", "::1")


class DevTools:
    """Headless Chromium driven over the DevTools protocol: one page, every non-local request failed and
    recorded (``non_local``), every request's outcome (``requests``) and page exception (``exceptions``) kept.
    A closed proxy port catches anything the interception would miss (loopback always bypasses proxies)."""

    def __init__(self, profile_dir: Path, timeout: float = BROWSER_TIMEOUT):
        import websocket  # websocket-client

        self._websocket = websocket
        self._profile_dir = profile_dir
        self.timeout = timeout
        self.requests: dict[str, dict] = {}
        self.non_local: list[str] = []
        self.exceptions: list[str] = []
        self._next_id = 0
        self.process = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile_dir}", "--remote-debugging-port=0", "--proxy-server=http://127.0.0.1:9",
             "--window-size=1280,1600", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile_dir) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
                if self.process.poll() is not None:
                    pytest.fail(f"chromium exited {self.process.returncode} before opening its DevTools port")
                if time.monotonic() > deadline:
                    pytest.fail(f"chromium opened no DevTools port within {timeout} s")
                time.sleep(0.1)
            port, browser_path = port_file.read_text().split()[:2]
            self.socket = websocket.create_connection(f"ws://127.0.0.1:{port}{browser_path}", timeout=timeout,
                                                      suppress_origin=True)
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                self.call(f"{domain}.enable", self.session)
            self.call("Fetch.enable", self.session, patterns=[{"urlPattern": "*"}])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _send(self, method: str, session: str | None = None, **params) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        return self._next_id

    def call(self, method: str, session: str | None = None, **params) -> dict:
        wanted = self._send(method, session, **params)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message is not None and message.get("id") == wanted:
                if "error" in message:
                    raise AssertionError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})
            if time.monotonic() > deadline:
                pytest.fail(f"chromium did not answer {method} within {self.timeout} s")

    def _receive(self, deadline: float) -> dict | None:
        self.socket.settimeout(max(0.01, min(deadline - time.monotonic(), 0.5)))
        try:
            message = json.loads(self.socket.recv())
        except self._websocket.WebSocketTimeoutException:
            return None
        if "method" in message:
            self._event(message["method"], message.get("params", {}), message.get("sessionId"))
        return message

    def _event(self, method: str, params: dict, session: str | None) -> None:
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if is_local(url):
                self._send("Fetch.continueRequest", session, requestId=params["requestId"])
            else:
                self.non_local.append(url)
                self._send("Fetch.failRequest", session, requestId=params["requestId"], errorReason="BlockedByClient")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self.requests[params["requestId"]] = {"url": url, "type": params.get("type"), "status": None, "error": None}
            if not is_local(url) and url not in self.non_local:
                self.non_local.append(url)
        elif method == "Network.responseReceived":
            request = self.requests.setdefault(params["requestId"], {"url": params["response"]["url"], "error": None})
            request.update(status=params["response"]["status"], type=params.get("type"))
        elif method == "Network.loadingFailed":
            request = self.requests.setdefault(params["requestId"], {"url": "?", "status": None})
            request.update(error=params["errorText"], type=params.get("type"))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.exceptions.append(details.get("exception", {}).get("description") or details.get("text", "?"))

    def evaluate(self, expression: str, awaited: bool = False):
        result = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True,
                           awaitPromise=awaited)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(f"{expression[:200]}\nthrew {details.get('exception', {}).get('description')}")
        return result["result"].get("value")

    def pause(self, seconds: float) -> None:
        """Wait, handling events (paused requests must be answered)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._receive(end)

    def wait_for(self, expression: str, what: str, timeout: float = 30, awaited: bool = False):
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression, awaited)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}; non-local requests (blocked): "
                            f"{self.non_local[:5]}; page exceptions: {[e[:300] for e in self.exceptions]}")
            self.pause(0.2)

    def open(self, url: str) -> None:
        try:
            self._navigate(url)
        except self._websocket.WebSocketConnectionClosedException:
            # Headless Chromium occasionally dies on a busy 2-core machine (seen once in ~40 page loads in CI, the
            # same page loading fine in the run before). The page is opened first in every test, so a fresh browser
            # loses nothing the test checks; a second loss is a failure.
            warnings.warn(f"Chromium closed its DevTools connection while loading {url}; retrying once in a "
                          "fresh browser")
            self.close()
            self.__init__(self._profile_dir.with_name(self._profile_dir.name + "-retry"), self.timeout)
            self._navigate(url)

    def _navigate(self, url: str) -> None:
        self.call("Page.navigate", self.session, url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", f"{url} to load")

    def press(self, key: str, keycode: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", self.session, type=kind, key=key, code=key,
                      windowsVirtualKeyCode=keycode, nativeVirtualKeyCode=keycode)

    def settle(self, timeout: float = 15) -> None:
        """Wait until no request of the page is still in flight."""
        deadline = time.monotonic() + timeout
        while [r for r in self.requests.values() if r.get("type") in LOADED_TYPES
               and r.get("status") is None and r.get("error") is None] and time.monotonic() < deadline:
            self.pause(0.2)

    def assert_clean(self, url: str) -> None:
        """No non-local request, every page request succeeded, no page exception but jupyter-book's own."""
        self.settle()
        assert not self.non_local, f"{url} made non-local requests (blocked): {self.non_local[:5]}"
        failed = [f"{r['url']} -> {r.get('error') or r.get('status')}" for r in self.requests.values()
                  if r.get("type") in LOADED_TYPES and (r.get("error") is not None or r.get("status") != 200)]
        assert not failed, f"{url}: {len(failed)} requests failed:\n" + "\n".join(failed[:10])
        thrown = [e for e in self.exceptions if ALLOWED_PAGE_EXCEPTION not in e]
        assert not thrown, f"{url}: page exceptions:\n" + "\n\n".join(e[:1500] for e in thrown)


@pytest.fixture
def devtools(tmp_path):
    chromium()
    browser = DevTools(tmp_path / "chromium")
    try:
        yield browser
    finally:
        browser.close()


def chapter_url(scheme: str, chapter: Path, server: str, built_site: Path) -> str:
    path = chapter.relative_to(ROOT).with_suffix(".html").as_posix()
    return urljoin(server, path) if scheme == "http" else (built_site / path).as_uri()


# MathJax 3 has typeset the page and every font it asked for has arrived.
MATHJAX_DONE = ("window.MathJax && MathJax.startup && MathJax.startup.promise ? "
                "MathJax.startup.promise.then(() => document.fonts.ready).then(() => true) : false")
MATH_REPORT = """(() => {
  const maths = [...document.querySelectorAll('span.math.notranslate, div.math.notranslate')];
  // Inline identifiers that TeX sets in math italic: a single letter with no \\mathrm & co. Each mjx-mi of the
  // CHTML output is paired with the <mi> of the same position in MathJax's assistive MathML.
  const inline = [];
  for (const box of document.querySelectorAll('span.math.notranslate mjx-container[jax=CHTML]')) {
    const shown = [...box.querySelectorAll('mjx-math mjx-mi')];
    const source = [...box.querySelectorAll('mjx-assistive-mml mi')];
    if (shown.length !== source.length) return {mismatch: box.textContent.slice(0, 60)};
    shown.forEach((mi, i) => {
      if (/^[A-Za-z]$/.test(source[i].textContent) && !source[i].hasAttribute('mathvariant'))
        inline.push(...mi.querySelectorAll('mjx-c'));
    });
  }
  const italic = inline.filter(c => getComputedStyle(c).fontFamily.includes('MJXTEX-I'));
  return {
    maths: maths.length,
    typeset: maths.filter(m => m.querySelector('mjx-container[jax=CHTML]')).length,
    errors: maths.filter(m => m.querySelector('mjx-merror')).map(m => m.textContent.slice(0, 60)),
    inlineVariables: inline.length,
    inlineFonts: [...new Set(inline.map(c => getComputedStyle(c).fontFamily))],
    italic: italic.length,
    fonts: [...document.fonts].filter(f => f.family.startsWith('MJX')).map(f => [f.family, f.status]),
  };
})()"""


@pytest.mark.timeout(SITE_TIMEOUT)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.relative_to(ROOT).as_posix() for c in CHAPTERS])
def test_equations_typeset_offline(chapter: Path, scheme: str, server: str, built_site: Path, devtools: DevTools):
    """With the network blocked, over http and from file://, the chapter's equations are typeset by the site's
    own MathJax 3 with its own fonts: no request fails, inline variables are in the math italic font."""
    url = chapter_url(scheme, chapter, server, built_site)
    devtools.open(url)
    devtools.wait_for(MATHJAX_DONE, "MathJax to typeset the page and load its fonts", awaited=True)
    report = devtools.evaluate(MATH_REPORT)
    assert "mismatch" not in report, f"{url}: CHTML and MathML of {report.get('mismatch')!r} differ"
    assert report["maths"] > 0, f"{url}: no equations found (the chapter has some)"
    assert report["typeset"] == report["maths"], f"{url}: {report['typeset']} of {report['maths']} equations typeset"
    assert not report["errors"], f"{url}: MathJax could not typeset {report['errors'][:3]}"
    # e.g. the z and T of "The teacher's logits $z$ ... temperature $T$": MathJax's TeX math italic, not a
    # fallback font (which leaves them upright and raised off the line).
    assert report["inlineVariables"] > 0, f"{url}: no inline variable found"
    assert report["italic"] == report["inlineVariables"], \
        f"{url}: inline variables in fonts {report['inlineFonts']}, not MathJax's math italic (MJXTEX-I)"
    fonts = dict(report["fonts"])
    assert fonts.get("MJXTEX-I") == "loaded", f"{url}: MathJax's math italic font did not load: {fonts}"
    assert "error" not in fonts.values(), f"{url}: MathJax fonts failed to load: {fonts}"
    served = [r["url"] for r in devtools.requests.values() if r.get("type") == "Font" and "/vendor/mathjax/" in r["url"]]
    assert served, f"{url}: no MathJax font was requested from the site"
    devtools.assert_clean(url)


def stored_frames(chapter: Path) -> set[bytes]:
    """Every image held in the widget state of the executed chapter (the explorers' precomputed frames)."""
    notebook = nbformat.read(book_layout.executed_path(chapter), as_version=4)
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return {base64.b64decode(buffer["data"]) for model in state.get("state", {}).values()
            if model.get("model_name") == "ImageModel" for buffer in model.get("buffers", [])
            if buffer.get("path") == ["value"]}


def explorer_count(chapter: Path) -> int:
    notebook = nbformat.read(book_layout.executed_path(chapter), as_version=4)
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return sum("kdnb-explorer" in model.get("state", {}).get("_dom_classes", [])
               for model in state.get("state", {}).values())


# The frame an explorer shows (the only <img> of it that is loaded and has a size: a Stack shows its selected
# child alone), as a data: URL read from the blob the widget made of the PNG; else how many such images there are.
SHOWN_FRAME = """(async (n) => {
  const box = document.querySelectorAll('.kdnb-explorer')[n];
  const shown = [...box.querySelectorAll('img')].filter(i => i.complete && i.getBoundingClientRect().width > 0);
  if (shown.length !== 1) return 'visible images: ' + shown.length;
  const blob = await (await fetch(shown[0].src)).blob();
  return await new Promise(done => { const r = new FileReader(); r.onload = () => done(r.result); r.readAsDataURL(blob); });
})(%d)"""
CONTROL_KINDS = """[...document.querySelectorAll('.kdnb-explorer')[%d].children[0].children].map(c =>
  c.querySelector('.noUi-handle') ? 'slider' : c.querySelector('select') ? 'dropdown' :
  c.querySelector('button') ? 'buttons' : 'other')"""


def shown_frame(devtools: DevTools, explorer: int, other_than: bytes | None = None, timeout: float = 15) -> bytes:
    """The PNG an explorer shows, once it shows exactly one (and, if given, one other than ``other_than``)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = devtools.evaluate(SHOWN_FRAME % explorer, awaited=True)
        if shown.startswith("data:image/png;base64,"):
            png = base64.b64decode(shown.split(",", 1)[1])
            if png != other_than:
                return png
            shown = "the same frame as before"
        if time.monotonic() > deadline:
            pytest.fail(f"explorer {explorer}: after {timeout} s, {shown[:80]}")
        devtools.pause(0.2)


def change_control(devtools: DevTools, explorer: int, control: int, kind: str) -> None:
    """Move one control by one step from the keyboard: ArrowRight on a slider's handle, ArrowDown on a
    dropdown; a click on the next button of a button row."""
    element = f"document.querySelectorAll('.kdnb-explorer')[{explorer}].children[0].children[{control}]"
    if kind == "slider":
        devtools.evaluate(f"{element}.querySelector('.noUi-handle').focus()")
        devtools.press("ArrowRight", 39)
    elif kind == "dropdown":
        devtools.evaluate(f"{element}.querySelector('select').focus()")
        devtools.press("ArrowDown", 40)
    else:
        devtools.evaluate(f"(() => {{ const b = [...{element}.querySelectorAll('button')]; "
                          f"b[(b.findIndex(x => x.classList.contains('mod-active')) + 1) % b.length].click(); }})()")


@pytest.mark.timeout(SITE_TIMEOUT)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.relative_to(ROOT).as_posix() for c in CHAPTERS])
def test_explorers_respond_offline(chapter: Path, scheme: str, server: str, built_site: Path,
                                   devtools: DevTools):
    """With the network blocked, every explorer of the chapter renders from the widget state in the page
    (widget JS served by the site), and each of its controls, moved from the keyboard, shows another of the
    precomputed frames. Chapter 0 has one: the temperature explorer."""
    expected = explorer_count(chapter)
    if chapter.stem == "distillation":
        assert expected >= 1, "Chapter 0's temperature explorer is not in the executed notebook's widget state"
    if expected == 0:
        pytest.skip(f"{chapter.relative_to(ROOT)} has no explorer")
    frames = stored_frames(chapter)
    url = chapter_url(scheme, chapter, server, built_site)
    devtools.open(url)
    devtools.wait_for(f"document.querySelectorAll('.kdnb-explorer img').length > 0 && "
                      f"document.querySelectorAll('.kdnb-explorer').length === {expected}",
                      f"{expected} explorer(s) to render")
    for explorer in range(expected):
        kinds = devtools.evaluate(CONTROL_KINDS % explorer)
        assert kinds and "other" not in kinds, f"{url}: explorer {explorer} has controls {kinds}"
        shown = shown_frame(devtools, explorer)
        assert shown in frames, f"{url}: explorer {explorer} shows an image that is not one of its frames"
        for control, kind in enumerate(kinds):
            change_control(devtools, explorer, control, kind)
            # fails unless the explorer comes to show another frame: the control changed the shown image
            now = shown_frame(devtools, explorer, other_than=shown)
            assert now in frames, f"{url}: explorer {explorer} shows an image that is not one of its frames"
            shown = now
    devtools.assert_clean(url)


def other_pages() -> list[str]:
    """Site paths of the pages of ``_toc.yml`` that are not notebook chapters (landing page, generated pages)."""
    chapters = {c.relative_to(ROOT).with_suffix("").as_posix() for c in CHAPTERS}
    return [f"{name}.html" for name in book_layout.toc_files() if name not in chapters]


@pytest.mark.timeout(SITE_TIMEOUT)
@pytest.mark.parametrize("path", other_pages())
def test_page_offline(path: str, server: str, devtools: DevTools):
    """Every other page, with the network blocked: no non-local request, every request served, no page
    exception (the chapters are checked by the two tests above)."""
    url = urljoin(server, path)
    devtools.open(url)
    devtools.pause(0.5)
    if devtools.evaluate("!!(window.MathJax && MathJax.startup)"):
        devtools.wait_for(MATHJAX_DONE, "MathJax to typeset the page", awaited=True)
    devtools.assert_clean(url)
