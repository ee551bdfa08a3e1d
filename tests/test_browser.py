"""Every page of the built book, as a reader sees it: headless Chromium at 1280 px.

One test per page of `_toc.yml` (plus the search and index pages). The book is
built once (`jupyter-book build . -W -n --keep-going`, as `make book`; a
`_build/html` newer than every source is reused, `$ANTICIP_BOOK_HTML` names
another built folder), served on 127.0.0.1, and each page is opened in the
Debian `chromium` (driven by Playwright over its own protocol: no browser is
downloaded). A page fails on:

- a console error or an uncaught exception in the page;
- a response with status 400 or above (a 404 names the missing file);
- any request to a host other than the local server (aborted, so nothing leaves);
- a table, figure, image or widget wider than the content column
  (`article.bd-article` less its padding): a table counts at its full width, even
  where CSS lets it scroll, because a scrolled table hides columns;
- an image whose smallest text renders under `MIN_TEXT_PX` CSS pixels at 100 %
  zoom. Method: `anticip_lib.plots` writes the figure's smallest text size in
  image pixels (font size in pt × dpi / 72, over every visible text artist) into
  the PNG's tEXt chunk `plots.TEXT_PX_KEY`; here it is scaled by the image's
  rendered width over its natural width. A Matplotlib PNG without that record
  fails (it was not drawn through the book's library); other images (photos)
  carry no text and are not checked.

Where Chromium or Playwright is missing the tests are reported SKIPPED with the
reason (`make test` installs Chromium with apt-get where it can). Set
`ANTICIP_BROWSER_SHOTS=DIR` to save a full-page screenshot of every page.
"""

import http.server
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from anticip_lib.plots import TEXT_PX_KEY  # where a figure records its smallest text
from test_book import toc_files

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 900
MIN_TEXT_PX = 8.0      # CSS px of the smallest font size in a figure, at 100 % zoom
SLACK_PX = 1.0         # sub-pixel rounding allowed on widths
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
BUILD_TIMEOUT_S = 1500

pytestmark = pytest.mark.slow


def page_names() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return toc_files(toc) + ["search", "genindex"]


# ---------------------------------------------------------------- PNG records


def png_text(data: bytes) -> dict:
    """The tEXt and iTXt/zTXt entries of a PNG as {keyword: text} ({} if not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return {}
    out, pos = {}, 8
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            out[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            flag, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            out[key.decode("latin-1")] = (zlib.decompress(text) if flag else
                                          text).decode("utf-8")
        elif kind == b"IEND":
            break
    return out


def image_text_problem(data: bytes, natural_w: float, shown_w: float) -> str | None:
    """Why an image's text is too small to read as shown, or None."""
    meta = png_text(data)
    if TEXT_PX_KEY not in meta:
        if meta.get("Software", "").lower().startswith("matplotlib"):
            return ("a Matplotlib figure without a text-size record (draw it with "
                    "anticip_lib.plots imported)")
        return None  # a photo or other image: no text to read
    if not natural_w or not shown_w:
        return None  # not displayed
    px = float(meta[TEXT_PX_KEY]) * shown_w / natural_w
    if px < MIN_TEXT_PX:
        return (f"smallest text {px:.1f} px at 100 % zoom (< {MIN_TEXT_PX:g}; "
                f"{float(meta[TEXT_PX_KEY]):.1f} px in a {natural_w:.0f} px wide image "
                f"shown {shown_w:.0f} px wide)")
    return None


def test_png_text_reads_matplotlib_metadata(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1])
    path = tmp_path / "f.png"
    fig.savefig(path, metadata={TEXT_PX_KEY: "5.5"})
    plt.close(fig)
    meta = png_text(path.read_bytes())
    assert meta[TEXT_PX_KEY] == "5.5" and meta["Software"].startswith("Matplotlib")
    assert image_text_problem(path.read_bytes(), 100, 100) is not None
    assert image_text_problem(path.read_bytes(), 100, 200) is None  # 11 px
    assert png_text(b"GIF89a") == {}


# ------------------------------------------------------------- book and browser


def _sources() -> list[Path]:
    files = [REPO / "_config.yml", REPO / "_toc.yml", REPO / "_vendor" / ".vendored"]
    for name in page_names()[:-2]:
        files += [p for p in (REPO / f"{name}.md", REPO / f"{name}.ipynb")
                  if p.exists()]
    files += list((REPO / "book" / "css").glob("*"))
    return files


def _fresh(html: Path) -> bool:
    pages = [html / f"{n}.html" for n in page_names()]
    if not all(p.exists() for p in pages):
        return False
    built = min(p.stat().st_mtime for p in pages)
    return all(not s.exists() or s.stat().st_mtime <= built for s in _sources())


def chromium_path() -> str | None:
    for cand in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if cand and (path := shutil.which(cand)):
            return path
    return None


