"""Every chapter notebook executes end to end under papermill with its smoke preset.

One case per `notebooks/*.ipynb` (a new chapter is covered as soon as it exists). Each
runs with `ANTICIP_RESULTS` and `ANTICIP_CACHE` in a temporary folder and must:
- run without an error;
- print no `nan` and no `inf %` (a failed statistic must not reach the page);
- write nothing into the repository's `results/`;
- save the state of its widgets, when it shows any (the static book draws them).
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TEXT_TYPES = ("text/plain", "text/markdown", "text/html", "text/latex")
BAD = re.compile(r"\bnan\b|\binf\s*%", re.IGNORECASE)


def output_lines(nb: dict) -> list[tuple[int, str]]:
    """(cell index, line) for every line of text a code cell shows or prints."""
    lines = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            texts = [out.get("text", "")]
            texts += [out.get("data", {}).get(t, "") for t in TEXT_TYPES]
            if out.get("output_type") == "error":
                texts += [out.get("ename", ""), out.get("evalue", "")]
            for t in texts:
                t = "".join(t) if isinstance(t, list) else t
                lines += [(i, line) for line in t.splitlines()]
    return lines


def bad_lines(nb) -> list[str]:
    return [f"cell {i}: {line.strip()}" for i, line in output_lines(nb)
            if BAD.search(line)]


def snapshot(folder: Path) -> dict:
    """{path: (size, mtime)} of every file below `folder`."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def test_bad_line_check_by_hand():
    """The output check on hand-written outputs: what it must flag and what not."""
    outputs = [
        {"output_type": "stream", "name": "stdout",
         "text": ["RS(2) = 0.41\n", "RS(3) = nan\n", "financial news: 3 documents\n"]},
        {"output_type": "execute_result", "data": {"text/markdown": "| a | NaN ± 0.1 |",
                                                   "text/plain": "<Markdown>"}},
        {"output_type": "display_data", "data": {"text/plain": "change: inf % (of 0)"}},
        {"output_type": "display_data", "data": {"text/plain": "information: +3.0 %",
                                                 "image/png": "bmFuIGluZiAl"}},
        {"output_type": "error", "ename": "ValueError", "evalue": "sd is NaN",
         "traceback": []},
    ]
    nb = {"cells": [{"cell_type": "markdown", "source": "nan in prose is fine"},
                    {"cell_type": "code", "source": "", "outputs": outputs}]}
    assert bad_lines(nb) == ["cell 1: RS(3) = nan", "cell 1: | a | NaN ± 0.1 |",
                             "cell 1: change: inf % (of 0)", "cell 1: sd is NaN"]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_smoke(notebook, tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))  # not the repo's
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    before = snapshot(REPO / "results")
    nb = pm.execute_notebook(
        str(notebook), str(tmp_path / notebook.name), parameters={"preset": "smoke"},
        cwd=str(notebook.parent), kernel_name="python3", progress_bar=False,
    )  # raises PapermillExecutionError, naming the cell, when one fails
    assert not bad_lines(nb), "nan / inf % shown:\n" + "\n".join(bad_lines(nb))
    after = snapshot(REPO / "results")
    changed = sorted(p for p in before.keys() | after.keys()
                     if before.get(p) != after.get(p))
    assert not changed, f"{notebook.name} wrote into the repo's results/: {changed[:10]}"
    code = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
    if any("widgets." in src for src in code):
        assert "widgets" in nb["metadata"], "the widgets' state was not saved"
