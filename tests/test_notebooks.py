"""Every chapter notebook executes end to end under papermill with its smoke preset."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_chapter1_smoke(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))  # not the repo's
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "01.ipynb"
    nb = pm.execute_notebook(
        str(NOTEBOOKS / "01_phenomenon.ipynb"), str(out),
        parameters={"preset": "smoke"}, cwd=str(NOTEBOOKS), progress_bar=False,
    )
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "learning rate for the main runs" in text
    assert "tiny-gpt" in text  # the substitute is named on the page
    saved = list((tmp_path / "results" / "01_phenomenon").glob("*.npz"))
    assert len(saved) == 2  # one cyclic and one shuffled run (seed 0)
