"""Tests for anticip_lib.config.RunConfig and the up-front checks of train_run
(paper §2; SPEC §2.4)."""

import time
from dataclasses import fields, replace

import pytest

import anticip_lib
from anticip_lib import RunConfig


def test_defaults_are_the_papers():
    c = RunConfig()
    assert (c.n_docs, c.context_len, c.steps_per_doc, c.n_epochs) == (25, 256, 10, 5)
    assert (c.optimizer, c.lr, c.lr_schedule) == ("sgd", 1e-3, "constant")
    assert (c.model, c.revision, c.init) == ("pythia-1b", "main", "pretrained")
    assert (c.corpus, c.order, c.seed) == ("cnn_dailymail", "cyclic", 0)
    assert c.validate() is c


def test_config_is_frozen():
    with pytest.raises(Exception):
        RunConfig().n_docs = 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_docs", 1),
        ("n_docs", 0),
        ("n_docs", 2.0),
        ("n_docs", True),
        ("context_len", 1),
        ("context_len", 0),
        ("context_len", "256"),
        ("steps_per_doc", 0),
        ("steps_per_doc", -1),
        ("n_epochs", 0),
        ("optimizer", "rmsprop"),
        ("optimizer", "SGD"),
        ("order", "random"),
        ("init", "xavier"),
        ("lr_schedule", "linear"),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", float("nan")),
        ("lr", "1e-3"),
        ("seed", -1),
        ("seed", 1.5),
    ],
)
def test_validate_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        replace(RunConfig(), **{field: value}).validate()


@pytest.mark.parametrize("n_shuffled", [0, 26, -1])
def test_partial_order_needs_valid_n_shuffled(n_shuffled):
    with pytest.raises(ValueError, match=r"^n_shuffled\b"):
        RunConfig(order="partial", n_shuffled=n_shuffled).validate()


def test_valid_variants_pass():
    RunConfig(order="partial", n_shuffled=8).validate()
    RunConfig(order="partial", n_shuffled=25).validate()
    RunConfig(order="shuffled").validate()  # n_shuffled ignored
    RunConfig(optimizer="adam_reset", lr=1e-5, lr_schedule="cosine").validate()
    RunConfig(model="tiny-gpt", init="pythia", n_docs=2, context_len=2, steps_per_doc=1,
              n_epochs=1).validate()


def test_dict_round_trip_and_unknown_fields():
    c = RunConfig(model="tiny-gpt", init="normal", n_docs=3, seed=4)
    d = c.to_dict()
    assert set(d) == {f.name for f in fields(RunConfig)}
    assert RunConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown RunConfig fields.*batch_size"):
        RunConfig.from_dict({**d, "batch_size": 1})


# ---- train_run checks everything before any compute ----------------------------------

@pytest.fixture
def no_compute(monkeypatch):
    """Make any model load, document load or training step fail the test."""

    def boom(*args, **kwargs):
        pytest.fail("train_run started work before rejecting a bad config")

    monkeypatch.setattr("anticip_lib.models.load_model", boom)
    monkeypatch.setattr("anticip_lib.data.load_documents", boom)
    monkeypatch.setattr("anticip_lib.trainer.train", boom)


TINY = dict(model="tiny-gpt", init="pythia", corpus="cnn-embedded", n_docs=3,
            context_len=16, steps_per_doc=2, n_epochs=2)


@pytest.mark.parametrize(
    "change, word",
    [
        (dict(model="no-such-model"), "model"),
        (dict(model="pythia-99b", init="pretrained"), "model"),
        (dict(corpus="no-such-corpus"), "corpus"),
        (dict(corpus="/no/such/folder"), "corpus"),
        (dict(context_len=4096), "context_len"),  # tiny-gpt: 2048 positions
        (dict(model="pythia-1b", init="pretrained", context_len=2049), "context_len"),
        (dict(model="smollm2-135m", init="pretrained", context_len=8193), "context_len"),
        (dict(n_docs=1), "n_docs"),
        (dict(optimizer="lbfgs"), "optimizer"),
    ],
)
def test_train_run_rejects_bad_config_before_compute(no_compute, change, word):
    config = RunConfig(**{**TINY, **change})
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=word):
        anticip_lib.train_run(config, progress=False)
    assert time.perf_counter() - t0 < 5.0  # microseconds of work; generous for a busy machine


def test_run_cached_rejects_bad_config_before_compute(no_compute, monkeypatch, tmp_path):
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="context_len"):
        anticip_lib.run_cached(RunConfig(**{**TINY, "context_len": 4096}), "test", progress=False)
    assert not (tmp_path / "results").exists()


def test_numpy_scalars_from_sweeps_are_accepted_and_normalised():
    import numpy as np

    c = RunConfig(seed=np.int64(3), n_docs=np.int32(10), lr=np.float64(0.005)).validate()
    assert type(c.seed) is int and type(c.n_docs) is int and type(c.lr) is float
    assert c == RunConfig(seed=3, n_docs=10, lr=0.005)


@pytest.mark.parametrize(
    "bad, field",
    [({"lr": True}, "lr"), ({"lr": float("inf")}, "lr"),
     ({"order": "partial", "n_shuffled": 2.5}, "n_shuffled")],
)
def test_more_bad_values_name_their_field(bad, field):
    with pytest.raises(ValueError, match=field):
        RunConfig(**bad).validate()
