"""Checks on the built book (_build/html): internal links and images, offline assets, and a real browser.

Run after the book is built (``make html-check``; ``make test`` runs it after the strict build). Without a
built book these tests are skipped, unless ``RESNET_TUTORIAL_REQUIRE_BOOK=1`` (set by the Makefile) makes that
a failure.

The browser test drives headless Chromium (Debian package ``chromium``) through the DevTools protocol, over
a WebSocket from tornado (installed with Jupyter). The book is served from 127.0.0.1, and any request that
leaves the machine fails the test: the book must render offline.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"

if not (HTML / "index.html").exists():
    if os.environ.get("RESNET_TUTORIAL_REQUIRE_BOOK"):
        raise RuntimeError(f"no built book in {HTML}: run `make book` first")
    pytest.skip("the book is not built (make book)", allow_module_level=True)


def chapter_pages() -> list[str]:
    """The chapter pages in _toc.yml order, as paths relative to _build/html."""
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    return [f"{m}.html" for m in re.findall(r"^\s*-\s*file:\s*(chapters/\S+?)(?:\.md)?\s*$", toc, re.M)]


def chapter_title(page: str) -> str:
    """The first level-1 heading of the chapter's source."""
    source = (ROOT / page).with_suffix(".md").read_text(encoding="utf-8")
    return re.search(r"^# (.+)$", source, re.M).group(1).strip()


# ---------------------------------------------------------------------------------------------- link check


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append((tag, key, attrs[key]))


@functools.cache
def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def _html_files() -> list[Path]:
    return sorted(p for p in HTML.rglob("*.html") if "_static" not in p.parts)


def test_every_chapter_in_the_toc_was_built():
    pages = chapter_pages()
    assert pages, "no chapters in _toc.yml"
    for page in pages:
        assert (HTML / page).exists(), f"{page} was not built"


def test_internal_links_and_images_resolve():
    broken = []
    for path in _html_files():
        for tag, attr, url in _parse(path).links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith(("//", "mailto:", "javascript:", "data:")):
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(HTML)}: <{tag} {attr}={url!r}> -> missing file")
            elif parts.fragment and target.suffix == ".html" and parts.fragment not in _parse(target).ids:
                broken.append(f"{path.relative_to(HTML)}: <{tag} {attr}={url!r}> -> missing anchor")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:50])


def test_pages_load_no_scripts_styles_or_images_from_the_internet():
    remote = []
    for path in _html_files():
        for tag, attr, url in _parse(path).links:
            is_remote = urlsplit(url).scheme in ("http", "https") or url.startswith("//")
            if is_remote and (tag in ("script", "img", "iframe") or (tag == "link" and attr == "href" and
                                                                      "stylesheet" in _link_rel(path, url))):
                remote.append(f"{path.relative_to(HTML)}: <{tag} {attr}={url!r}>")
    assert not remote, "pages load assets from the internet:\n" + "\n".join(remote[:50])


def _link_rel(path: Path, url: str) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"<link[^>]*href=\"" + re.escape(url) + r"\"[^>]*>", text)
    return match.group(0) if match else ""


def test_math_is_served_by_the_book():
    pages_with_math = [p for p in _html_files() if 'class="math' in p.read_text(encoding="utf-8")]
    assert pages_with_math, "no page has math"
    for path in pages_with_math:
        scripts = [url for tag, _, url in _parse(path).links if tag == "script" and "mathjax" in url.lower()]
        assert scripts, f"{path.relative_to(HTML)} has math but loads no MathJax"
        for url in scripts:
            assert not urlsplit(url).scheme, f"{path.relative_to(HTML)} loads MathJax from {url}"
            assert (path.parent / urlsplit(url).path).resolve().exists()


