"""K runs in lockstep (anticip_lib.lockstep.train_many) against `trainer.train` run by
run: SGD, Adam, Adam-reset; per-run documents, padding and shuffled orders; both
engines; resume after a kill; argument checks; the sweep's --lockstep K."""

import numpy as np
import pytest
import torch
from torch import nn

from anticip_lib import batched, lockstep, models, orders, trainer

K, T, C, M, E = 3, 4, 24, 3, 2
# Adam-reset's first step of every episode moves each weight by ~lr whatever the size
# of its gradient, so rounding differences (another summation order, another thread
# count) are amplified: at lr 1e-3 on these 4 documents `train` itself differs by
# 2e-5 between 1 and 2 threads and lockstep by up to 1e-4 in the last episodes; at
# 3e-4 both stay at 1e-6. The tests use 3e-4, so a pass is not a matter of luck.
LR = {"sgd": 0.1, "adam": 3e-4, "adam_reset": 3e-4}
TOL = 1e-4  # issue #9: ≤ 1e-4 on eval_loss in fp32


def tiny_gpt(seed):
    """The registry's tiny-gpt shape (GPT-NeoX, width 64, 2 layers, byte vocab 257)."""
    return models.load_model("tiny-gpt", init="pythia", seed=seed)[0]


@pytest.fixture(scope="module")
def docs():
    """K runs' own documents (K, T, C); some padded, differently in each run."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 256, (K, T, C), generator=g)
    lengths = torch.tensor([[C, C - 5, C, 10], [C, C, C, C], [7, C, C - 1, C]])
    mask = (torch.arange(C)[None, None] < lengths[..., None]).long()
    # one document with a hole in the middle: with right padding alone a causal model
    # gives the same losses whether or not the mask is applied, so this is the one
    # that checks that the mask reaches attention
    mask[2, 3, 5:9] = 0
    ids = ids.masked_fill(mask == 0, 256)  # the byte tokenizer's pad id
    labels = ids.masked_fill(mask == 0, -100)
    ords = np.stack([orders.cyclic(T, E), orders.shuffled(T, E, seed=3),
                     orders.shuffled(T, E, seed=4)])
    assert len({tuple(o) for o in ords}) == K  # every run its own order
    return ids, labels, mask, ords


def _alone(docs, optimizer, **kw):
    """The independent reference: `trainer.train`, one run after another."""
    ids, labels, mask, ords = docs
    out = []
    for r in range(K):
        model = tiny_gpt(r)
        run = trainer.train(model, ids[r], labels[r], ords[r], steps_per_doc=M,
                            optimizer=optimizer, lr=LR[optimizer], attention_mask=mask[r],
                            progress=False, **kw)
        out.append((run, model))
    return out


def _lockstep(docs, optimizer, **kw):
    ids, labels, mask, ords = docs
    ms = [tiny_gpt(r) for r in range(K)]
    runs = lockstep.train_many(ms, ids, labels, ords, steps_per_doc=M,
                               optimizer=optimizer, lr=LR[optimizer],
                               attention_mask=mask, progress=False, **kw)
    return runs, ms


@pytest.fixture(scope="module")
def alone(docs):
    return {opt: _alone(docs, opt) for opt in LR}


_QUICK = {("sgd", "neox", False), ("adam", "neox", True), ("adam_reset", "vmap", False)}


@pytest.mark.parametrize("optimizer, engine, overlap", [
    pytest.param(o, e, v, marks=() if (o, e, v) in _QUICK else pytest.mark.slow)
    for o in ("sgd", "adam", "adam_reset")
    for e, v in (("neox", False), ("neox", True), ("vmap", False))])
def test_equals_train_run_by_run(docs, alone, optimizer, engine, overlap):
    threads = torch.get_num_threads()
    runs, ms = _lockstep(docs, optimizer, engine=engine, overlap_eval=overlap)
    assert torch.get_num_threads() == threads  # restored after the overlap
    assert len(runs) == K
    for r, (run, (ref, ref_model)) in enumerate(zip(runs, alone[optimizer])):
        assert run.eval_loss.shape == ref.eval_loss.shape == (E * T + 1, T)
        np.testing.assert_allclose(run.eval_loss, ref.eval_loss, rtol=0, atol=TOL,
                                   err_msg=f"run {r}")
        np.testing.assert_allclose(run.train_loss, ref.train_loss, rtol=0, atol=TOL,
                                   err_msg=f"run {r}")
        assert np.array_equal(run.order, ref.order)
        # trained in place, as `train` does. Only under SGD: Adam moves the key bias
        # of the non-rotary dimensions, whose true gradient is 0 (softmax ignores a
        # shift shared by all keys), by ±lr per step on the sign of rounding noise, in
        # `train` too; those weights differ between any two summation orders and do
        # not change the function (eval_loss above).
        if optimizer == "sgd":
            for (name, p), (_, q) in zip(ms[r].named_parameters(),
                                         ref_model.named_parameters()):
                torch.testing.assert_close(p, q, rtol=0, atol=1e-5, msg=name)
        assert run.meta["lockstep"] == K and run.meta["precision"] == "fp32"
        assert run.meta["lockstep_engine"] == engine
        assert run.meta["overlap_eval"] is overlap


def test_overlapped_evaluation_reads_its_episodes_weights(docs, alone, monkeypatch):
    """An evaluation that is still running while the next episode trains reads the
    weights after its own episode (a copy), not the ones being trained: slowed down
    so that training moves on meanwhile, it gives the same rows as `train`."""
    import time

    slow = batched._Neox.eval_nll

    def eval_nll(self, *args, **kwargs):
        time.sleep(0.05)  # a few training steps of the next episode happen meanwhile
        return slow(self, *args, **kwargs)

    monkeypatch.setattr(batched._Neox, "eval_nll", eval_nll)
    runs, _ = _lockstep(docs, "sgd", overlap_eval=True)
    for run, (ref, _) in zip(runs, alone["sgd"]):
        np.testing.assert_allclose(run.eval_loss, ref.eval_loss, rtol=0, atol=TOL)


def test_overlap_needs_the_neox_engine(docs):
    ids, labels, mask, ords = docs
    with pytest.raises(ValueError, match="overlap_eval=True needs the 'neox' engine"):
        lockstep.train_many([tiny_gpt(0)], ids[:1], labels[:1], ords[:1],
                            steps_per_doc=1, engine="vmap", overlap_eval=True,
                            progress=False)


def test_runs_do_not_mix(docs, alone):
    """A run's result does not depend on its companions: run 0 trained with two other
    runs equals run 0 trained alone in lockstep (K=1), and equals `train`."""
    ids, labels, mask, ords = docs
    one = lockstep.train_many([tiny_gpt(0)], ids[:1], labels[:1], ords[:1],
                              steps_per_doc=M, optimizer="adam_reset", lr=LR["adam_reset"],
                              attention_mask=mask[:1], progress=False)[0]
    ref = alone["adam_reset"][0][0]
    np.testing.assert_allclose(one.eval_loss, ref.eval_loss, rtol=0, atol=TOL)


def test_kept_adam_and_reset_adam_differ(alone):
    """The Adam-reset comparison above is not vacuous: resetting changes the result."""
    assert LR["adam"] == LR["adam_reset"]
    a, b = alone["adam"][0][0].eval_loss, alone["adam_reset"][0][0].eval_loss
    assert np.array_equal(a[:2], b[:2])  # the first episode is the same
    assert np.abs(a - b).max() > 10 * TOL


def test_blocked_evaluation_equals_lm_loss(docs):
    """The evaluation's log-sum-exp over vocabulary blocks (17 blocks of 16 columns
    here) equals lm_loss on the full logits, padded documents included."""
    ids, labels, mask, _ = docs
    ms = [tiny_gpt(r) for r in range(K)]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in ms])
              for n, _ in ms[0].named_parameters()}
    net = batched._Neox(ms[0], params)
    got = net.eval_nll(ids, labels, batched._mask4(mask), block_bytes=1)
    for r, m in enumerate(ms):
        with torch.no_grad():
            ref = trainer.lm_loss(m.eval(), ids[r], labels[r], mask[r])
        torch.testing.assert_close(got[r], ref, rtol=0, atol=1e-5)


class _Classifier(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def _ce(model, x, y, mask=None):  # per-"document" loss of a batch of labelled points
    logits = model(x)  # (n, P, 3)
    return nn.functional.cross_entropy(logits.transpose(1, 2), y,
                                       reduction="none").mean(dim=1)


def test_vmap_engine_any_model_and_loss():
    """A non-LM model with its own loss_fn: the vmap engine, equal to `train`."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, T, 5, 6, generator=g)  # (K=2, T, P points, features)
    y = torch.randint(0, 3, (2, T, 5), generator=g)
    ords = np.stack([orders.cyclic(T, E), orders.shuffled(T, E, seed=1)])
    runs = lockstep.train_many([_Classifier(0), _Classifier(1)], x, y, ords,
                               steps_per_doc=M, optimizer="adam", lr=1e-2, loss_fn=_ce,
                               progress=False)
    for r in range(2):
        ref = trainer.train(_Classifier(r), x[r], y[r], ords[r], steps_per_doc=M,
                            optimizer="adam", lr=1e-2, loss_fn=_ce, progress=False)
        np.testing.assert_allclose(runs[r].eval_loss, ref.eval_loss, rtol=0, atol=TOL)
        assert runs[r].meta["lockstep_engine"] == "vmap"
    with pytest.raises(ValueError, match="engine='neox'"):
        lockstep.train_many([_Classifier(0)], x[:1], y[:1], ords[:1], steps_per_doc=1,
                            loss_fn=_ce, engine="neox", progress=False)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("optimizer, overlap", [
    pytest.param(o, v, marks=() if (o, v) in {("sgd", False), ("adam", True)}
                 else pytest.mark.slow)
    for o in ("sgd", "adam", "adam_reset") for v in (False, True)])
