"""Faults found by probing the results store and the sweep (issue #18), one test each.

Every test here failed before its fix (tried): a changed corpus folder, two shards
started at different times, a damaged checkpoint, a kill between saving and deleting
the checkpoint, a full results folder or cache, corpus files that are not UTF-8 text,
two writers sharing a results folder with different caches, a killed Ray driver.
"""

import errno
import os
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from conftest import M, cyclic, make_tiny_model

from anticip_lib import data, files, lockstep, results, sweep, trainer
from anticip_lib.config import RunConfig
from anticip_lib.run import Run

TINY = dict(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
            context_len=16, steps_per_doc=1, n_epochs=1, optimizer="sgd", lr=0.1)


def _fake_run(cfg):
    n = cfg.n_docs * cfg.n_epochs
    return Run(cfg, np.full((n + 1, cfg.n_docs), 2.0), np.full(n * cfg.steps_per_doc, 2.0),
               np.arange(n) % cfg.n_docs, {"wall_s": 1.0})


# ---- a local corpus folder: its contents are in the key ----------------------------------


def test_changed_corpus_folder_gives_a_new_key(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(3):
        (folder / f"d{i}.txt").write_text(f"document {i} " * 20)
    cfg = RunConfig(**{**TINY, "corpus": str(folder)})
    before = results.config_key(cfg)
    (folder / "d1.txt").write_text("another text " * 20)
    changed = results.config_key(cfg)
    assert changed != before  # the old results are not reused
    (folder / "d1.txt").write_text("document 1 " * 20)  # back: same bytes, new mtime
    assert results.config_key(cfg) == before
    (folder / "d2.txt").rename(folder / "d3.txt")  # a renamed file is another corpus
    assert results.config_key(cfg) not in (before, changed)
    # a named corpus keeps the key every committed run has
    named = RunConfig(**TINY)
    assert "corpus_contents" not in named.key_dict()


def test_named_corpora_agree_with_data():
    from anticip_lib import config

    assert set(config.NAMED_CORPORA) == set(data.CORPORA)


# ---- shards started at different times --------------------------------------------------


def test_shards_started_at_different_times_cover_every_run(monkeypatch):
    """Shard 0/2 starts, finishes a run, then shard 1/2 starts: between them they take
    every missing run (each splitting its own list of missing runs skipped some)."""
    from types import SimpleNamespace

    cfgs = [RunConfig(**{**TINY, "seed": s}) for s in range(8)]
    group = SimpleNamespace(name="main", experiment="x", configs=cfgs)
    monkeypatch.setattr(sweep.presets, "groups", lambda chapter, preset: [group])
    done = set()
    monkeypatch.setattr(results, "find_run",
                        lambda c, exp=None, record=None: c if c.seed in done else None)
    first = [c for _, c, d in sweep.plan("01_phenomenon", "smoke", shard=(0, 2)) if not d]
    done.add(first[0].seed)  # shard 0 finishes its first run
    second = [c for _, c, d in sweep.plan("01_phenomenon", "smoke", shard=(1, 2)) if not d]
    taken = {c.seed for c in first} | {c.seed for c in second}
    assert taken == set(range(8))
    assert not {c.seed for c in first} & {c.seed for c in second}


# ---- damaged checkpoints -----------------------------------------------------------------


def test_damaged_lockstep_checkpoint_names_its_path(tmp_path):
    ckpt = tmp_path / "group.pt"
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint" * 10)
    ids = torch.randint(1, 90, (2, 4, 12))
    with pytest.raises(trainer.CheckpointError, match=f"checkpoint {ckpt} cannot be read"):
        trainer.train_many([make_tiny_model(r) for r in range(2)], ids, ids,
                           np.stack([cyclic(), cyclic()]), steps_per_doc=1, checkpoint=ckpt,
                           progress=False)


def _refusing_once(ckpt, fake):
    """A trainer that refuses `ckpt` (as it refuses a damaged file) the first time."""
    calls = []

    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            assert ckpt.exists()
            raise trainer.CheckpointError(f"checkpoint {ckpt} cannot be read safely")
        assert not ckpt.exists()  # set aside before the second try
        return fake(*args, **kwargs)

    return train, calls


def test_damaged_checkpoint_of_a_cached_run_is_set_aside(store, monkeypatch):
    cfg = RunConfig(**TINY)
    ckpt = results.checkpoint_path("x", results.run_stem(cfg))
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x00" * 100)  # a truncated file
    train, calls = _refusing_once(ckpt, lambda config, **kw: _fake_run(config))
    monkeypatch.setattr(results, "train_run", train)
    with pytest.warns(UserWarning, match="set aside"):
        run = results.run_cached(cfg, "x", progress=False)
    assert len(calls) == 2 and run.eval_loss.shape == (4, 3)
    aside = list(ckpt.parent.glob(f"{ckpt.name}.refused-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"\x00" * 100
    assert not ckpt.exists()


def test_damaged_group_checkpoint_is_set_aside(store, monkeypatch):
    cfgs = [RunConfig(**{**TINY, "seed": s}) for s in range(2)]
    ckpt = lockstep._checkpoint_path("x", cfgs)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"garbage")
    train, calls = _refusing_once(ckpt, lambda configs, *a, **kw: [_fake_run(c)
                                                                   for c in configs])
    monkeypatch.setattr(lockstep, "train_configs", train)
    with pytest.warns(UserWarning, match="set aside"):
        done = lockstep._compute_group("x", cfgs, progress=False)
    assert done == cfgs and all(results.find_run(c, "x") for c in cfgs)
    assert len(list(ckpt.parent.glob(f"{ckpt.name}.refused-*"))) == 1


# ---- a kill between saving the results and deleting the checkpoint ----------------------


def test_checkpoint_left_by_a_kill_after_saving_is_removed_on_next_load(store):
    cfg = RunConfig(**TINY)
    results.save_run(_fake_run(cfg), "x")
    ckpt = results.checkpoint_path("x", results.run_stem(cfg))
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights of a finished run")
    (ckpt.parent / f".{ckpt.name}.123-abcd.tmp").write_bytes(b"half")
    assert results.find_run(cfg, "x") is not None
    assert not ckpt.exists() and not list(ckpt.parent.glob(".*.tmp"))
    assert results.run_cached(cfg, "x") is not None


def test_group_checkpoint_left_after_saving_is_removed(store):
    cfgs = [RunConfig(**{**TINY, "seed": s}) for s in range(2)]
    for c in cfgs:
        results.save_run(_fake_run(c), "x")
    ckpt = lockstep._checkpoint_path("x", cfgs)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    ckpt.with_suffix(".json").write_text(
        '{"stems": [%s]}' % ", ".join(f'"{results.run_stem(c)}"' for c in cfgs))
    lockstep.run_cached_many(cfgs, "x", progress=False)
    assert not ckpt.exists() and not ckpt.with_suffix(".json").exists()


# ---- full file systems -------------------------------------------------------------------


def test_full_results_folder_is_found_before_training(store, monkeypatch):
    cfg = RunConfig(**TINY)
    monkeypatch.setattr(files, "free_bytes", lambda folder: 100)

    def no_training(*a, **kw):
        pytest.fail("trained although the results could not be saved")

    monkeypatch.setattr(results, "train_run", no_training)
    results_dir, _ = store
    with pytest.raises(OSError, match=f"results folder {results_dir / 'x'} has 100 B free"):
        results.run_cached(cfg, "x", progress=False)


def test_full_cache_names_the_checkpoint(tiny_docs, tmp_path, monkeypatch):
    """torch reports a full disk as a bare "enforce fail"; the save says which file."""
    ids, labels, mask = tiny_docs
    ckpt = tmp_path / "cache" / "run.pt"

    def full(obj, f, *a, **kw):
        f.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 "
                           "vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=f"could not write checkpoint {ckpt}: the file "
                                      "system holding it is full"):
        trainer.train(make_tiny_model(), ids, labels, cyclic(), steps_per_doc=M,
                      checkpoint=ckpt, checkpoint_every_s=0, progress=False)
    assert list(ckpt.parent.iterdir()) == []  # no temporary left behind


def test_no_space_while_writing_names_the_file(tmp_path):
    target = tmp_path / "a.npz"

    def write(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"could not write results file {target}: the file "
                                      "system holding it is full"):
        files.atomic_write(target, write, what="results file")
    assert list(tmp_path.iterdir()) == []


# ---- corpus files that are not text -------------------------------------------------------


@pytest.mark.parametrize("name, content, why", [
    ("bin.txt", b"\x00\x01\x02binary\x00" * 50, "looks binary"),
    ("latin.txt", "caf\u00e9 au lait ".encode("latin-1") * 50, "is not UTF-8 text"),
    ("docs.jsonl", b'{"text": "fine"}\n{"text": 12}\n', "line 2: 'text' is a int"),
    ("docs.jsonl", b'{"text": "fine"}\n[1, 2]\n', "line 2: a JSON list"),
    ("docs.jsonl", b'{"text": "fine"}\n{"text": nope}\n', "line 2: not JSON"),
])
def test_bad_corpus_files_are_named(tmp_path, name, content, why):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / name).write_bytes(content)
    with pytest.raises(ValueError, match=f"corpus file {folder / name}.*{why}"):
        data.load_texts(str(folder))


