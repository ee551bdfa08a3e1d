"""Tests for anticip_lib.results: keys, file names, save/load and the run cache (STYLE §13)."""

import json
import re
from dataclasses import fields, replace

import numpy as np
import pytest

from anticip_lib import RunConfig, results
from anticip_lib.trainer import Run


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Results and cache folders under tmp_path (never the repository's results/)."""
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    return tmp_path


# ---- config_key and run_stem ---------------------------------------------------------

# one changed value per RunConfig field
CHANGES = {
    "model": "pythia-160m",
    "revision": "step0",
    "init": "pythia",
    "tokenizer": "smollm2-135m",
    "corpus": "cnn-embedded",
    "n_docs": 10,
    "context_len": 128,
    "steps_per_doc": 5,
    "n_epochs": 3,
    "optimizer": "adam",
    "lr": 1e-4,
    "lr_schedule": "cosine",
    "order": "shuffled",
    "n_shuffled": 8,
    "seed": 1,
    "doc_split": "pilot",
    "doc_filter": "any",
    "width": 64,
    "depth": 2,
    "heads": 8,
    "precision": "bf16",
}


def test_changes_cover_every_field():
    # a new RunConfig field must be added to CHANGES (and so to the key test)
    assert set(CHANGES) == {f.name for f in fields(RunConfig)}


def test_config_key_changes_with_every_field():
    base = RunConfig()
    keys = {"base": results.config_key(base)}
    for name, value in CHANGES.items():
        assert getattr(base, name) != value
        keys[name] = results.config_key(replace(base, **{name: value}))
    assert len(set(keys.values())) == len(keys), keys


def test_config_key_is_stable():
    a = RunConfig(model="tiny-gpt", init="pythia", n_docs=3)
    assert results.config_key(a) == results.config_key(RunConfig.from_dict(a.to_dict()))
    assert re.fullmatch(r"[0-9a-f]{10}", results.config_key(a))
    assert results.config_key(RunConfig(lr=1e-3)) == results.config_key(RunConfig(lr=0.001))
    # pinned: if this changes, every saved result is orphaned. Change it on purpose only
    # (e.g. with a RESULTS_VERSION bump), never by accident.
    assert results.config_key(RunConfig()) == PINNED_DEFAULT_KEY


PINNED_DEFAULT_KEY = "a9aebe2545"  # RunConfig() with RESULTS_VERSION = 1


def test_later_fields_at_default_keep_old_keys():
    # a field added after results were committed (doc_split) must not orphan them: at
    # its default it is left out of the key; the pinned key above is from before it
    old = {k: v for k, v in RunConfig().to_dict().items()
           if k not in ("doc_split", "doc_filter")}
    assert RunConfig.from_dict(old) == RunConfig()
    assert results.config_key(RunConfig.from_dict(old)) == PINNED_DEFAULT_KEY
    assert results.config_key(RunConfig(doc_split="main")) != PINNED_DEFAULT_KEY
    assert results.config_key(RunConfig(doc_filter="any")) != PINNED_DEFAULT_KEY


def test_config_key_depends_on_results_version(monkeypatch):
    before = results.config_key(RunConfig())
    monkeypatch.setattr(results, "RESULTS_VERSION", results.RESULTS_VERSION + 1)
    assert results.config_key(RunConfig()) != before


def test_equal_configs_have_equal_keys():
    a, b = RunConfig(lr=1), RunConfig(lr=1.0)
    assert a == b
    assert results.config_key(a) == results.config_key(b)


def test_run_stem_format():
    c = RunConfig(n_docs=10, context_len=128, steps_per_doc=10, n_epochs=5)
    stem = results.run_stem(c)
    assert "_T10_C128_M10_E5_" in stem
    assert stem == f"pythia-1b_T10_C128_M10_E5_sgd0.001_cyclic_s0__{results.config_key(c)}"
    assert re.search(r"__[0-9a-f]{10}$", stem)


def test_run_stem_variants():
    c = RunConfig(model="tiny-gpt", init="pythia", n_docs=3, context_len=16,
                  steps_per_doc=2, n_epochs=2, optimizer="adam", lr=1e-4,
                  order="partial", n_shuffled=2, seed=7)
    assert results.run_stem(c).startswith("tiny-gpt_pythia_T3_C16_M2_E2_adam0.0001_partial2_s7__")
    hub = RunConfig(model="EleutherAI/pythia-70m")
    assert results.run_stem(hub).startswith("pythia-70m_T25_")
    folder = RunConfig(model="/some/where/my-ckpt/")
    assert results.run_stem(folder).startswith("my-ckpt_T25_")
    # same readable part, different keys: the hash keeps them apart
    assert results.run_stem(hub) != results.run_stem(RunConfig(model="pythia-70m"))


# ---- save_run / load_run -------------------------------------------------------------

CFG = RunConfig(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
                context_len=16, steps_per_doc=2, n_epochs=2)


def _run(config=CFG):
    T, E, M = config.n_docs, config.n_epochs, config.steps_per_doc
    eval_loss = 5.0 + np.arange((E * T + 1) * T, dtype=float).reshape(E * T + 1, T) / 10
    train_loss = np.linspace(6.0, 1.0, E * T * M)
    order = np.tile(np.arange(T), E)
    meta = {"wall_s": 1.5, "model_label": "hand-made", "doc_ids": ["a", "b", "c"]}
    return Run(config, eval_loss, train_loss, order, meta)


def _files(dirs, config=CFG, experiment="exp"):
    # appended, not Path.with_suffix: the stem holds dots ("sgd0.001")
    folder = dirs / "results" / experiment
    stem = results.run_stem(config)
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def test_results_dir_and_cache_dir_follow_env(dirs):
    assert results.results_dir() == dirs / "results"
    assert results.cache_dir() == dirs / "cache"


def test_save_load_round_trip(dirs):
    run = _run()
    npz = results.save_run(run, "exp")
    assert (npz, npz.with_suffix(".json")) == _files(dirs)
    assert not list(npz.parent.glob("*.tmp*"))  # atomic writes leave no temp files
    back = results.load_run(CFG, "exp")
    assert back is not None
    assert back.config == CFG
    np.testing.assert_array_equal(back.eval_loss, run.eval_loss)
    np.testing.assert_array_equal(back.train_loss, run.train_loss)
    np.testing.assert_array_equal(back.order, run.order)
    assert back.meta["model_label"] == "hand-made"
    assert back.meta["doc_ids"] == ["a", "b", "c"]
    assert back.meta["results_version"] == results.RESULTS_VERSION


def test_file_names_keep_the_whole_stem(dirs):
    # regression: Path.with_suffix cut "…_sgd0.001_cyclic_s0__<key>" to "…_sgd0", so
    # runs differing only in lr, order, seed (or any hashed field) shared one file
    configs = [CFG, replace(CFG, seed=1), replace(CFG, lr=1e-4), replace(CFG, order="shuffled"),
               replace(CFG, corpus="other-folder")]
    for c in configs:
        run = _run(c)
        run.eval_loss = run.eval_loss + c.seed
        results.save_run(run, "exp")
    names = sorted(p.name for p in (dirs / "results" / "exp").iterdir())
    assert names == sorted(f"{results.run_stem(c)}{ext}" for c in configs for ext in (".npz", ".json"))
    for c in configs:
        back = results.load_run(c, "exp")
        assert back is not None and back.config == c
        np.testing.assert_array_equal(back.eval_loss, _run(c).eval_loss + c.seed)


def test_load_run_missing_is_none_without_warning(dirs, recwarn):
    assert results.load_run(CFG, "exp") is None
    assert not recwarn.list


def _edit_json(path, **changes):
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def test_corrupted_npz_is_rejected(dirs):
    results.save_run(_run(), "exp")
    npz, _ = _files(dirs)
    raw = bytearray(npz.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 8] = bytes(b ^ 0xFF for b in raw[mid : mid + 8])
    npz.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum"):
        assert results.load_run(CFG, "exp") is None


def test_edited_config_is_rejected(dirs):
    results.save_run(_run(), "exp")
    _, js = _files(dirs)
    _edit_json(js, config={"lr": 0.5})
    with pytest.warns(UserWarning, match="config"):
        assert results.load_run(CFG, "exp") is None


def test_wrong_results_version_is_rejected(dirs):
    results.save_run(_run(), "exp")
    _, js = _files(dirs)
    _edit_json(js, results_version=results.RESULTS_VERSION - 1)
    with pytest.warns(UserWarning, match="results version"):
        assert results.load_run(CFG, "exp") is None


def test_unreadable_json_is_rejected(dirs):
    results.save_run(_run(), "exp")
    _, js = _files(dirs)
    js.write_text(js.read_text()[:40])  # truncated mid-write
    with pytest.warns(UserWarning, match="unreadable"):
        assert results.load_run(CFG, "exp") is None


def test_wrong_shape_and_nonfinite_are_rejected(dirs):
    bad = _run()
    bad.eval_loss = bad.eval_loss[:-1]  # (E·T, T) instead of (E·T+1, T)
    results.save_run(bad, "exp")
    with pytest.warns(UserWarning, match="shape"):
        assert results.load_run(CFG, "exp") is None
    nan = _run()
    nan.eval_loss[3, 1] = np.nan
    results.save_run(nan, "exp")
    _, js = _files(dirs)
    _edit_json(js, diverged=False)  # non-finite losses not flagged as a divergence
    with pytest.warns(UserWarning, match="non-finite"):
        assert results.load_run(CFG, "exp") is None


def test_diverged_run_is_saved_flagged_and_loaded(dirs, recwarn):
    nan = _run()
    nan.eval_loss[3, 1] = np.inf
    results.save_run(nan, "exp")
    back = results.load_run(CFG, "exp")
    assert back is not None and back.meta["diverged"] is True
    assert np.isinf(back.eval_loss[3, 1])
    assert not [w for w in recwarn if "recomputing" in str(w.message)]


def test_bumped_results_version_orphans_old_files(dirs, monkeypatch, recwarn):
    results.save_run(_run(), "exp")
    monkeypatch.setattr(results, "RESULTS_VERSION", results.RESULTS_VERSION + 1)
    assert results.load_run(CFG, "exp") is None  # new key → new file name


def test_rejected_file_is_recomputed_by_run_cached(dirs, monkeypatch):
    results.save_run(_run(), "exp")
    _, js = _files(dirs)
    _edit_json(js, results_version=0)
    calls = []

    def fake_train_run(config, device="cpu", *, checkpoint=None, progress=True, **kw):
        calls.append(config)
        run = _run(config)
        run.eval_loss = run.eval_loss + 1.0
        return run

    monkeypatch.setattr(results, "train_run", fake_train_run)
    with pytest.warns(UserWarning, match="results version"):
        run = results.run_cached(CFG, "exp", progress=False)
    assert calls == [CFG]
    np.testing.assert_array_equal(run.eval_loss, _run().eval_loss + 1.0)
    assert results.load_run(CFG, "exp") is not None  # the rewritten file is valid


def test_run_cached_trains_once_then_loads_fake_trainer(dirs, monkeypatch):
    calls = []

    def fake_train_run(config, device="cpu", *, checkpoint=None, progress=True, **kw):
        calls.append(checkpoint)
        return _run(config)

    monkeypatch.setattr(results, "train_run", fake_train_run)
    first = results.run_cached(CFG, "exp", progress=False)
    second = results.run_cached(CFG, "exp", progress=False)
    assert len(calls) == 1
    # the checkpoint goes under ANTICIP_CACHE, named after the run
    assert calls[0] == dirs / "cache" / "checkpoints" / "exp" / f"{results.run_stem(CFG)}.pt"
    np.testing.assert_array_equal(second.eval_loss, first.eval_loss)
    assert second.meta["model_label"] == "hand-made"


# ---- run_cached end to end on tiny-gpt -----------------------------------------------

@pytest.mark.slow  # trains tiny-gpt (6 episodes × 2 steps): seconds
def test_run_cached_trains_once_then_loads(dirs, monkeypatch):
    calls = []
    real_train_run = results.train_run

    def counting(*args, **kwargs):
        calls.append(1)
        return real_train_run(*args, **kwargs)

    monkeypatch.setattr(results, "train_run", counting)
    first = results.run_cached(CFG, "smoke", progress=False)
    assert len(calls) == 1
    T, E, M = CFG.n_docs, CFG.n_epochs, CFG.steps_per_doc
    assert first.eval_loss.shape == (E * T + 1, T)
    assert first.train_loss.shape == (E * T * M,)
    assert first.order.tolist() == [0, 1, 2, 0, 1, 2]
    assert np.isfinite(first.eval_loss).all() and np.isfinite(first.train_loss).all()
    # the finished run leaves no checkpoint behind
    assert not list((dirs / "cache").rglob("*.pt"))

    def no_training(*args, **kwargs):
        pytest.fail("run_cached trained again instead of loading")

    monkeypatch.setattr(results, "train_run", no_training)
    monkeypatch.setattr("anticip_lib.trainer.train", no_training)
    second = results.run_cached(CFG, "smoke", progress=False)
    np.testing.assert_array_equal(second.eval_loss, first.eval_loss)
    np.testing.assert_array_equal(second.train_loss, first.train_loss)
    np.testing.assert_array_equal(second.order, first.order)

    # provenance
    js = sorted((dirs / "results" / "smoke").glob("*.json"))
    assert [p.name for p in js] == [f"{results.run_stem(CFG)}.json"]
    meta = json.loads(js[0].read_text())
    assert meta["config"] == CFG.to_dict()
    assert "git_commit" in meta
    assert {"python", "torch", "transformers", "numpy"} <= set(meta["versions"])
    assert meta["wall_s"] > 0
    assert "tiny-gpt" in meta["model_label"]
    assert len(meta["doc_ids"]) == CFG.n_docs
    assert meta["results_version"] == results.RESULTS_VERSION
    assert re.fullmatch(r"[0-9a-f]{64}", meta["npz_sha256"])


def test_configs_differing_in_lr_get_distinct_files(tmp_path, monkeypatch):
    """Regression: stems hold dots ('sgd0.005'); with_suffix once cut them to 'sgd0'."""
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path))
    saved = []
    for lr in (0.001, 0.005):
        cfg = RunConfig(n_docs=2, n_epochs=1, lr=lr)
        run = Run(cfg, np.full((3, 2), lr), np.zeros(2), np.array([0, 1]), {})
        saved.append(results.save_run(run, "exp"))
    assert saved[0] != saved[1]
    for lr in (0.001, 0.005):
        loaded = results.load_run(RunConfig(n_docs=2, n_epochs=1, lr=lr), "exp")
        assert loaded is not None and loaded.eval_loss[0, 0] == lr