def test_kill_and_resume_gives_same_result(docs, tmp_path, optimizer, overlap):
    full, _ = _lockstep(docs, optimizer, overlap_eval=overlap)
    ckpt = tmp_path / "group.pt"

    def kill_at_5(k, model):  # called once row k of eval_loss is filled
        if k == 5:
            raise _Killed

    with pytest.raises(_Killed):  # a checkpoint after every episode
        _lockstep(docs, optimizer, checkpoint=ckpt, on_episode_end=kill_at_5,
                  overlap_eval=overlap, checkpoint_every_s=0)
    assert ckpt.exists()
    resumed, _ = _lockstep(docs, optimizer, checkpoint=ckpt, overlap_eval=overlap,
                           checkpoint_every_s=0)
    for a, b in zip(resumed, full):
        # with overlap, row 5 is evaluated while episode 6 trains: the kill comes
        # after episode 5's checkpoint (weights after 5, row 5 not yet filled), and
        # the resume evaluates row 5 from those weights before training on
        assert a.meta["resumed_at"] == (5 if overlap else 4)
        assert a.meta["overlap_eval"] is overlap
        assert np.array_equal(a.eval_loss, b.eval_loss)
        assert np.array_equal(a.train_loss, b.train_loss)
    assert not ckpt.exists()  # removed once the runs are complete


