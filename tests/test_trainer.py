"""The training loop: shapes, determinism, resume after a kill, and equality with the
official loop's way of doing things (tests/reference_loop.py)."""

import pickle

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from anticip_lib import RunConfig, data, models, orders, trainer
from reference_loop import reference_train

T, C, M, E = 4, 24, 3, 2


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )
    return GPTNeoXForCausalLM(cfg)


@pytest.fixture
def docs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (T, C), generator=g)
    lengths = torch.tensor([C, C - 5, C, 10])  # two documents shorter than C: padded
    mask = (torch.arange(C)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    return ids, labels, mask


def _train_order(docs, order, **kw):
    ids, labels, mask = docs
    kw = dict(steps_per_doc=M, lr=0.05, attention_mask=mask, progress=False) | kw
    return trainer.train(tiny_model(), ids, labels, order, **kw)


def _train(docs, **kw):
    return _train_order(docs, orders.cyclic(T, E), **kw)


def test_shapes_and_row_zero(docs):
    run = _train(docs)
    assert run.eval_loss.shape == (E * T + 1, T)
    assert run.train_loss.shape == (E * T * M,)
    assert np.isfinite(run.eval_loss).all() and np.isfinite(run.train_loss).all()
    # the first training loss of an episode is the loss before it: L[k-1, d(k)]
    first = run.train_loss[::M]
    np.testing.assert_allclose(first, run.eval_loss[np.arange(E * T), run.order], rtol=1e-5)


def test_trained_document_loss_drops(docs):
    run = _train(docs)
    k = np.arange(1, E * T + 1)
    assert (run.eval_loss[k, run.order] < run.eval_loss[k - 1, run.order]).all()


def test_same_seed_identical(docs):
    a, b = _train(docs), _train(docs)
    assert np.array_equal(a.eval_loss, b.eval_loss)
    assert np.array_equal(a.train_loss, b.train_loss)


def test_eval_chunking_does_not_change_losses(docs):
    a, b = _train(docs, eval_batch=1), _train(docs, eval_batch=3)
    np.testing.assert_allclose(a.eval_loss, b.eval_loss, rtol=1e-5, atol=1e-6)


def test_matches_official_loop(docs):
    """Batched, masked evaluation == per-document batch-1 evaluation without padding."""
    ids, labels, mask = docs
    ref_eval, ref_train = reference_train(
        tiny_model(), ids, labels, mask, orders.cyclic(T, E), M, lr=0.05
    )
    run = _train(docs)
    np.testing.assert_allclose(run.eval_loss, ref_eval, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run.train_loss, ref_train, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adam_reset"])
def test_kill_and_resume_gives_same_result(docs, tmp_path, optimizer):
    full = _train(docs, optimizer=optimizer, lr=1e-2)
    ckpt = tmp_path / "run.pt"

    class Killed(Exception):
        pass

    def kill_at_5(k, model):
        if k == 5:
            raise Killed

    with pytest.raises(Killed):
        _train(docs, optimizer=optimizer, lr=1e-2, checkpoint=ckpt, on_episode_end=kill_at_5)
    assert ckpt.exists()
    resumed = _train(docs, optimizer=optimizer, lr=1e-2, checkpoint=ckpt)
    assert resumed.meta["resumed_at"] == 4
    assert np.array_equal(resumed.eval_loss, full.eval_loss)
    assert np.array_equal(resumed.train_loss, full.train_loss)
    assert not ckpt.exists()  # removed once the run is complete


def test_checkpoint_of_another_run_is_refused(docs, tmp_path):
    ckpt = tmp_path / "run.pt"

    def kill(k, model):
        if k == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(docs, checkpoint=ckpt, checkpoint_every_s=0, on_episode_end=kill)
    with pytest.raises(RuntimeError, match="different run"):
        _train(docs, lr=0.01, checkpoint=ckpt)


def test_adam_reset_differs_from_kept_adam(docs):
    a = _train(docs, optimizer="adam", lr=1e-2)
    b = _train(docs, optimizer="adam_reset", lr=1e-2)
    assert np.array_equal(a.eval_loss[:2], b.eval_loss[:2])  # first episode equal
    assert not np.allclose(a.eval_loss, b.eval_loss)


def test_cosine_schedule_decays_to_zero():
    assert trainer._lr_at(0, 100, 1e-3, "cosine") == pytest.approx(1e-3)
    assert trainer._lr_at(50, 100, 1e-3, "cosine") == pytest.approx(5e-4)
    assert trainer._lr_at(100, 100, 1e-3, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert trainer._lr_at(37, 100, 1e-3, "constant") == 1e-3


def test_hook_sees_every_episode(docs):
    seen = []
    _train(docs, on_episode_end=lambda k, m: seen.append(k))
    assert seen == list(range(E * T + 1))


def test_bad_order_rejected(docs):
    ids, labels, mask = docs
    with pytest.raises(ValueError, match="order"):
        trainer.train(tiny_model(), ids, labels, np.array([0, 9]), steps_per_doc=1)
    with pytest.raises(ValueError, match="steps_per_doc"):
        trainer.train(tiny_model(), ids, labels, orders.cyclic(T, 1), steps_per_doc=0)


# ---- checkpoints: safe format, fingerprint, interval -----------------------------------

def _killed_at(docs, ckpt, k_kill, **kw):
    """Run until episode k_kill's hook, then 'kill' the process (an exception)."""

    class Killed(Exception):
        pass

    def kill(k, model):
        if k == k_kill:
            raise Killed

    with pytest.raises(Killed):
        _train(docs, checkpoint=ckpt, on_episode_end=kill, **kw)


class Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_checkpoint_with_pickle_payload_never_runs(docs, tmp_path, how):
    marker, ckpt = tmp_path / "pwned", tmp_path / "run.pt"
    state = {"format": trainer.CHECKPOINT_FORMAT, "fingerprint": "x",
             "model": Payload(marker)}
    if how == "torch.save":
        torch.save(state, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(state))
    with pytest.raises(trainer.CheckpointError) as err:
        _train(docs, checkpoint=ckpt)
    assert not marker.exists()  # the payload never ran
    assert str(ckpt) in str(err.value) and "Delete it" in str(err.value)
    assert ckpt.exists()  # left for the user to inspect and delete
    # the payload is live: an unrestricted load would have run it
    torch.load(ckpt, weights_only=False) if how == "torch.save" else pickle.loads(ckpt.read_bytes())
    assert marker.exists()


def test_truncated_checkpoint_names_file_and_remedy(docs, tmp_path):
    ckpt = tmp_path / "run.pt"
    _killed_at(docs, ckpt, 3, checkpoint_every_s=0)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(trainer.CheckpointError, match="Delete it") as err:
        _train(docs, checkpoint=ckpt)
    assert str(ckpt) in str(err.value) and "damaged" in str(err.value)
    ckpt.unlink()  # the remedy works
    assert np.isfinite(_train(docs, checkpoint=ckpt).eval_loss).all()


def test_checkpoint_of_other_initial_weights_is_refused(docs, tmp_path):
    """Same data, order and settings, other initial weights (another init or seed)."""
    ids, labels, mask = docs
    ckpt = tmp_path / "run.pt"
    _killed_at(docs, ckpt, 3, checkpoint_every_s=0)
    with pytest.raises(trainer.CheckpointError, match="different run"):
        trainer.train(tiny_model(seed=1), ids, labels, orders.cyclic(T, E), steps_per_doc=M,
                      lr=0.05, attention_mask=mask, progress=False, checkpoint=ckpt)


def test_checkpoint_of_other_trained_parameters_is_refused(docs, tmp_path):
    ids, labels, mask = docs
    ckpt = tmp_path / "run.pt"
    _killed_at(docs, ckpt, 3, checkpoint_every_s=0)
    model = tiny_model()
    model.gpt_neox.embed_in.weight.requires_grad_(False)  # a frozen block (Fig. 5d)
    with pytest.raises(trainer.CheckpointError, match="different run"):
        trainer.train(model, ids, labels, orders.cyclic(T, E), steps_per_doc=M, lr=0.05,
                      attention_mask=mask, progress=False, checkpoint=ckpt)


def test_checkpoint_of_other_mask_or_loss_is_refused(docs, tmp_path):
    ckpt = tmp_path / "run.pt"
    _killed_at(docs, ckpt, 3, checkpoint_every_s=0)
    with pytest.raises(trainer.CheckpointError, match="different run"):
        _train(docs, checkpoint=ckpt, attention_mask=torch.ones(T, C, dtype=torch.long))

    def other_loss(model, x, y, m=None):
        return trainer.lm_loss(model, x, y, m)

    with pytest.raises(trainer.CheckpointError, match="different run"):
        _train(docs, checkpoint=ckpt, loss_fn=other_loss)


TINY = dict(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
            context_len=16, steps_per_doc=2, n_epochs=2)


def test_train_run_refuses_checkpoint_of_another_init(tmp_path):
    """Issue 7, fault 2: init='normal' resumed a checkpoint made with init='pythia'."""
    ckpt = tmp_path / "run.pt"

    def kill(k, model):
        if k == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.train_run(RunConfig(**TINY), checkpoint=ckpt, checkpoint_every_s=0,
                          on_episode_end=kill, progress=False)
    assert ckpt.exists()
    with pytest.raises(trainer.CheckpointError, match="different run"):
        trainer.train_run(RunConfig(**{**TINY, "init": "normal"}), checkpoint=ckpt,
                          progress=False)


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock that the tests move: 100 s per episode (see `tick`)."""
    now = [0.0]
    monkeypatch.setattr(trainer, "_clock", lambda: now[0])

    def tick(k, model):
        now[0] += 100.0

    return tick


@pytest.fixture
def writes(monkeypatch):
    """The episode count `done` of every checkpoint written."""
    done = []
    real = trainer._save_atomic

    def counting(obj, path):
        done.append(obj["done"])
        real(obj, path)

    monkeypatch.setattr(trainer, "_save_atomic", counting)
    return done


def test_checkpoints_on_interval_and_at_epoch_ends(docs, tmp_path, fake_clock, writes):
    # T=4, E=3: 12 episodes, 100 s each, interval 250 s. Hand-worked: the last write is
    # at t=0; k=3 (t=300) is due by time, k=4 and k=8 end epochs, k=7 (t=700, last
    # write t=400) and k=11 (t=1100, last 800) by time; k=12 ends the run, whose
    # checkpoint is deleted anyway.
    run = _train_order(docs, orders.cyclic(T, 3), checkpoint=tmp_path / "run.pt",
                       checkpoint_every_s=250, on_episode_end=fake_clock)
    assert writes == [3, 4, 7, 8, 11]
    assert run.eval_loss.shape == (3 * T + 1, T)
    writes.clear()
    _train_order(docs, orders.cyclic(T, 3), checkpoint=tmp_path / "run.pt",
                 checkpoint_every_s=250, keep_checkpoint=True, on_episode_end=fake_clock)
    assert writes == [3, 4, 7, 8, 11, 12]  # kept: also written at the very end
    assert (tmp_path / "run.pt").exists()


def test_few_checkpoints_and_exact_resume_after_kill(docs, tmp_path, writes):
    """Issue 11: far fewer checkpoints than episodes, and resume stays exact."""
    order = orders.cyclic(T, 4)  # 16 episodes
    full = _train_order(docs, order, optimizer="adam", lr=1e-2)
    ckpt = tmp_path / "run.pt"

    class Killed(Exception):
        pass

    def kill(k, model):
        if k == 7:
            raise Killed

    with pytest.raises(Killed):  # default interval (600 s): only epoch ends here
        _train_order(docs, order, optimizer="adam", lr=1e-2, checkpoint=ckpt,
                     on_episode_end=kill)
    assert writes == [4]
    resumed = _train_order(docs, order, optimizer="adam", lr=1e-2, checkpoint=ckpt)
    assert writes == [4, 8, 12]  # 3 writes for 16 episodes; none at the end
    assert resumed.meta["resumed_at"] == 4
    assert np.array_equal(resumed.eval_loss, full.eval_loss)
    assert np.array_equal(resumed.train_loss, full.train_loss)
    assert not ckpt.exists()


def test_complete_kept_checkpoint_finishes_without_training(docs, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.pt"
    first = _train(docs, checkpoint=ckpt, keep_checkpoint=True)
    assert ckpt.exists()

    def no_eval(*args, **kwargs):
        pytest.fail("a complete checkpoint was trained or evaluated again")

    monkeypatch.setattr(trainer, "evaluate", no_eval)
    again = _train(docs, checkpoint=ckpt)
    assert again.meta["resumed_at"] == E * T
    assert np.array_equal(again.eval_loss, first.eval_loss)
    assert np.array_equal(again.train_loss, first.train_loss)
    assert again.meta["wall_s"] >= first.meta["wall_s"] * 0.5  # the training's, kept
    assert not ckpt.exists()


def test_missing_checkpoint_folder_is_created_and_unwritable_one_named(docs, tmp_path):
    ckpt = tmp_path / "new" / "folder" / "run.pt"
    _train(docs, checkpoint=ckpt)  # created, not a failure after the first episode
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="checkpoint folder .*a-file"):
        _train(docs, checkpoint=blocker / "sub" / "run.pt")


def test_bad_interval_rejected(docs):
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        _train(docs, checkpoint_every_s=-1)


# ---- divergence -------------------------------------------------------------------------

def test_divergence_stops_training(docs):
    """Training step 7 (episode 3, its 2nd step; M=3) sees an infinite loss: hand-worked,
    steps 0..6 are taken, step 7 is recorded (inf) but not taken, episode 3 is still
    evaluated, and nothing after it is computed."""
    calls = {"train": 0, "eval": 0}

    def loss_fn(model, x, y, m=None):
        loss = trainer.lm_loss(model, x, y, m)
        if torch.is_inference_mode_enabled():
            calls["eval"] += 1
            return loss
        calls["train"] += 1
        return loss * float("inf") if calls["train"] == 8 else loss

    run = _train(docs, loss_fn=loss_fn, eval_batch=T)
    assert calls == {"train": 8, "eval": 4}  # rows 0..3, one batch each
    assert np.isfinite(run.train_loss[:7]).all() and np.isposinf(run.train_loss[7])
    assert np.isnan(run.train_loss[8:]).all()
    assert np.isfinite(run.eval_loss[:4]).all() and np.isnan(run.eval_loss[4:]).all()
    assert run.meta["diverged_at"] == 3
    # episodes 1, 2 and the first step of 3 equal an undisturbed run
    ok = _train(docs, eval_batch=T)
    np.testing.assert_array_equal(run.train_loss[:7], ok.train_loss[:7])
    np.testing.assert_array_equal(run.eval_loss[:3], ok.eval_loss[:3])


def test_diverged_checkpoint_resumes_as_finished(docs, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.pt"
    n = [0]

    def loss_fn(model, x, y, m=None):
        loss = trainer.lm_loss(model, x, y, m)
        if not torch.is_inference_mode_enabled():
            n[0] += 1
            if n[0] >= 5:
                return loss * float("nan")
        return loss

    first = _train(docs, loss_fn=loss_fn, checkpoint=ckpt, keep_checkpoint=True)
    assert first.meta["diverged_at"] == 2 and ckpt.exists()
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: pytest.fail("trained again"))
    again = _train(docs, loss_fn=loss_fn, checkpoint=ckpt)
    assert again.meta["diverged_at"] == 2
    np.testing.assert_array_equal(again.eval_loss, first.eval_loss)


# ---- everything checked before any weights load -----------------------------------------

@pytest.fixture
def no_weights(monkeypatch):
    def boom(*args, **kwargs):
        pytest.fail("weights were loaded before the bad setting was reported")

    monkeypatch.setattr(models, "load_model", boom)
    monkeypatch.setattr(trainer, "train", boom)


def _folder_corpus(path, texts):
    path.mkdir()
    for i, t in enumerate(texts):
        (path / f"d{i}.txt").write_text(t)
    return str(path)


def test_empty_corpus_folder_fails_before_weights(tmp_path, no_weights):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.jsonl or \\*.txt"):
        trainer.train_run(RunConfig(**{**TINY, "corpus": str(tmp_path / "empty")}))


def test_too_few_documents_fail_before_weights(tmp_path, no_weights):
    corpus = _folder_corpus(tmp_path / "c", ["a long enough text " * 5] * 2 + ["   "])
    with pytest.raises(ValueError, match="n_docs=3.*only 2 non-empty"):
        trainer.train_run(RunConfig(**{**TINY, "corpus": corpus}))


def test_too_short_documents_fail_before_weights(tmp_path, no_weights):
    # C=16 tokens need >= 14 bytes: two of the three documents are shorter
    corpus = _folder_corpus(tmp_path / "c", ["x" * 14, "y" * 13, "z" * 5])
    with pytest.raises(ValueError, match="only 1 documents long enough for 16 tokens"):
        trainer.train_run(RunConfig(**{**TINY, "corpus": corpus}))


def test_short_documents_with_doc_filter_any_pass_the_early_check(tmp_path):
    corpus = _folder_corpus(tmp_path / "c", ["x" * 14, "y" * 13, "z" * 5])
    trainer.check_run(RunConfig(**{**TINY, "corpus": corpus, "doc_filter": "any"}))


def test_unreachable_hub_corpus_fails_before_weights(monkeypatch, no_weights):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("anticip_lib.paths.hub_offline", lambda datasets=False: False)
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(RuntimeError, match="not reachable.*cnn-embedded"):
        trainer.train_run(RunConfig(**{**TINY, "corpus": "cnn_dailymail"}))


@pytest.mark.parametrize("device", ["cuda:99", "tpu", "gpu"])
def test_bad_device_fails_before_weights(no_weights, device):
    with pytest.raises(ValueError, match="device"):
        trainer.train_run(RunConfig(**TINY), device=device)


def test_unwritable_checkpoint_folder_fails_before_weights(tmp_path, no_weights):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="checkpoint folder"):
        trainer.train_run(RunConfig(**TINY), checkpoint=blocker / "run.pt")


def test_bf16_autocasts_and_keeps_fp32_weights(docs):
    """precision="bf16": the products run in bf16 (the losses move by more than fp32
    rounding, ~1e-6 here, but stay within bf16's ~3 significant digits of fp32's),
    the weights stay fp32, and the run says so."""
    fp32 = _train(docs)
    model = tiny_model()
    ids, labels, mask = docs
    bf16 = trainer.train(model, ids, labels, orders.cyclic(T, E), steps_per_doc=M,
                         lr=0.05, attention_mask=mask, progress=False, precision="bf16")
    diff = np.abs(bf16.eval_loss - fp32.eval_loss)
    assert 1e-4 < diff.max() < 0.05
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert bf16.meta["precision"] == "bf16" and fp32.meta["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        _train(docs, precision="fp16")


def test_checkpoint_of_other_precision_is_refused(docs, tmp_path):
    ckpt = tmp_path / "run.pt"
    _killed_at(docs, ckpt, 3, checkpoint_every_s=0)
    with pytest.raises(trainer.CheckpointError, match="different run"):
        _train(docs, checkpoint=ckpt, precision="bf16")
