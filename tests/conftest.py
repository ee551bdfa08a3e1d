"""Shared test material: tiny GPT-NeoX models, tiny documents, an empty results store.

STYLE §15: tiny_docs (T=4, C=24 random ids, two padded), tiny_model (2 layers, width
32), and `store` (ANTICIP_RESULTS and ANTICIP_CACHE in a fresh temporary folder).

Tests run torch at one thread (set here, before any test). Tiny models train faster
on one thread than on two, and on a machine whose cores are busy a second OpenMP
thread spins waiting for its descheduled sibling: a tiny run measured 0.2 s at one
thread and 7-15 s at two while the cores ran other training. A test about threads
sets them itself.
"""

import numpy as np
import pytest
import torch

T, C, M, E = 4, 24, 3, 2  # documents, context, steps per episode, epochs
VOCAB = 97
torch.set_num_threads(1)


def make_tiny_model(seed: int = 0, vocab: int = VOCAB):
    """A 2-layer, width-32 GPT-NeoX with random weights (seeded)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )
    return GPTNeoXForCausalLM(cfg)


def make_tiny_docs(seed: int = 1, n_docs: int = T, context: int = C, vocab: int = VOCAB,
                   lengths=None):
    """(input_ids, labels, attention_mask), each (T, C); the 2nd and 4th are padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n_docs, context), generator=g)
    if lengths is None:
        lengths = [context, context - 5, context, 10][:n_docs] + [context] * (n_docs - 4)
    mask = (torch.arange(context)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    return ids, labels, mask


@pytest.fixture
def tiny_model():
    return make_tiny_model()


@pytest.fixture
def tiny_docs():
    return make_tiny_docs()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty results folder and cache: (results, cache) paths."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    monkeypatch.setenv("ANTICIP_RESULTS", str(results))
    monkeypatch.setenv("ANTICIP_CACHE", str(cache))
    return results, cache


@pytest.fixture
def one_thread():
    """torch at one thread for the test (bit-for-bit comparisons), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cyclic(n_docs: int = T, n_epochs: int = E) -> np.ndarray:
    return np.tile(np.arange(n_docs), n_epochs)