def test_checkpoint_every_seconds(docs, tmp_path):
    """checkpoint_every_s: no write until that long has passed or an epoch ends (here:
    never before the kill in epoch 1), so the next call starts from episode 0."""
    ckpt = tmp_path / "group.pt"
    seen = []

    def kill_at_3(k, model):
        seen.append(ckpt.exists())
        if k == 3:
            raise _Killed

    with pytest.raises(_Killed):
        _lockstep(docs, "sgd", checkpoint=ckpt, on_episode_end=kill_at_3,
                  checkpoint_every_s=1e9, overlap_eval=False)
    assert not any(seen) and not ckpt.exists()
    runs, _ = _lockstep(docs, "sgd", checkpoint=ckpt, checkpoint_every_s=1e9)
    assert runs[0].meta["resumed_at"] == 0 and not ckpt.exists()


def test_checkpoint_of_other_runs_is_refused(docs, tmp_path):
    ckpt = tmp_path / "group.pt"

    def kill(k, model):
        if k == 2:
            raise _Killed

    with pytest.raises(_Killed):
        _lockstep(docs, "sgd", checkpoint=ckpt, on_episode_end=kill, checkpoint_every_s=0)
    ids, labels, mask, ords = docs
    with pytest.raises(trainer.CheckpointError, match="different run"):  # other orders
        lockstep.train_many([tiny_gpt(r) for r in range(K)], ids, labels, ords[::-1],
                            steps_per_doc=M, lr=LR["sgd"], attention_mask=mask,
                            checkpoint=ckpt, progress=False)
    with pytest.raises(trainer.CheckpointError, match="different run"):  # other weights
        lockstep.train_many([tiny_gpt(r + 1) for r in range(K)], ids, labels, ords,
                            steps_per_doc=M, lr=LR["sgd"], attention_mask=mask,
                            checkpoint=ckpt, progress=False)


class _Payload:
    ran = False

    def __reduce__(self):
        return (_Payload._boom, ())

    @staticmethod
    def _boom():
        _Payload.ran = True
        return "boom"


def test_checkpoint_never_executes_a_pickle_payload(docs, tmp_path):
    ckpt = tmp_path / "group.pt"
    torch.save({"fingerprint": _Payload()}, ckpt)
    with pytest.raises(trainer.CheckpointError, match=f"checkpoint {ckpt} cannot be read"):
        _lockstep(docs, "sgd", checkpoint=ckpt)
    assert not _Payload.ran