# ---- reliability (issue 7) ------------------------------------------------------------

def test_json_that_is_not_an_object_is_recomputed(dirs, monkeypatch):
    results.save_run(_run(), "exp")
    _, js = _files(dirs)
    js.write_text("[1, 2, 3]")  # valid JSON, not an object
    with pytest.warns(UserWarning, match="unreadable.*list"):
        assert results.load_run(CFG, "exp") is None
    monkeypatch.setattr(results, "train_run", lambda config, **kw: _run(config))
    with pytest.warns(UserWarning, match="recomputing"):
        run = results.run_cached(CFG, "exp", progress=False)
    np.testing.assert_array_equal(run.eval_loss, _run().eval_loss)
    assert results.load_run(CFG, "exp") is not None


def test_unwritable_results_folder_fails_before_any_weights_load(dirs, monkeypatch):
    blocker = dirs / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ANTICIP_RESULTS", str(blocker / "results"))

    def boom(*args, **kwargs):
        pytest.fail("training started although the results cannot be saved")

    monkeypatch.setattr(results, "train_run", boom)
    monkeypatch.setattr("anticip_lib.models.load_model", boom)
    with pytest.raises(OSError, match=r"results folder .*a-file/results/exp is not writable"):
        results.run_cached(CFG, "exp", progress=False)


