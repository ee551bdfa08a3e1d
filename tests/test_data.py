"""Tests for anticip_lib.data: tokenisation and document selection (paper §2; SPEC §2.1–2.2).

Uses the tiny-gpt byte tokenizer (ids 0..255 = bytes, 256 = <|endoftext|> = pad), so
expected ids can be written down by hand.
"""

import json
import socket
import time

import pytest
import torch

from anticip_lib import data, models

C = 16
PAD = 256


@pytest.fixture(scope="module")
def tok():
    return models.load_tokenizer("tiny-gpt")


# ---- tokenize ------------------------------------------------------------------------

def test_tokenize_short_text_is_right_padded_and_masked(tok):
    ids, labels, mask = data.tokenize(["hello"], tok, C)
    assert ids.shape == labels.shape == mask.shape == (1, C)
    # "hello" = bytes 104 101 108 108 111, then 11 pads
    assert ids[0].tolist() == [104, 101, 108, 108, 111] + [PAD] * 11
    assert mask[0].tolist() == [1] * 5 + [0] * 11
    assert labels[0].tolist() == [104, 101, 108, 108, 111] + [-100] * 11


def test_tokenize_long_text_is_truncated_to_c(tok):
    text = "abcdefghijklmnopqrstuvwxyz" * 3
    ids, labels, mask = data.tokenize([text], tok, C)
    assert ids[0].tolist() == [ord(c) for c in text[:C]]
    assert mask[0].tolist() == [1] * C
    assert torch.equal(labels, ids)


def test_tokenize_labels_are_ids_except_on_padding(tok):
    texts = ["hi", "a" * 40, "Washington (CNN) — héllo"]
    ids, labels, mask = data.tokenize(texts, tok, C)
    assert ids.shape == (3, C)
    pad = mask == 0
    assert torch.equal(labels[~pad], ids[~pad])
    assert (labels[pad] == -100).all()
    assert ((labels == -100) == pad).all()  # −100 exactly on padding positions
    # right padding: once a row pads, it pads to the end
    for row in mask:
        n = int(row.sum())
        assert row[:n].all() and not row[n:].any()
    assert mask.sum(dim=1).tolist() == [2, C, C]


def test_tokenize_masks_padding_by_position_not_by_id(tok):
    # a genuine <|endoftext|> (id 256 = pad id) inside the text keeps its label
    # (deviation from the official code, which masks every id equal to pad)
    ids, labels, mask = data.tokenize(["ab<|endoftext|>cd"], tok, C)
    assert ids[0, :5].tolist() == [97, 98, PAD, 99, 100]
    assert labels[0, :5].tolist() == [97, 98, PAD, 99, 100]
    assert mask[0, :5].tolist() == [1] * 5
    assert (labels[0, 5:] == -100).all()


def test_tokenize_rejects_left_padding_and_missing_pad():
    t = models.load_tokenizer("tiny-gpt")
    t.padding_side = "left"
    with pytest.raises(ValueError, match="right"):
        data.tokenize(["hello"], t, C)
    t = models.load_tokenizer("tiny-gpt")
    t.pad_token = None
    with pytest.raises(ValueError, match="pad"):
        data.tokenize(["hello"], t, C)


# ---- cnn-embedded --------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded_texts():
    return data.load_texts("cnn-embedded")


@pytest.fixture
def embedded(monkeypatch, embedded_texts):
    """Serve the embedded corpus from memory: the zip is read once per module."""
    monkeypatch.setattr(data, "_embedded_cnn", lambda: list(embedded_texts))


def test_embedded_corpus_is_real_cnn(embedded_texts):
    assert len(embedded_texts) > 200
    ids = [i for i, _ in embedded_texts]
    assert len(ids) == len(set(ids))
    assert all(text.strip() for _, text in embedded_texts)


def test_load_documents_embedded_shapes_and_lengths(tok, embedded):
    docs = data.load_documents("cnn-embedded", tok, 5, 64, seed=0)
    assert docs.n_docs == 5 and docs.corpus == "cnn-embedded"
    for x in (docs.input_ids, docs.labels, docs.attention_mask):
        assert x.shape == (5, 64)
    # every document has ≥ C tokens: no padding anywhere
    assert (docs.labels != -100).all()
    assert (docs.attention_mask == 1).all()
    assert torch.equal(docs.labels, docs.input_ids)
    assert len(docs.doc_ids) == len(set(docs.doc_ids)) == 5