def test_bad_arguments_are_named(docs):
    ids, labels, mask, ords = docs
    ms = [tiny_gpt(r) for r in range(K)]
    kw = dict(steps_per_doc=1, progress=False)
    with pytest.raises(ValueError, match="inputs must be a tensor \\(K=2"):
        lockstep.train_many(ms[:2], ids, labels, ords, **kw)
    with pytest.raises(ValueError, match="labels"):
        lockstep.train_many(ms, ids, labels[:, :2], ords, **kw)
    with pytest.raises(ValueError, match="orders must be \\(K=3"):
        lockstep.train_many(ms, ids, labels, ords[:2], **kw)
    with pytest.raises(ValueError, match="orders holds document indices"):
        lockstep.train_many(ms, ids, labels, ords + T, **kw)
    with pytest.raises(ValueError, match="attention_mask"):
        lockstep.train_many(ms, ids, labels, ords, attention_mask=mask[:, :, :5], **kw)
    with pytest.raises(ValueError, match="models\\[1\\]"):
        lockstep.train_many([ms[0], _Classifier(0), ms[2]], ids, labels, ords, **kw)
    with pytest.raises(ValueError, match="steps_per_doc"):
        lockstep.train_many(ms, ids, labels, ords, steps_per_doc=0)
    with pytest.raises(ValueError, match="optimizer"):
        lockstep.train_many(ms, ids, labels, ords, optimizer="rmsprop", **kw)
    with pytest.raises(ValueError, match="precision"):
        lockstep.train_many(ms, ids, labels, ords, precision="fp16", **kw)


def test_bf16_is_recorded_and_close(docs):
    fp32, _ = _lockstep(docs, "adam_reset")
    bf16, _ = _lockstep(docs, "adam_reset", precision="bf16")
    for a, b in zip(fp32, bf16):
        assert b.meta["precision"] == "bf16"
        diff = np.abs(a.eval_loss - b.eval_loss).max()
        assert 0 < diff < 0.1  # autocast really ran, and stayed close


# ---- sweep integration -----------------------------------------------------------------


def _sweep(tmp_path, name, monkeypatch, *extra):
    from anticip_lib import results, sweep

    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / name / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / name / "cache"))
    assert sweep.main(["01_phenomenon", "--preset", "smoke", *extra]) == 0
    return {results.run_stem(c): results.find_run(c, g.experiment)
            for g in __import__("anticip_lib").presets.groups("01_phenomenon", "smoke")
            for c in g.configs}


@pytest.mark.slow  # two smoke sweeps
def test_smoke_sweep_through_lockstep_equals_one_by_one(tmp_path, monkeypatch):
    plain = _sweep(tmp_path, "plain", monkeypatch)
    lock = _sweep(tmp_path, "lock", monkeypatch, "--lockstep", "4")
    assert plain.keys() == lock.keys() and len(plain) == 4
    for stem, run in lock.items():
        ref = plain[stem]
        assert run is not None and ref is not None, stem
        np.testing.assert_allclose(run.eval_loss, ref.eval_loss, rtol=0, atol=TOL,
                                   err_msg=stem)
        np.testing.assert_allclose(run.train_loss, ref.train_loss, rtol=0, atol=TOL)
        assert run.meta["lockstep"] == 4 and "lockstep" not in ref.meta
        assert run.meta["doc_ids"] == ref.meta["doc_ids"]
        assert run.meta["model_label"] == ref.meta["model_label"]
    # nothing left to do: a second lockstep sweep trains nothing
    again = _sweep(tmp_path, "lock", monkeypatch, "--lockstep", "4")
    assert all(again[s].meta["date"] == lock[s].meta["date"] for s in lock)


def test_groups_only_compatible_configs():
    from dataclasses import replace

    from anticip_lib.config import RunConfig

    base = RunConfig(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
                     context_len=16, steps_per_doc=2, n_epochs=1)
    cfgs = [replace(base, seed=s, order=o) for s in range(3) for o in ("cyclic", "shuffled")]
    other = replace(base, lr=2e-3)
    half = replace(base, precision="bf16")  # another run: never grouped with fp32
    items = [("a", c, False) for c in cfgs] + [("a", other, False), ("b", base, False),
                                               ("a", replace(base, seed=9), True),
                                               ("a", half, False)]
    groups = lockstep.plan_groups(items, k=4, budget=2**40)
    sizes = [(exp, len(g)) for exp, g in groups]
    assert sizes == [("a", 4), ("a", 2), ("a", 1), ("b", 1), ("a", 1)]
    assert groups[-1][1] == [half]
    for exp, g in groups:
        assert len({lockstep.group_key(c) for c in g}) == 1
    # a memory budget caps the group size
    tight = lockstep.bytes_per_run(base, 2 * 257 * 64 + 12 * 2 * 64 * 64, 257, 64, 2) * 2
    assert [len(g) for _, g in lockstep.plan_groups(items[:6], k=4, budget=tight)] == [2] * 3


