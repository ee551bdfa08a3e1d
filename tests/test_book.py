"""The book builds with warnings as errors and its pages load nothing from a CDN.

This is the README's `make book`, run into a temporary folder: it executes the
chapter notebooks (their default presets read the committed `results/`), so it is
marked slow.
"""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CDN = re.compile(r"cdn\.jsdelivr|unpkg\.com|cdnjs|https?://cdn\.|googleapis", re.I)
BUILD_TIMEOUT_S = 1500


def toc_files(toc: dict) -> list[str]:
    """Every `file:` in a jb-book _toc.yml: the root, chapters and their sections."""
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


class _Refs(HTMLParser):
    """Collect (tag, attribute, url) for every <script src> and <link href>."""

    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.refs.append((tag, "src", attrs["src"]))
        if tag == "link" and attrs.get("href"):
            self.refs.append((tag, "href", attrs["href"]))


def page_refs(html: str) -> list[tuple[str, str, str]]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs


def jupyter_book() -> str:
    exe = Path(sys.executable).parent / "jupyter-book"
    return str(exe) if exe.exists() else (shutil.which("jupyter-book") or "jupyter-book")


def test_page_refs_finds_cdn_scripts():
    html = (
        '<script src="https://cdn.jsdelivr.net/npm/x.js"></script>'
        '<link rel="stylesheet" href="../_static/a.css">'
        "<script>var inline = 1;</script>"
    )
    refs = page_refs(html)
    assert refs == [
        ("script", "src", "https://cdn.jsdelivr.net/npm/x.js"),
        ("link", "href", "../_static/a.css"),
    ]
    assert [url for _, _, url in refs if CDN.search(url)] == [refs[0][2]]


@pytest.mark.slow
def test_book_builds_offline_without_warnings(tmp_path):
    if not (REPO / "_vendor" / ".vendored").exists():
        subprocess.run(
            ["bash", "tools/vendor_js.sh", "_vendor"], cwd=REPO, check=True, timeout=600
        )

    # The book must be drawn from the committed results/, whatever a fixture or the
    # caller's shell set ANTICIP_RESULTS to.
    env = {k: v for k, v in os.environ.items() if k != "ANTICIP_RESULTS"}
    proc = subprocess.run(
        [jupyter_book(), "build", str(REPO), "--path-output", str(tmp_path),
         "-W", "-n", "--keep-going"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"jupyter-book build failed:\n{log[-6000:]}"

    html_dir = tmp_path / "_build" / "html"
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    missing = [f for f in toc_files(toc) if not (html_dir / f"{f}.html").exists()]
    assert not missing, f"toc pages without HTML: {missing}"

    pages = sorted(html_dir.rglob("*.html"))
    assert pages
    offenders, mathjax_local = [], False
    for page in pages:
        for tag, attr, url in page_refs(page.read_text(encoding="utf-8")):
            if CDN.search(url):
                offenders.append(f"{page.relative_to(html_dir)}: <{tag} {attr}={url}>")
            mathjax_local |= tag == "script" and "_static/mathjax/tex-chtml.js" in url
    assert not offenders, "pages load from a CDN:\n" + "\n".join(offenders)
    assert mathjax_local, "no page loads the vendored MathJax (_static/mathjax/)"
    assert (html_dir / "_static" / "require.js").exists()
    assert (html_dir / "_static" / "widgets" / "embed-amd.js").exists()


def _parameters_cell(nb_path: Path) -> str:
    import json

    cells = json.loads(nb_path.read_text())["cells"]
    found = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"{nb_path.name}: {len(found)} cells tagged 'parameters'"
    src = found[0]["source"]
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("nb_path", sorted((REPO / "notebooks").glob("*.ipynb")),
                         ids=lambda p: p.stem)
def test_papermill_help_lists_every_parameter(nb_path, caplog):
    """`papermill --help-notebook` shows every parameter with its type, default and
    help, and parses each line: one `name: type = value  # help` per line, and no second "="
    on a line (papermill then prints "Unable to parse line N" and drops the name; a
    comment reads "None: the preset's", not "None = ...")."""
    import ast
    import logging

    pytest.importorskip("papermill")
    from nbformat.v4 import new_code_cell
    from papermill.translators import PythonTranslator

    src = _parameters_cell(nb_path)
    names = [t.target.id for t in ast.parse(src).body if isinstance(t, ast.AnnAssign)]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = PythonTranslator.inspect(new_code_cell(src))
    unparsed = [r.getMessage() for r in caplog.records
                if "Unable to parse" in r.getMessage()]
    assert not unparsed, f"{nb_path.name}: " + "; ".join(unparsed)
    assert [p.name for p in params] == names, nb_path.name
    for p in params:
        assert p.inferred_type_name not in ("None", "") and p.help, (
            f"{nb_path.name}: {p.name} needs `name: type = value  # help`")