def test_load_documents_embedded_deterministic_per_seed(tok, embedded):
    a = data.load_documents("cnn-embedded", tok, 4, 32, seed=1)
    b = data.load_documents("cnn-embedded", tok, 4, 32, seed=1)
    assert a.doc_ids == b.doc_ids
    assert torch.equal(a.input_ids, b.input_ids)
    c = data.load_documents("cnn-embedded", tok, 4, 32, seed=2)
    assert a.doc_ids != c.doc_ids


def test_load_documents_too_many_docs(tok, monkeypatch, embedded_texts):
    # a 20-article slice of the corpus keeps this cheap (no need to tokenise all 274)
    monkeypatch.setattr(data, "_embedded_cnn", lambda: list(embedded_texts[:20]))
    assert len(data.load_documents("cnn-embedded", tok, 20, 32, seed=0).doc_ids) == 20
    with pytest.raises(ValueError, match="n_docs=21"):
        data.load_documents("cnn-embedded", tok, 21, 32, seed=0)


# ---- local folders -------------------------------------------------------------------

def test_load_documents_txt_folder(tok, tmp_path):
    texts = {
        "a.txt": "First document, long enough for sixteen bytes.",
        "b.txt": "Second document, also long enough.",
        "c.txt": "Third document: more than sixteen.",
        "short.txt": "tiny",  # 4 tokens < C: never chosen
    }
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    docs = data.load_documents(str(tmp_path), tok, 3, C, seed=0)
    assert sorted(docs.doc_ids) == ["a.txt", "b.txt", "c.txt"]
    for doc_id, row in zip(docs.doc_ids, docs.input_ids):
        assert row.tolist() == list(texts[doc_id].encode()[:C])
    assert (docs.attention_mask == 1).all()
    with pytest.raises(ValueError, match="n_docs"):
        data.load_documents(str(tmp_path), tok, 4, C, seed=0)


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """Keep `datasets`' cache (json → arrow) out of the user's ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    return tmp_path / "hf_cache"


def test_load_documents_jsonl_folder(tok, tmp_path, datasets_cache):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = [
        {"article": "Article zero is long enough to be used.", "highlights": "x"},
        {"article": "short", "highlights": "y"},  # < C tokens
        {"article": "Article two is long enough as well.", "highlights": "z"},
        {"article": "", "highlights": "empty article: dropped"},
        {"article": "Article four also has enough bytes.", "highlights": "w"},
    ]
    (folder / "part.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = data.load_documents(str(folder), tok, 3, C, seed=0)
    by_id = {str(i): r["article"] for i, r in enumerate(rows)}
    assert sorted(docs.doc_ids) == ["0", "2", "4"]
    for doc_id, row in zip(docs.doc_ids, docs.input_ids):
        assert row.tolist() == list(by_id[doc_id].encode()[:C])
    assert docs.input_ids.shape == (3, C)


def test_load_texts_jsonl_text_field_and_missing_field(tmp_path, datasets_cache):
    good = tmp_path / "good"
    good.mkdir()
    (good / "d.jsonl").write_text(json.dumps({"text": "hello world"}) + "\n")
    assert data.load_texts(str(good)) == [("0", "hello world")]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "d.jsonl").write_text(json.dumps({"body": "hello world"}) + "\n")
    with pytest.raises(ValueError, match="article"):
        data.load_texts(str(bad))


def test_empty_folder_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="jsonl"):
        data.load_texts(str(tmp_path))


# ---- unknown and unreachable corpora -------------------------------------------------

@pytest.mark.parametrize("corpus", ["cnn-dailymail", "wikitext", "/no/such/folder"])
def test_unknown_corpus_names_corpus(tok, corpus):
    with pytest.raises(ValueError, match="corpus"):
        data.load_documents(corpus, tok, 3, C, seed=0)


def test_cnn_dailymail_fails_fast_when_hub_unreachable(tok, monkeypatch):
    # simulate no network, whatever this machine has
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="cnn-embedded"):
        data.load_documents("cnn_dailymail", tok, 3, C, seed=0)
    assert time.perf_counter() - t0 < 10


# ---- doc_filter: the ≥ C filter (cpu presets) or any length, padded (paper) ---------
#
# A jsonl corpus of 3 long and 3 short articles (byte tokenizer, C = 16: a short one
# has fewer than 16 bytes). Expected rows are written out by hand.
MIXED = [
    {"article": "Long article number zero, well over sixteen bytes."},  # id 0
    {"article": "Hi there"},                                           # id 1: 8 bytes
    {"article": "Long article number two, also over sixteen."},        # id 2
    {"article": "Short one."},                                         # id 3: 10 bytes
    {"article": "Long article number four, more than enough."},        # id 4
    {"article": "ok"},                                                 # id 5: 2 bytes
]
SHORT_IDS, LONG_IDS = {"1", "3", "5"}, {"0", "2", "4"}


@pytest.fixture
def mixed_corpus(tmp_path, datasets_cache):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in MIXED) + "\n")
    return str(folder)


def test_doc_filter_any_takes_short_articles_and_pads_them(tok, mixed_corpus):
    docs = data.load_documents(mixed_corpus, tok, 6, C, seed=0, doc_filter="any")
    assert sorted(docs.doc_ids) == ["0", "1", "2", "3", "4", "5"]  # all six, short too
    rows = dict(zip(docs.doc_ids, range(6)))
    # "Hi there": bytes 72 105 32 116 104 101 114 101, then 8 pads (id 256)
    r = rows["1"]
    assert docs.input_ids[r].tolist() == [72, 105, 32, 116, 104, 101, 114, 101] + [PAD] * 8
    assert docs.labels[r].tolist() == [72, 105, 32, 116, 104, 101, 114, 101] + [-100] * 8
    assert docs.attention_mask[r].tolist() == [1] * 8 + [0] * 8
    # "ok": 2 real tokens, 14 pads
    r = rows["5"]
    assert docs.input_ids[r].tolist() == [111, 107] + [PAD] * 14
    assert docs.labels[r].tolist() == [111, 107] + [-100] * 14
    assert docs.attention_mask[r].tolist() == [1, 1] + [0] * 14
    # lengths per document: 8, 10, 2 real tokens for the short ones, C for the long ones
    n_real = {d: int(docs.attention_mask[i].sum()) for d, i in rows.items()}
    assert n_real == {"0": C, "1": 8, "2": C, "3": 10, "4": C, "5": 2}
    # long ones are truncated to C and carry no padding
    r = rows["0"]
    assert docs.input_ids[r].tolist() == list(b"Long article num")
    assert torch.equal(docs.labels[r], docs.input_ids[r])


def test_doc_filter_default_skips_short_articles(tok, mixed_corpus):
    docs = data.load_documents(mixed_corpus, tok, 3, C, seed=0)  # default: min_context
    assert set(docs.doc_ids) == LONG_IDS
    assert (docs.attention_mask == 1).all() and (docs.labels != -100).all()
    same = data.load_documents(mixed_corpus, tok, 3, C, seed=0, doc_filter="min_context")
    assert same.doc_ids == docs.doc_ids
    with pytest.raises(ValueError, match="n_docs=4.*min_context"):
        data.load_documents(mixed_corpus, tok, 4, C, seed=0)


def test_doc_filter_any_samples_regardless_of_length(tok, mixed_corpus):
    # T=2 of 6 over 12 seeds: under "any" short articles are drawn as often as they
    # come up (P(no short one in 12 draws of 2) = (1/5)^12); the default never draws one
    picked_any, picked_min = set(), set()
    for seed in range(12):
        picked_any |= set(data.load_documents(mixed_corpus, tok, 2, C, seed,
                                              doc_filter="any").doc_ids)
        picked_min |= set(data.load_documents(mixed_corpus, tok, 2, C, seed).doc_ids)
    assert picked_any & SHORT_IDS
    assert picked_min == LONG_IDS


def test_doc_filter_any_needs_one_next_token_target(tok, tmp_path):
    # a 1-token document has no next-token target (its loss would be 0/0): skipped
    for name, text in {"a.txt": "x", "b.txt": "yz", "c.txt": "a longer text here"}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    docs = data.load_documents(str(tmp_path), tok, 2, C, seed=0, doc_filter="any")
    assert sorted(docs.doc_ids) == ["b.txt", "c.txt"]
    with pytest.raises(ValueError, match="n_docs=3"):
        data.load_documents(str(tmp_path), tok, 3, C, seed=0, doc_filter="any")


def test_doc_filter_unknown_value_is_rejected(tok, mixed_corpus):
    with pytest.raises(ValueError, match="doc_filter"):
        data.load_documents(mixed_corpus, tok, 2, C, seed=0, doc_filter="all")
    from anticip_lib import RunConfig

    with pytest.raises(ValueError, match=r"^doc_filter\b"):
        RunConfig(doc_filter="all").validate()
    assert RunConfig(doc_filter="any").validate().doc_filter == "any"
    assert RunConfig().doc_filter == "min_context"  # the default keeps old cache keys
