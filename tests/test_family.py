"""The family of small models pre-trained here (anticip_lib/pretrain.py): recipe,
committed weights, loading without pre-training, and the disjointness of the text."""

import json

import pytest
import torch

from anticip_lib import models as M
from anticip_lib import paths, presets, pretrain


def test_family_spans_ten_times_in_non_embedding_parameters():
    sizes = []
    for name in pretrain.FAMILY:
        r = pretrain.recipe(name)
        d, L = r.get("width") or 128, r.get("depth") or 6  # the 14M shape's own
        spec = M.MODELS[name]
        assert (spec.d_model, spec.n_layers, spec.family) == (d, L, "ours")
        # per layer: QKV 3d²+3d, dense d²+d, FFN 8d²+5d, two LayerNorms 4d; final LN 2d
        sizes.append(L * (12 * d * d + 13 * d) + 2 * d)
    assert sizes == sorted(sizes) and sizes[-1] >= 10 * sizes[0]
    assert pretrain.FAMILY == presets.CH1_FAMILY
    # one recipe: the members differ in shape only
    shape_keys = {"shape", "width", "depth", "heads", "commit"}
    recipes = [{k: v for k, v in pretrain.recipe(n).items() if k not in shape_keys}
               for n in pretrain.FAMILY]
    assert all(r == recipes[0] for r in recipes)


def test_news_14m_keeps_the_tag_of_chapter_2s_checkpoints():
    # its numbers are unchanged, so its checkpoints are the ones chapter 2 fine-tuned
    assert pretrain._tag("news-14m") == "news-14m-5c442b84"


def test_missing_weights_fail_at_once_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTICIP_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(FileNotFoundError, match="python -m anticip_lib.pretrain news-s"):
        M.load_model("news-s")
    assert not (tmp_path / "cache" / "pretrained").exists()  # nothing started


@pytest.mark.parametrize("name", pretrain.FAMILY)
def test_committed_weights_match_their_record(name):
    rec = pretrain.load_record(name)
    assert rec is not None, f"no pre-training record for {name}"
    assert rec["tag"] == pretrain._tag(name)
    committed = pretrain.committed_folder(name)
    for step in pretrain.recipe(name)["commit"]:
        f = committed / f"step{step}" / "model.safetensors"
        assert f.exists(), f"{f} is not committed"
        assert pretrain.sha256(f) == rec["committed"][f"step{step}"]
    assert pretrain.checkpoint(name, "main").is_relative_to(paths.weights_dir())


def test_a_family_model_loads_from_the_repository_without_pre_training(tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))  # an empty cache
    model, tok = M.load_model("news-xs")
    rec = pretrain.load_record("news-xs")
    assert pretrain.non_embedding_params(model) == rec["n_non_embedding"]
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    # it learned the text: next-byte loss far below uniform (ln 257 = 5.55)
    ids = tok("The government said on Tuesday that the new law", return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids["input_ids"]).loss.item()
    assert loss < 3.0
    assert not (tmp_path / "cache" / "pretrained").exists()


def _key(text: str) -> str:
    return " ".join(text.split())[:300]


def test_pretraining_text_shares_no_document_with_any_fine_tuning_corpus():
    from anticip_lib import data

    pre = data.pretraining_texts()
    assert len(pre) > 3000
    pre_ids, pre_keys = {i for i, _ in pre}, {_key(t) for _, t in pre}
    for corpus in ("cnn-embedded", *data.EXPORTED):
        texts = data.load_texts(corpus)
        assert texts
        assert not pre_ids & {i for i, _ in texts}, corpus
        assert not pre_keys & {_key(t) for _, t in texts}, corpus


@pytest.mark.slow
def test_pretraining_writes_checkpoints_committed_weights_and_a_record(tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(FileNotFoundError, match="pretrain news-tiny"):
        M.load_model("news-tiny")  # never pre-trains silently
    assert pretrain.main(["news-tiny"]) == 0  # seconds
    m0, tok = M.load_model("news-tiny", revision="step0")
    m20, _ = M.load_model("news-tiny")
    rec = pretrain.load_record("news-tiny")
    assert rec["recipe"]["steps"] == 20 and set(rec["val_loss"]) == {"0", "10", "20"}
    assert rec["val_loss"]["20"] < rec["val_loss"]["0"]  # it learned something
    start = M.random_model("tiny-gpt", len(tok), init="pythia", seed=0)
    for (n, a), (_, b) in zip(m0.named_parameters(), start.named_parameters()):
        assert torch.equal(a, b), n  # step 0 is the recipe's Pythia-init draw
    assert any(not torch.equal(a, b) for a, b in zip(m0.parameters(), m20.parameters()))
    assert "pre-trained here" in M.describe("news-tiny", revision="step10")
    # the committed checkpoints are in weights/, named by the recipe's tag, with sha256
    folder = tmp_path / "weights" / pretrain._tag("news-tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["step0", "step10", "step20"]
    assert rec["committed"]["step20"] == pretrain.sha256(folder / "step20" /
                                                         "model.safetensors")
    assert json.loads((tmp_path / "results" / "smoke" / "pretrain" /
                       "news-tiny.json").read_text())["tag"] == rec["tag"]
