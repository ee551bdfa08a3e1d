"""The paper-scale path end to end on CPU (issue 11): checkpoints of a big shape, and
the chapter page under `-p preset paper` on tiny stand-ins (a presets fixture)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from anticip_lib import RunConfig, metrics, trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_paper_shape_run_writes_few_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    """A random-init Pythia-410M shape (24 blocks, width 1024) for 8 episodes: with the
    default 10-minute interval it checkpoints only at the end of epoch 1 (episode 4),
    and a run killed in epoch 2 resumes to the same numbers as an uninterrupted run."""
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig(model="pythia-410m", init="pythia", tokenizer="tiny-gpt",
                    corpus="cnn-embedded", n_docs=4, context_len=8, steps_per_doc=1,
                    n_epochs=2, optimizer="sgd", lr=1e-3)
    writes = []
    save = trainer._save_atomic
    monkeypatch.setattr(trainer, "_save_atomic",
                        lambda obj, path: (writes.append(obj["done"]), save(obj, path)))
    clean = trainer.train_run(cfg, progress=False)
    assert writes == []  # no checkpoint file asked for

    class Killed(Exception):
        pass

    def kill(k, model):
        if k == 6:
            raise Killed

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Killed):
        trainer.train_run(cfg, checkpoint=ckpt, on_episode_end=kill, progress=False)
    assert writes == [4]  # one checkpoint for 6 episodes: the end of epoch 1
    # the real size: fp32 weights of ~302M parameters (405M less the 50k-row embeddings
    # that a 257-entry byte vocabulary does not have) = 1.21 GB; plain SGD has no state
    assert ckpt.stat().st_size > 1.2e9
    resumed = trainer.train_run(cfg, checkpoint=ckpt, progress=False)
    assert writes == [4] and resumed.meta["resumed_at"] == 4
    np.testing.assert_allclose(resumed.eval_loss, clean.eval_loss, rtol=0, atol=1e-6)
    assert not ckpt.exists()


def _fixture_configs(model_seeds):
    base = RunConfig(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
                     context_len=16, steps_per_doc=2, n_epochs=3, optimizer="sgd",
                     lr=3e-2, doc_filter="any")
    return base, [replace(base, order=o, seed=s, **kw) for kw, seeds in model_seeds
                  for o in ("cyclic", "shuffled") for s in seeds]


def _glued(nb) -> dict:
    out = {}
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                text = next(v for k, v in o["data"].items() if k.endswith("text/plain"))
                out[name] = "".join(text).strip("'\"")
    return out


def _markdown(nb) -> str:
    return "\n".join("".join(o["data"]["text/markdown"]) for c in nb["cells"]
                     for o in c.get("outputs", []) if "text/markdown" in o.get("data", {}))


@pytest.mark.slow
def test_paper_preset_page_shows_only_its_own_runs(tmp_path):
    """`-p preset paper` with the paper preset's configs swapped for tiny stand-ins: every
    number and comparison row on the page belongs to those runs."""
    from anticip_lib import compare, stats

    base, main = _fixture_configs([({}, [0, 1])])
    _, table = _fixture_configs([({"context_len": 24}, [0, 1])])
    fixture = {"01_phenomenon": {"paper": [
        {"name": "main", "experiment": "fixture/01", "configs": [c.to_dict() for c in main]},
        {"name": "table", "experiment": "fixture/01", "configs": [c.to_dict() for c in table]},
    ]}}
    (tmp_path / "fixture.json").write_text(json.dumps(fixture))
    env = {**os.environ, "ANTICIP_PRESETS_FIXTURE": str(tmp_path / "fixture.json"),
           "ANTICIP_RESULTS": str(tmp_path / "results"),
           "ANTICIP_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "paper.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "01_phenomenon.ipynb"),
         str(out), "-p", "preset", "paper", "--cwd", str(REPO / "notebooks")],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = json.loads(out.read_text())
    page, glued = _markdown(nb), _glued(nb)

    from anticip_lib import results
    old = os.environ.get("ANTICIP_RESULTS")
    os.environ["ANTICIP_RESULTS"] = str(tmp_path / "results")
    try:
        runs = [results.find_run(c, "fixture/01") for c in main]
        trun = [results.find_run(c, "fixture/01") for c in table]
    finally:
        os.environ.pop("ANTICIP_RESULTS") if old is None else os.environ.update(
            ANTICIP_RESULTS=old)
    assert all(r is not None for r in runs + trun)
    cyc = [r for r in runs if r.config.order == "cyclic"]
    shu = [r for r in runs if r.config.order == "shuffled"]
    # the glued RS numbers are the fixture runs' own (hand-checked through metrics)
    rs_c = [metrics.recovery_score(r.eval_loss, 3, 2, r.order) for r in cyc]
    rs_s = [metrics.recovery_score(r.eval_loss, 3, 2, r.order) for r in shu]
    assert glued["ch1_rs_cyc"] == stats.t_interval(rs_c).text()
    assert glued["ch1_rs_shuf"] == stats.t_interval(rs_s).text()
    assert "tiny-gpt" in glued["ch1_model"]
    # Table 1: the fixture's C = 24 runs, with no paper row set beside a stand-in
    oc = [metrics.average_online_loss(r.eval_loss, r.order, 3)
          for r in trun if r.config.order == "cyclic"]
    assert f"{np.mean(oc):.2f} ± {np.std(oc, ddof=1):.2f} (n = 2)" in page
    assert "Preset `paper`" in page
    for paper_number in ("1.03", "1.51", "1.09", "1.34", "1.14", "1.79"):
        assert paper_number not in page, paper_number  # no other model's row
    assert compare.model_label(cyc[0]) in page