# ------------------------------------------------------------------------------------------- browser test


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("Chromium is not installed: apt-get install chromium (make html-check installs it as root)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Browser:
    """Headless Chromium, driven through the DevTools protocol (one page)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.process = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
             "--hide-scrollbars", "--window-size=1280,900", f"--user-data-dir={workdir / 'profile'}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = workdir / "profile" / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.process.poll() is not None:
                raise RuntimeError("Chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        self.ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.loop = asyncio.new_event_loop()
        self.ws = None
        self.next_id = 0
        self.events: list[dict] = []

    def _run(self, coro, timeout=60):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        return self._run(self._send(method, params), timeout)

    async def _send(self, method, params):
        from tornado.websocket import websocket_connect

        if self.ws is None:
            self.ws = await websocket_connect(self.ws_url, max_message_size=256 * 1024 * 1024)
        self.next_id += 1
        call_id = self.next_id
        await self.ws.write_message(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = await self.ws.read_message()
            if message is None:
                raise RuntimeError("Chromium closed the DevTools connection")
            data = json.loads(message)
            if data.get("id") == call_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data["result"]
            if "method" in data:
                self.events.append(data)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.2)
        return False

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        if self.ws is not None:
            self.ws.close()
        self.loop.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def site():
    """The built book served on 127.0.0.1 (a static server, like GitHub Pages)."""
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    workdir = Path(tempfile.mkdtemp(prefix="book-chromium-"))
    instance = Browser(workdir)
    instance.send("Page.enable")
    instance.send("Network.enable")
    yield instance
    instance.close()
    shutil.rmtree(workdir, ignore_errors=True)


PAGE_STATE = """(() => {
  const article = document.querySelector('article') || document.body;
  const images = [...article.querySelectorAll('img')].filter(i => !i.closest('.navbar-brand, .logo'));
  return {
    title: document.title,
    h1: (article.querySelector('h1') || {}).textContent || '',
    images: images.length,
    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    broken: images.filter(i => i.complete && i.naturalWidth === 0).map(i => i.getAttribute('src')),
    mathSource: document.querySelectorAll('.math, span.math, div.math').length,
    mathTypeset: document.querySelectorAll('mjx-container').length,
    mathErrors: document.querySelectorAll('mjx-merror').length,
    errors: [...document.querySelectorAll('.output.error, .output.traceback, .cell_output .traceback')]
      .map(e => e.textContent.slice(0, 300)),
    checks: [...document.querySelectorAll('.cell_output')].filter(e => e.textContent.includes('\\u2714')).length,
  };
})()"""


@pytest.mark.parametrize("page", chapter_pages())
def test_chapter_renders_in_a_browser(page: str, site: str, browser: Browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.events.clear()
    browser.send("Page.navigate", url=f"{site}/{page}")
    assert browser.wait_for("document.readyState === 'complete'"), f"{page} did not finish loading"
    has_math = browser.evaluate("document.querySelectorAll('.math').length > 0")
    if has_math:
        browser.wait_for("document.querySelectorAll('mjx-container').length > 0 && "
                         "document.querySelectorAll('.math').length <= "
                         "document.querySelectorAll('mjx-container').length", timeout=30)
    state = browser.evaluate(PAGE_STATE)
    name = Path(page).stem
    browser.screenshot(SCREENSHOTS / f"{name}.png")
    browser.evaluate("(() => { const i = [...document.querySelectorAll('article img')]"
                     ".find(i => i.naturalWidth > 0); if (i) i.scrollIntoView({block: 'center'}); })()")
    time.sleep(0.3)
    browser.screenshot(SCREENSHOTS / f"{name}_figure.png")

    title = chapter_title(page)
    assert title in state["title"], f"page title {state['title']!r} does not name the chapter {title!r}"
    assert title in state["h1"], f"heading {state['h1']!r} is not the chapter's title {title!r}"
    assert state["loaded"] >= 1, f"{page}: no figure loaded (broken: {state['broken']})"
    assert not state["broken"], f"{page}: images failed to load: {state['broken']}"
    if has_math:
        assert state["mathTypeset"] >= 1, f"{page}: MathJax did not typeset the math"
        assert state["mathErrors"] == 0, f"{page}: MathJax reported {state['mathErrors']} errors"
    assert not state["errors"], f"{page}: error output in the page: {state['errors']}"
    assert state["checks"] >= 1, f"{page}: no checked claim (✔) in the outputs"

    requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    outside = [url for url in requests if not url.startswith((site, "data:", "blob:", "about:"))]
    assert not outside, f"{page} requested resources from outside the book: {outside}"
    failed = [e["params"] for e in browser.events if e["method"] == "Network.loadingFailed"
              and not e["params"].get("canceled")]
    assert not failed, f"{page}: requests failed: {failed}"