@pytest.fixture(scope="module")
def book_html() -> Path:
    if os.environ.get("ANTICIP_BOOK_HTML"):
        return Path(os.environ["ANTICIP_BOOK_HTML"])
    html = REPO / "_build" / "html"
    if _fresh(html):
        return html
    # idempotent: copies the browser code again only when its pinned versions changed
    subprocess.run(["bash", "tools/vendor_js.sh", "_vendor"], cwd=REPO, check=True,
                   timeout=600)
    exe = Path(sys.executable).parent / "jupyter-book"
    env = {k: v for k, v in os.environ.items() if k != "ANTICIP_RESULTS"}
    proc = subprocess.run(
        [str(exe) if exe.exists() else "jupyter-book", "build", ".", "-W", "-n",
         "--keep-going"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0, f"jupyter-book build failed:\n{proc.stdout[-6000:]}"
    return html


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(book_html):
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Quiet, directory=str(book_html)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; "
                    "`make test` does this where it runs as root): browser check "
                    "not run")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]'): "
                    "browser check not run")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


# Measured in the page: the content column, and every table, image, figure and
# widget in it that is wider than the column (a table at its full, unscrolled width).
MEASURE = """() => {
  const art = document.querySelector("article.bd-article") || document.body;
  const cs = getComputedStyle(art), r = art.getBoundingClientRect();
  const left = r.left + parseFloat(cs.paddingLeft);
  const right = r.right - parseFloat(cs.paddingRight);
  const where = el => {
    const sec = el.closest("section");
    const h = sec && sec.querySelector("h1, h2, h3, h4");
    return h ? h.textContent.replace(/[#¶]/g, "").trim().slice(0, 60) : "";
  };
  const what = el => {
    if (el.tagName === "TABLE") {
      const head = [...el.querySelectorAll("th")].map(t => t.textContent.trim());
      const more = head.length > 4 ? " | …" : "";
      return "table [" + head.slice(0, 4).join(" | ") + more + "]";
    }
    if (el.tagName === "IMG") return "image " + el.getAttribute("src").split("/").pop();
    return el.tagName.toLowerCase() + "." + [...el.classList].slice(0, 2).join(".");
  };
  const wide = [];
  const sel = ("table, img, figure, svg, .jupyter-widgets, .widget-box, " +
               ".cell_output > .output");
  for (const el of art.querySelectorAll(sel)) {
    const b = el.getBoundingClientRect();
    if (b.width === 0 && b.height === 0) continue;
    if (el.closest("mjx-container")) continue;  // math is MathJax's
    const full = Math.max(b.width, el.scrollWidth);
    if (b.left + full > right + %(slack)s || b.left < left - %(slack)s)
      wide.push({what: what(el), where: where(el), width: Math.round(full)});
  }
  const imgs = [...art.querySelectorAll("img")].map(im => ({
    src: im.currentSrc || im.src, natural: im.naturalWidth,
    shown: im.getBoundingClientRect().width, where: where(im),
    complete: im.complete}));
  return {column: right - left, wide, imgs};
}""" % {"slack": SLACK_PX}


def _wait_ready(page) -> None:
    page.wait_for_load_state("networkidle")
    page.evaluate("""async () => {
      if (window.MathJax && MathJax.startup && MathJax.startup.promise)
        await MathJax.startup.promise;
    }""")
    page.wait_for_timeout(300)  # widget views render after require.js resolves


def visit(browser, base: str, name: str, html_dir: Path, shots: Path | None = None):
    """Open one page; the list of its problems (empty when it reads well)."""
    problems, failed = [], set()
    ctx = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT},
                              device_scale_factor=1)

    def route(r):
        host = urlparse(r.request.url).hostname
        if host not in LOCAL_HOSTS:
            problems.append(f"request to another host: {r.request.url}")
            r.abort()
        else:
            r.continue_()

    ctx.route("**/*", route)
    page = ctx.new_page()

    def on_console(msg):
        if msg.type == "error":
            text = msg.text
            if text.startswith("Failed to load resource"):
                return  # reported below with its URL
            problems.append(f"console error: {text[:300]}")

    def on_response(resp):
        if resp.status >= 400:
            failed.add(resp.url)
            problems.append(f"HTTP {resp.status}: {resp.url.replace(base, '')}")

    page.on("console", on_console)
    page.on("pageerror",
            lambda err: problems.append(f"uncaught exception: {err}"[:300]))
    page.on("response", on_response)
    try:
        resp = page.goto(f"{base}/{name}.html", wait_until="load")
        if resp is None or resp.status >= 400:
            status = resp.status if resp else "no response"
            problems.append(f"page not served ({status})")
            return problems
        _wait_ready(page)
        m = page.evaluate(MEASURE)
        for w in m["wide"]:
            problems.append(f"{w['what']} in '{w['where']}' is {w['width']} px wide, "
                            f"the column {m['column']:.0f} px")
        for im in m["imgs"]:
            path = urlparse(im["src"])
            if path.hostname not in LOCAL_HOSTS or im["src"] in failed:
                continue
            f = html_dir / unquote(path.path).lstrip("/")
            if not f.is_file():
                continue
            why = image_text_problem(f.read_bytes(), im["natural"], im["shown"])
            if why:
                problems.append(f"image {f.name} in '{im['where']}': {why}")
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / (name.replace("/", "__") + ".png")),
                            full_page=True)
    finally:
        ctx.close()
    return problems


@pytest.mark.parametrize("name", page_names())
def test_page_reads_well_in_chromium(name, browser, server, book_html):
    shots = os.environ.get("ANTICIP_BROWSER_SHOTS")
    problems = visit(browser, server, name, book_html, Path(shots) if shots else None)
    if problems:
        pytest.fail(f"{name}.html at {WIDTH} px:\n  " + "\n  ".join(problems),
                    pytrace=False)
