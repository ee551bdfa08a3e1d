"""Run records (anticip_lib.records): recorders against independent references, their
place in checkpoints, and a recorded run through the results cache."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from anticip_lib import RunConfig, orders, records, results, trainer
from reference_loop import reference_train

T, C, M, E = 3, 20, 2, 2
LR = 0.05
PARAM = "gpt_neox.layers.1.attention.dense.weight"


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=61, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )
    return GPTNeoXForCausalLM(cfg)


@pytest.fixture
def docs():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 61, (T, C), generator=g)
    lengths = torch.tensor([C, 12, C])  # document 1 is padded
    mask = (torch.arange(C)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    return ids, ids.masked_fill(mask == 0, -100), mask


def _train(docs, model=None, **kw):
    ids, labels, mask = docs
    kw = dict(steps_per_doc=M, lr=LR, attention_mask=mask, progress=False) | kw
    return trainer.train(model or tiny_model(), ids, labels, orders.cyclic(T, E), **kw)


def test_weights_rows_match_an_independent_training_loop(docs):
    ids, labels, mask = docs
    rec = records.weights(PARAM)
    run = _train(docs, record=rec)
    value = run.records[rec.name]["value"]
    assert value.shape == (E * T + 1, 16, 16) and value.dtype == np.float32
    order = orders.cyclic(T, E)
    for k in (0, 2, E * T):  # the reference loop trained for k episodes
        ref = tiny_model()
        reference_train(ref, ids, labels, mask, order[:k], M, lr=LR)
        expected = dict(ref.named_parameters())[PARAM].detach().numpy()
        np.testing.assert_allclose(value[k], expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(value[1], value[0])  # the layer moves every episode


def test_weights_rows_keep_the_first_rows():
    model = tiny_model()
    out = records.weights("gpt_neox.embed_in.weight", rows=3)(0, model)["value"]
    np.testing.assert_array_equal(out, model.gpt_neox.embed_in.weight.detach().numpy()[:3])


def test_grad_of_doc_matches_hf_loss_gradient(docs):
    """Gradient of document 1 (padded: 12 real tokens) against HF's own loss on the
    unpadded document, before training (row 0) and after the last episode."""
    ids = docs[0]
    rec = records.grad_of_doc(doc=1, param=PARAM)
    model = tiny_model()

    def hf_grad(m):
        m.zero_grad()
        m(input_ids=ids[1:2, :12], labels=ids[1:2, :12]).loss.backward()
        g = dict(m.named_parameters())[PARAM].grad.detach().clone().numpy()
        m.zero_grad(set_to_none=True)
        return g

    before = hf_grad(tiny_model())
    run = _train(docs, model=model, record=rec)
    grad = run.records[rec.name]["grad"]
    np.testing.assert_allclose(grad[0], before, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grad[-1], hf_grad(model), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(run.records[rec.name]["loss"], run.eval_loss[:, 1], rtol=1e-6)


def test_recorders_do_not_change_training(docs):
    plain = _train(docs, optimizer="adam", lr=1e-2)
    recorded = _train(docs, optimizer="adam", lr=1e-2,
                      record=[records.grad_of_doc(0, PARAM), records.weights(PARAM)])
    np.testing.assert_array_equal(recorded.eval_loss, plain.eval_loss)
    np.testing.assert_array_equal(recorded.train_loss, plain.train_loss)


def test_records_resume_exactly_after_a_kill(docs, tmp_path):
    rec = records.weights(PARAM)
    full = _train(docs, record=rec)
    ckpt = tmp_path / "run.pt"

    def kill(k, model):
        if k == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # last checkpoint: end of epoch 1 (k=3)
        _train(docs, record=rec, checkpoint=ckpt, on_episode_end=kill)
    resumed = _train(docs, record=rec, checkpoint=ckpt)
    assert resumed.meta["resumed_at"] == T
    np.testing.assert_array_equal(resumed.records[rec.name]["value"],
                                  full.records[rec.name]["value"])
    # a resume with other recorders is another run
    _train(docs, checkpoint=ckpt, keep_checkpoint=True, record=rec)
    with pytest.raises(trainer.CheckpointError, match="different run"):
        _train(docs, checkpoint=ckpt)


def test_rows_after_a_divergence_are_nan(docs):
    n = [0]

    def loss_fn(model, x, y, m=None):
        loss = trainer.lm_loss(model, x, y, m)
        if not torch.is_inference_mode_enabled():
            n[0] += 1
            if n[0] == 3:  # episode 2's first step
                return loss * float("nan")
        return loss

    rec = records.weights(PARAM)
    value = _train(docs, record=rec, loss_fn=loss_fn).records[rec.name]["value"]
    assert np.isfinite(value[:3]).all() and np.isnan(value[3:]).all()


@pytest.mark.parametrize("bad, word", [
    (object(), "name"),
    ([records.weights(PARAM), records.weights(PARAM)], "share a name"),
])
def test_bad_recorders_are_rejected(bad, word):
    with pytest.raises(ValueError, match=word):
        records.as_tuple(bad)


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="param='nope'.*gpt_neox"):
        records.weights("nope")(0, tiny_model())
    with pytest.raises(ValueError, match="close names: gpt_neox.embed_in.weight"):
        records.weights("gpt_neox.embed_in.weights")(0, tiny_model())


def test_recorder_returning_other_shapes_is_rejected(docs):
    class Growing:
        name = "growing"

        def __call__(self, k, model):
            return {"x": np.zeros(k + 1)}

    with pytest.raises(ValueError, match="growing.*shape"):
        _train(docs, record=Growing())


@pytest.mark.slow  # trains tiny-gpt (6 episodes): about a second
def test_recorded_run_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
                    context_len=16, steps_per_doc=2, n_epochs=2)
    rec = records.weights("gpt_neox.embed_in.weight", rows=2)
    first = results.run_cached(cfg, "exp", progress=False, record=rec)
    assert first.records[rec.name]["value"].shape == (7, 2, 64)

    def no_training(*args, **kwargs):
        pytest.fail("a recorded run was trained again")

    monkeypatch.setattr(results, "train_run", no_training)
    second = results.run_cached(cfg, "exp", progress=False, record=rec)
    np.testing.assert_array_equal(second.records[rec.name]["value"],
                                  first.records[rec.name]["value"])
    assert second.meta["records"][rec.name]["version"] == 1
    assert results.find_run(cfg) is None  # the plain run was never computed
    assert results.find_run(replace(cfg, seed=1), record=rec) is None