def test_stale_temporary_checkpoints_are_removed(dirs, monkeypatch):
    folder = dirs / "cache" / "checkpoints" / "exp"
    folder.mkdir(parents=True)
    stale = folder / f".{results.run_stem(CFG)}.pt.12345-abcd0123.tmp"
    other = folder / ".another-run.pt.12345-abcd0123.tmp"
    stale.write_text("half a checkpoint")
    other.write_text("someone else's")
    monkeypatch.setattr(results, "train_run", lambda config, **kw: _run(config))
    results.run_cached(CFG, "exp", progress=False)
    assert not stale.exists() and other.exists()


def test_temporary_names_are_unique_per_process_and_call(dirs, monkeypatch):
    """Every write of the store (language and vision runs, checkpoints) goes through
    files.atomic_write, whose temporaries carry the pid and a random part."""
    from anticip_lib import files

    seen = []
    real = files._tmp_name
    monkeypatch.setattr(files, "_tmp_name", lambda *a: seen.append(real(*a)) or seen[-1])
    results.save_run(_run(CFG), "exp")
    results.save_run(_run(CFG), "exp")
    assert len(seen) == 4 and len(set(seen)) == 4  # npz and json, twice
    assert all(str(__import__("os").getpid()) in p.name for p in seen)
    assert seen[0].name.endswith(".npz") and seen[0].name.startswith(".")


