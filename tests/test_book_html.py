"""Checks on the built book (_build/html): internal links and images, offline assets, and a real browser.

Run after the book is built (``make html-check``; ``make test`` runs it after the strict build). Without a
built book the book's tests are skipped, unless ``RESNET_TUTORIAL_REQUIRE_BOOK=1`` (set by the Makefile) makes
that a failure; the browser harness itself is then still tested, on a tiny page of its own.

The browser test drives the system's headless Chromium (Debian package ``chromium``) with Playwright
(``pip install playwright``; no browser download: ``executable_path`` points at the system's). The book is
served from 127.0.0.1, and every request that leaves it is blocked and fails the test: the book must
render offline.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import socketserver
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
REQUIRED = bool(os.environ.get("RESNET_TUTORIAL_REQUIRE_BOOK"))

if REQUIRED and not (HTML / "index.html").exists():
    raise RuntimeError(f"no built book in {HTML}: run `make book` first")
needs_book = pytest.mark.skipif(not (HTML / "index.html").exists(), reason="the book is not built (make book)")


def chapter_pages() -> list[str]:
    """The chapter pages in _toc.yml order, as paths relative to _build/html."""
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    return [f"{m}.html" for m in re.findall(r"^\s*-\s*file:\s*(chapters/\S+?)(?:\.md)?\s*$", toc, re.M)]


#: Code that draws a figure in a chapter's source: a chapter that has any must show a figure.
DRAWS = re.compile(r"plt\.|plot_|show_images|show_augmentations|imshow")


def draws_figures(page: str) -> bool:
    """Whether the chapter's source has code that draws a figure."""
    return bool(DRAWS.search((ROOT / page).with_suffix(".md").read_text(encoding="utf-8")))


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


@needs_book
def test_every_chapter_in_the_toc_was_built():
    pages = chapter_pages()
    assert pages, "no chapters in _toc.yml"
    for page in pages:
        assert (HTML / page).exists(), f"{page} was not built"


@needs_book
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


@needs_book
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


@needs_book
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


@functools.cache
def _serve(folder: str) -> str:
    """``folder`` served on 127.0.0.1 by a static server (like GitHub Pages), for the whole session."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's), driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("Playwright is not installed (pip install playwright; it drives the system Chromium)")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu",
                                                                        "--disable-dev-shm-usage"])
        yield instance
        instance.close()


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
    // code that does not fit the column (a horizontal scroll bar): its longest line
    overflow: [...article.querySelectorAll('.cell_input pre, .cell_output pre')]
      .filter(p => p.scrollWidth > p.clientWidth + 1)
      .map(p => p.textContent.split('\\n').reduce((a, b) => (a.length >= b.length ? a : b)).slice(0, 100)),
  };
})()"""


def render(browser, site: str, page: str, screenshots: Path | None = None) -> dict:
    """Open ``site/page`` in a fresh tab, wait for it (and MathJax), and return what it shows: the
    ``PAGE_STATE`` fields, ``has_math``, the blocked requests to anywhere but ``site`` (``outside``) and the
    failed ones (``failed``)."""
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    outside, failed = [], []

    def only_the_site(route):
        url = route.request.url
        if url.startswith((site, "data:", "blob:", "about:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    tab.route("**/*", only_the_site)
    tab.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}") if r.url.startswith(site) else None)
    try:
        tab.goto(f"{site}/{page}", wait_until="load", timeout=60_000)
        has_math = tab.evaluate("document.querySelectorAll('.math').length > 0")
        if has_math:
            try:
                tab.wait_for_function("document.querySelectorAll('mjx-container').length > 0 && "
                                      "document.querySelectorAll('.math').length <= "
                                      "document.querySelectorAll('mjx-container').length", timeout=30_000)
            except Exception:  # reported below as untypeset math
                pass
        state = tab.evaluate(PAGE_STATE)
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            name = Path(page).stem
            tab.screenshot(path=screenshots / f"{name}.png")
            tab.evaluate("(() => { const i = [...document.querySelectorAll('article img')]"
                         ".find(i => i.naturalWidth > 0); if (i) i.scrollIntoView({block: 'center'}); })()")
            tab.wait_for_timeout(300)
            tab.screenshot(path=screenshots / f"{name}_figure.png")
    finally:
        tab.close()
    return {**state, "has_math": has_math, "outside": outside, "failed": failed}


def problems(state: dict, title: str, figures: bool = True) -> list[str]:
    """What is wrong with a rendered chapter page (empty when nothing); ``figures``: the chapter
    draws figures, so at least one must have loaded."""
    found = []
    if title not in state["title"]:
        found.append(f"page title {state['title']!r} does not name the chapter {title!r}")
    if title not in state["h1"]:
        found.append(f"heading {state['h1']!r} is not the chapter's title {title!r}")
    if figures and state["loaded"] < 1:
        found.append("no figure loaded")
    if state["broken"]:
        found.append(f"images failed to load: {state['broken']}")
    if state["has_math"] and state["mathTypeset"] < 1:
        found.append("MathJax did not typeset the math")
    if state["mathErrors"]:
        found.append(f"MathJax reported {state['mathErrors']} errors")
    if state["errors"]:
        found.append(f"error output in the page: {state['errors']}")
    if state["checks"] < 1:
        found.append("no checked claim (\u2714) in the outputs")
    if state["overflow"]:
        found.append(f"code wider than the column at 1280 px: {state['overflow'][:3]}")
    if state["outside"]:
        found.append(f"requested resources from outside the book: {state['outside']}")
    if state["failed"]:
        found.append(f"requests failed: {state['failed']}")
    return found


@needs_book
@pytest.mark.parametrize("page", chapter_pages())
def test_chapter_renders_in_a_browser(page: str, browser):
    state = render(browser, _serve(str(HTML)), page, screenshots=SCREENSHOTS)
    found = problems(state, chapter_title(page), figures=draws_figures(page))
    assert not found, f"{page}: " + "; ".join(found)


TINY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title} - the book</title></head>
<body><article><h1>{title}</h1><img src="figure.png" alt="a figure">{extra}
<div class="cell_output"><pre>\u2714 the claim holds</pre></div></article></body></html>"""


def test_the_browser_harness_on_a_tiny_page(browser, tmp_path):
    """The harness passes a good page and reports each fault of a bad one (no built book needed)."""
    from PIL import Image

    Image.new("L", (8, 8), 128).save(tmp_path / "figure.png")
    (tmp_path / "good.html").write_text(TINY_PAGE.format(title="Tiny chapter", extra=""), encoding="utf-8")
    bad = ('<img src="missing.png"><img src="https://example.com/logo.png">'
           '<div class="output error">Traceback (most recent call last)</div>'
           f'<div class="cell_input"><pre>{"x = 1  # " + "a long line " * 20}</pre></div>')
    (tmp_path / "bad.html").write_text(TINY_PAGE.format(title="Other title", extra=bad), encoding="utf-8")
    site = _serve(str(tmp_path))

    good = render(browser, site, "good.html", screenshots=tmp_path / "shots")
    assert problems(good, "Tiny chapter") == []
    assert good["loaded"] == 1 and (tmp_path / "shots" / "good.png").stat().st_size > 0

    found = " | ".join(problems(render(browser, site, "bad.html"), "Tiny chapter"))
    assert "does not name the chapter" in found and "missing.png" in found and "Traceback" in found
    assert "outside the book: ['https://example.com/logo.png']" in found
    assert "code wider than the column at 1280 px: ['x = 1  # a long line" in found
