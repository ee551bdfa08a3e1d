"""One training loop for K ≥ 1 runs (issue #18): the K = 1 path (`train`, the model's
own forward: every committed result's path), the K > 1 path (`train_many`, one batched
forward) and a hand-written reference loop agree; recorders and the divergence rule
hold for every K."""

import numpy as np
import pytest
import torch
from conftest import C, E, M, T, VOCAB, cyclic, make_tiny_docs, make_tiny_model
from reference_loop import reference_train

from anticip_lib import records, trainer

TOL = 1e-4


def _many_docs(K=2):
    docs = [make_tiny_docs(seed=1 + r) for r in range(K)]
    return tuple(torch.stack([d[i] for d in docs]) for i in range(3))


def test_one_run_equals_k_runs_and_the_reference_loop(one_thread):
    """SGD at a constant lr: `train` (K = 1) equals the reference loop, and each run of
    `train_many` (K = 2, batched) equals `train` on its own run."""
    ids, labels, mask = _many_docs()
    order = cyclic()
    many = trainer.train_many([make_tiny_model(r) for r in range(2)], ids, labels,
                              np.stack([order, order[::-1].copy()]), steps_per_doc=M,
                              lr=0.05, attention_mask=mask, progress=False)
    for r, orr in enumerate([order, order[::-1].copy()]):
        one = trainer.train(make_tiny_model(r), ids[r], labels[r], orr, steps_per_doc=M,
                            lr=0.05, attention_mask=mask[r], progress=False)
        np.testing.assert_allclose(many[r].eval_loss, one.eval_loss, rtol=0, atol=TOL)
        np.testing.assert_allclose(many[r].train_loss, one.train_loss, rtol=0, atol=TOL)
        ref_eval, ref_train = reference_train(make_tiny_model(r), ids[r], labels[r],
                                              mask[r], orr, M, 0.05)
        np.testing.assert_allclose(one.eval_loss, ref_eval, rtol=0, atol=TOL)
        np.testing.assert_allclose(one.train_loss, ref_train, rtol=0, atol=TOL)


@pytest.mark.parametrize("engine", ["neox", "vmap"])
def test_one_run_through_a_batched_engine_equals_the_model_path(tiny_docs, engine):
    ids, labels, mask = tiny_docs
    kw = dict(steps_per_doc=M, optimizer="adam_reset", lr=3e-4, attention_mask=mask,
              progress=False)
    a = trainer.train(make_tiny_model(), ids, labels, cyclic(), **kw)
    b = trainer.train(make_tiny_model(), ids, labels, cyclic(), engine=engine, **kw)
    np.testing.assert_allclose(b.eval_loss, a.eval_loss, rtol=0, atol=TOL)
    assert b.meta["lockstep_engine"] == engine and "lockstep_engine" not in a.meta


def test_recorders_for_k_runs():
    """Each of K runs gets its own recorders, bound to its own documents."""
    ids, labels, mask = _many_docs()
    orders = np.stack([cyclic(), cyclic()])
    recs = [records.weights("lm_head.weight", rows=2),
            records.grad_of_doc(1, "gpt_neox.layers.0.attention.dense.weight")]
    many = trainer.train_many([make_tiny_model(r) for r in range(2)], ids, labels, orders,
                              steps_per_doc=1, lr=0.05, attention_mask=mask, record=recs,
                              progress=False)
    for r in range(2):
        one = trainer.train(make_tiny_model(r), ids[r], labels[r], orders[r], steps_per_doc=1,
                            lr=0.05, attention_mask=mask[r], record=recs, progress=False)
        assert set(many[r].records) == set(one.records) == {rc.name for rc in recs}
        for name, out in one.records.items():
            for key, a in out.items():
                assert many[r].records[name][key].shape == a.shape == (E * T + 1, *a.shape[1:])
                np.testing.assert_allclose(many[r].records[name][key], a, rtol=1e-4,
                                           atol=1e-5, err_msg=f"run {r} {name} {key}")


MARK = -5  # in a label's first position (never a target): that document's loss ×1e30


def _marked_loss(model, x, y, m=None):
    scale = torch.where(y[:, 0] == MARK, 1e30, 1.0)
    return trainer.lm_loss(model, x, y, m) * scale


def test_a_diverging_run_stops_alone():
    """Run 1's third document has its loss scaled by 1e30: training on it diverges.
    Run 1 stops there (diverged_at as `train` alone gives, NaN rows after, its model
    ends finite with the weights it diverged with); run 0 goes on, equal to `train`."""
    ids, labels, mask = _many_docs()
    labels = labels.clone()
    labels[1, 2, 0] = MARK
    orders = np.stack([cyclic(), cyclic()])
    kw = dict(steps_per_doc=M, lr=0.05, loss_fn=_marked_loss, progress=False)
    models = [make_tiny_model(r) for r in range(2)]
    many = trainer.train_many(models, ids, labels, orders, attention_mask=mask, **kw)
    alone = [trainer.train(make_tiny_model(r), ids[r], labels[r], orders[r],
                           attention_mask=mask[r], **kw) for r in range(2)]
    assert "diverged_at" not in many[0].meta and "diverged_at" not in alone[0].meta
    np.testing.assert_allclose(many[0].eval_loss, alone[0].eval_loss, rtol=0, atol=TOL)
    k = alone[1].meta["diverged_at"]
    assert many[1].meta["diverged_at"] == k == 3  # the episode of document 2
    assert np.isnan(many[1].eval_loss[k + 1:]).all()
    assert np.isnan(many[1].train_loss[k * M:]).all()
    np.testing.assert_allclose(many[1].eval_loss[:k + 1], alone[1].eval_loss[:k + 1],
                               rtol=1e-4)
    assert all(torch.isfinite(p).all() for p in models[1].parameters())


def test_bad_engine_is_named(tiny_docs):
    ids, labels, mask = tiny_docs
    with pytest.raises(ValueError, match="engine must be one of"):
        trainer.train(make_tiny_model(), ids, labels, cyclic(), steps_per_doc=1,
                      engine="jax", progress=False)
    with pytest.raises(ValueError, match="overlap_eval=True needs the 'neox' engine"):
        trainer.train(make_tiny_model(), ids, labels, cyclic(), steps_per_doc=1,
                      overlap_eval=True, progress=False)


def test_tiny_material_is_what_conftest_says(tiny_docs):
    ids, labels, mask = tiny_docs
    assert ids.shape == (T, C) and int(ids.max()) < VOCAB
    assert (labels[mask == 0] == -100).all()
