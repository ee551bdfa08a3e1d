"""The training loop: shapes, determinism, resume after a kill, and equality with the
official loop's way of doing things (tests/reference_loop.py)."""

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from anticip_lib import orders, trainer
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


def _train(docs, **kw):
    ids, labels, mask = docs
    kw = dict(steps_per_doc=M, lr=0.05, attention_mask=mask, progress=False) | kw
    return trainer.train(tiny_model(), ids, labels, orders.cyclic(T, E), **kw)


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
        _train(docs, checkpoint=ckpt, on_episode_end=kill)
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