@pytest.mark.slow  # trains tiny-gpt twice over (about 2 s)
def test_kill_between_npz_and_json_does_not_retrain(dirs, monkeypatch):
    npz, js = _files(dirs)
    ckpt = dirs / "cache" / "checkpoints" / "exp" / f"{results.run_stem(CFG)}.pt"
    real_versions = results.versions

    def killed(*args, **kwargs):  # save_run calls it after the npz, before the json
        raise KeyboardInterrupt

    monkeypatch.setattr(results, "versions", killed)
    with pytest.raises(KeyboardInterrupt):
        results.run_cached(CFG, "exp", progress=False)
    assert npz.exists() and not js.exists()
    assert ckpt.exists()  # kept until the results are written
    monkeypatch.setattr(results, "versions", real_versions)
    from anticip_lib import trainer

    def no_eval(*args, **kwargs):
        pytest.fail("the complete checkpoint was trained again")

    monkeypatch.setattr(trainer, "evaluate", no_eval)
    run = results.run_cached(CFG, "exp", progress=False)
    assert run.meta["resumed_at"] == CFG.n_epochs * CFG.n_docs
    assert js.exists() and not ckpt.exists()
    assert results.load_run(CFG, "exp") is not None


@pytest.mark.slow  # trains tiny-gpt until it diverges (about 1 s)
def test_diverging_config_trains_once_then_loads(dirs, monkeypatch, recwarn):
    from anticip_lib import trainer

    cfg = replace(CFG, lr=1e3)  # tiny-gpt's losses overflow within two episodes
    calls, evals = [], []
    real_train_run, real_eval = results.train_run, trainer.evaluate

    def counting(*args, **kwargs):
        calls.append(1)
        return real_train_run(*args, **kwargs)

    def counting_eval(*args, **kwargs):
        evals.append(1)
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(results, "train_run", counting)
    monkeypatch.setattr(trainer, "evaluate", counting_eval)
    first = results.run_cached(cfg, "exp", progress=False)
    assert len(calls) == 1
    assert not [w for w in recwarn if "recomputing" in str(w.message)]
    k = first.meta["diverged_at"]
    assert first.meta["diverged"] is True and 1 <= k < cfg.n_epochs * cfg.n_docs
    assert len(evals) == k + 1  # rows 0..k evaluated, nothing after the divergence
    assert np.isnan(first.eval_loss[k + 1 :]).all()
    bad = np.flatnonzero(~np.isfinite(first.train_loss))
    assert np.isnan(first.train_loss[bad[0] + 1 :]).all()  # no steps after the first
    assert bad[0] // cfg.steps_per_doc + 1 <= k  # non-finite training loss

    def no_training(*args, **kwargs):
        pytest.fail("a diverged run was trained again")

    monkeypatch.setattr(results, "train_run", no_training)
    second = results.run_cached(cfg, "exp", progress=False)
    assert second.meta["diverged"] is True and second.meta["diverged_at"] == k
    np.testing.assert_array_equal(second.eval_loss, first.eval_loss)
    assert not [w for w in recwarn if "recomputing" in str(w.message)]