def test_utf8_corpus_reads_as_before(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_bytes("line one\r\nline two é\rthree\n".encode())
    assert data.load_texts(str(folder)) == [("a.txt", (folder / "a.txt").read_text())]


# ---- two writers sharing a results folder, each with its own cache ------------------------


def test_two_writers_with_their_own_caches_share_the_lock(store, tmp_path, monkeypatch):
    """Writer A holds the run's lock and saves the run; writer B, with another cache,
    waits for the lock and then loads A's run instead of training it too."""
    cfg = RunConfig(**TINY)
    stem = results.run_stem(cfg)
    lock_a = results.lock_path("x", stem)
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache-b"))
    assert results.lock_path("x", stem) == lock_a  # next to the results, not the cache
    holding = threading.Event()

    def writer_a():
        with files.lock(lock_a, "A"):
            holding.set()
            time.sleep(1.0)
            results.save_run(_fake_run(cfg), "x")

    def no_training(*a, **kw):
        pytest.fail("writer B trained a run writer A was computing")

    monkeypatch.setattr(results, "train_run", no_training)
    a = threading.Thread(target=writer_a)
    a.start()
    holding.wait(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = results.run_cached(cfg, "x", progress=False)
    a.join()
    assert run.meta["wall_s"] == 1.0  # A's run


# ---- a killed Ray driver ----------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.add(k)
            todo.append(k)
    return out


# ---- one store: vision runs write through it too -----------------------------------------


def test_vision_runs_use_the_stores_unique_temporaries(store, monkeypatch):
    from anticip_lib import vision

    cfg = vision.VisionConfig(n_docs=2, n_epochs=1, steps_per_doc=1)
    seen = []
    real = files._tmp_name
    monkeypatch.setattr(files, "_tmp_name", lambda *a: seen.append(real(*a)) or seen[-1])
    monkeypatch.setattr(vision.runs, "provenance", lambda: {"git_commit": None})
    run = Run(cfg, np.full((3, 2), 1.5), np.full(2, 1.5), np.array([0, 1]), {})
    vision.save_run(run, "v")
    vision.save_run(run, "v")
    assert len(seen) == 4 and len(set(seen)) == 4
    assert all(str(os.getpid()) in p.name for p in seen)
    assert vision.load_run(cfg, "v").eval_loss.tolist() == run.eval_loss.tolist()