def _smoke_configs():
    from anticip_lib import presets

    (g,) = presets.groups("01_phenomenon", "smoke")
    return g.experiment, list(g.configs)


def test_group_leaves_out_a_run_another_process_is_computing(tmp_path, monkeypatch):
    """A run whose `run_cached` lock is held elsewhere is not trained in the group."""
    import fcntl

    from anticip_lib import results

    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    exp, cfgs = _smoke_configs()
    trained = []

    def fake_train_configs(configs, *args, **kwargs):  # what the group trains
        trained.append(list(configs))
        n = configs[0].n_docs * configs[0].n_epochs
        return [trainer.Run(c, np.full((n + 1, c.n_docs), 1.0),
                            np.full(n * c.steps_per_doc, 1.0), np.arange(n) % c.n_docs,
                            {"lockstep": len(configs)}) for c in configs]

    monkeypatch.setattr(lockstep, "train_configs", fake_train_configs)
    lock = results.lock_path(exp, results.run_stem(cfgs[1]))  # next to the results
    with open(lock, "a+") as f:  # another open file: flock conflicts as across processes
        fcntl.flock(f, fcntl.LOCK_EX)
        done = lockstep._compute_group(exp, cfgs, progress=False)
    assert trained == [done]
    assert done == [cfgs[0]] + cfgs[2:]
    assert results.find_run(cfgs[1], exp) is None
    assert all(results.find_run(c, exp).meta["lockstep"] == 3 for c in done)


@pytest.mark.slow  # trains a smoke group twice
def test_killed_after_training_resaves_without_training(tmp_path, monkeypatch):
    """The group's checkpoint outlives a kill between training and saving, so the next
    call saves the runs from it (resumed at the last episode) instead of retraining."""
    from anticip_lib import results

    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    exp, cfgs = _smoke_configs()
    cfgs = cfgs[:2]

    def killed(run, experiment, record=None):
        raise _Killed

    with monkeypatch.context() as m:
        m.setattr(results, "save_run", killed)
        with pytest.raises(_Killed):
            lockstep._compute_group(exp, cfgs, progress=False)
    ckpt = lockstep._checkpoint_path(exp, cfgs)
    assert ckpt.exists()
    lockstep._compute_group(exp, cfgs, progress=False)
    n_episodes = cfgs[0].n_docs * cfgs[0].n_epochs
    for c in cfgs:
        assert results.find_run(c, exp).meta["resumed_at"] == n_episodes
    assert not ckpt.exists()


@pytest.mark.slow  # runs the benchmark script in a subprocess
@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the GPU benchmark")
def test_gpu_benchmark_script_runs_without_a_gpu(tmp_path):
    """tools/gpu_lockstep_bench.sh (prepared for a lent GPU) runs end to end here:
    it finds the benchmark, says CUDA is not available and writes its log."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "python3"  # the device machine's python3 is this venv's here
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    env = dict(os.environ, OUT=str(tmp_path / "out"),
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["bash", "tools/gpu_lockstep_bench.sh"], cwd=repo, env=env,
                   check=True, timeout=300, capture_output=True)
    log = (tmp_path / "out" / "lockstep_gpu.log").read_text()
    assert "lockstep benchmark:" in log and "4. CUDA: not available" in log
    assert "exit status 0" in log


@pytest.mark.slow  # four RunConfig runs
def test_train_configs_trains_at_the_configs_precision(docs):
    """bf16 configs train in bf16 in lockstep (meta says so; the losses differ from the
    fp32 configs' by more than fp32 rounding and less than bf16's precision)."""
    from dataclasses import replace

    from anticip_lib.config import RunConfig

    base = RunConfig(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
                     context_len=16, steps_per_doc=2, n_epochs=2, optimizer="sgd",
                     lr=0.1)
    cfgs = [replace(base, seed=s) for s in range(2)]
    fp32 = lockstep.train_configs(cfgs, progress=False)
    bf16 = lockstep.train_configs([replace(c, precision="bf16") for c in cfgs],
                                  progress=False)
    for a, b in zip(fp32, bf16):
        assert a.meta["precision"] == "fp32" and b.meta["precision"] == "bf16"
        assert b.config.precision == "bf16"
        assert 1e-4 < np.abs(a.eval_loss - b.eval_loss).max() < 0.05