def _compute_in_child(marker, queue):
    """One of two processes asking for the same run at the same time."""
    import os
    import time

    real = results.train_run

    def slow(*args, **kwargs):
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # the other process surely arrives while this one trains
        return real(*args, **kwargs)

    results.train_run = slow
    try:
        run = results.run_cached(CFG, "exp", progress=False)
        queue.put(("ok", run.eval_loss))
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        queue.put(("error", repr(err)))


@pytest.mark.slow  # two processes, one trains tiny-gpt (about 3 s)
def test_two_processes_compute_a_run_once(dirs):
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # children inherit the imports and the env (dirs)
    marker, queue = dirs / "trained-by", ctx.Queue()
    procs = [ctx.Process(target=_compute_in_child, args=(marker, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    out = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [o[0] for o in out] == ["ok", "ok"], out
    assert len(marker.read_text().split()) == 1  # one trained, the other loaded
    np.testing.assert_array_equal(out[0][1], out[1][1])
    folder = dirs / "results" / "exp"
    assert sorted(p.name for p in folder.iterdir() if p.name != ".locks") == sorted(
        p.name for p in _files(dirs))
    assert (folder / ".locks").is_dir()  # the run's lock: next to the results
    assert results.load_run(CFG, "exp") is not None
    assert not list((dirs / "cache").rglob("*.pt")) and not list((dirs / "cache").rglob("*.tmp"))


# ---- run records in the cache -----------------------------------------------------------

class Rec:
    """A hand-made recorder: the episode number and its square."""

    def __init__(self, name="ep", version=1):
        self.name, self.version = name, version

    def __call__(self, k, model):
        return {"k": np.array(k), "sq": np.array([k, k * k])}


def _run_with_records(config=CFG, name="ep"):
    run = _run(config)
    n = config.n_epochs * config.n_docs + 1
    run.records = {name: {"k": np.arange(n, dtype=float),
                          "sq": np.stack([np.arange(n), np.arange(n) ** 2], 1).astype(float)}}
    return run


def test_recorders_enter_the_key_only_when_present():
    base = results.config_key(CFG)
    assert results.config_key(CFG, None) == results.config_key(CFG, ()) == base
    assert results.config_key(RunConfig()) == PINNED_DEFAULT_KEY
    with_rec = results.config_key(CFG, Rec())
    assert with_rec != base
    assert results.config_key(CFG, Rec(version=2)) != with_rec  # a new version: new run
    assert results.config_key(CFG, Rec("other")) != with_rec
    two = [Rec("a"), Rec("b")]
    assert results.config_key(CFG, two) == results.config_key(CFG, two[::-1])
    assert results.run_stem(CFG, Rec()).endswith(f"_s0_rec__{with_rec}")
    assert results.run_stem(CFG).endswith(f"_s0__{base}")


def test_save_load_with_records(dirs, recwarn):
    run = _run_with_records()
    npz = results.save_run(run, "exp", Rec())
    assert "_rec__" in npz.name
    back = results.load_run(CFG, "exp", Rec())
    np.testing.assert_array_equal(back.records["ep"]["sq"][:, 1], np.arange(7) ** 2)
    np.testing.assert_array_equal(back.eval_loss, run.eval_loss)
    assert back.meta["records"] == {"ep": {"version": 1, "keys": ["k", "sq"]}}
    assert results.load_run(CFG, "exp") is None  # the plain run is another file
    assert results.load_run(CFG, "exp", Rec(version=2)) is None
    assert results.find_run(CFG, record=Rec()).records["ep"]["k"][3] == 3
    assert not recwarn.list


def test_records_with_wrong_length_are_rejected(dirs):
    run = _run_with_records()
    run.records["ep"]["k"] = run.records["ep"]["k"][:-1]
    results.save_run(run, "exp", Rec())
    with pytest.warns(UserWarning, match="records shape"):
        assert results.load_run(CFG, "exp", Rec()) is None


def test_save_run_needs_the_run_s_recorders(dirs):
    with pytest.raises(ValueError, match="record"):
        results.save_run(_run_with_records(), "exp")
    with pytest.raises(ValueError, match="record"):
        results.save_run(_run(), "exp", Rec())


def test_run_cached_passes_recorders_and_loads_records(dirs, monkeypatch):
    seen = []

    def fake_train_run(config, device="cpu", *, record=None, **kw):
        seen.append(record)
        return _run_with_records(config) if record else _run(config)

    monkeypatch.setattr(results, "train_run", fake_train_run)
    rec = Rec()
    first = results.run_cached(CFG, "exp", progress=False, record=rec)
    second = results.run_cached(CFG, "exp", progress=False, record=rec)
    assert len(seen) == 1 and seen[0] == (rec,)
    np.testing.assert_array_equal(second.records["ep"]["k"], first.records["ep"]["k"])
    results.run_cached(CFG, "exp", progress=False)  # without recorders: its own run
    assert len(seen) == 2 and seen[1] == ()


def test_bf16_run_is_cached_apart_from_its_fp32_twin(dirs):
    """precision is in the key: the bf16 run gets its own file (stem says bf16), the
    fp32 run keeps its name and key, and each loads back as itself."""
    from dataclasses import replace

    half = replace(CFG, precision="bf16")
    assert results.run_stem(CFG) == results.run_stem(RunConfig.from_dict(
        {k: v for k, v in CFG.to_dict().items() if k != "precision"}))
    assert "_bf16_" in results.run_stem(half) and "bf16" not in results.run_stem(CFG)
    assert "_cosine_" in results.run_stem(replace(CFG, lr_schedule="cosine"))
    a = results.run_cached(CFG, "smoke", progress=False)
    b = results.run_cached(half, "smoke", progress=False)
    assert not np.array_equal(a.eval_loss, b.eval_loss)
    assert results.load_run(CFG, "smoke").config.precision == "fp32"
    again = results.load_run(half, "smoke")
    assert again.config.precision == "bf16" and again.meta["precision"] == "bf16"
    np.testing.assert_array_equal(again.eval_loss, b.eval_loss)
