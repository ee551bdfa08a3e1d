"""Presets list a chapter's runs; notebook parameters are checked before any compute."""

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from anticip_lib import presets
from anticip_lib.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
CH1 = presets.NOTEBOOK_PARAMS["01_phenomenon"]


def _params(**kw):
    p = {k: None for k in CH1}
    p.update(preset="cpu", device="auto")
    p.update(kw)
    return p


def test_every_config_is_valid_and_unique():
    from anticip_lib.vision import VisionConfig

    for chapter in presets.CHAPTERS:
        kind = VisionConfig if chapter == "05_vision" else RunConfig
        for preset in presets.PRESETS:
            if (chapter, preset) == ("05_vision", "paper"):
                with pytest.raises(ValueError, match="needs the ImageNet and CIFAR-10"):
                    presets.configs(chapter, preset)
                continue
            cs = presets.configs(chapter, preset)
            assert all(isinstance(c, kind) and c.validate() for c in cs)
            assert len(set(cs)) == len(cs), (chapter, preset)


def test_vision_groups_are_the_notebooks_runs():
    """Chapter 5's sweep groups hold exactly the runs its notebook's plan lists."""
    from anticip_lib import vision

    for preset in ("smoke", "cpu"):
        gs = presets.groups("05_vision", preset)
        plan = vision.chapter_plan(preset)
        assert [g.name for g in gs] == ["igpt", "classify"]
        assert {g.experiment for g in gs} == {plan.experiment}
        assert [c for g in gs for c in g.configs] == plan.all_configs()


def test_cpu_preset_pilot_and_main_documents_are_disjoint_parts():
    groups = {g.name: g for g in presets.groups("01_phenomenon", "cpu")}
    for prefix in ("", "random_"):
        assert {c.doc_split for c in groups[prefix + "pilot"].configs} == {"pilot"}
        assert {c.doc_split for c in groups[prefix + "main"].configs} == {"main"}
        main = groups[prefix + "main"].configs
        # >= 10 seeds per order, and every seed in both orders (pairs)
        seeds = {o: sorted(c.seed for c in main if c.order == o)
                 for o in ("cyclic", "shuffled")}
        assert seeds["cyclic"] == seeds["shuffled"] and len(seeds["cyclic"]) >= 10
    assert {c.doc_split for c in groups["random_screen"].configs} == {"pilot"}


def test_cpu_preset_main_runs_are_pretrained_on_seeds_no_earlier_run_used():
    main = presets.group("01_phenomenon", "cpu", "main").configs
    assert {(c.model, c.init) for c in main} == {(presets.CH1_CPU_PROTOCOL["model"],
                                                  "pretrained")}
    assert presets.CH1_CPU_PROTOCOL["model"] in presets.CH1_FAMILY
    # chapter 2 fine-tuned news-14m checkpoints on chapter 1's main documents with its
    # own seeds (documents are drawn by seed): the main runs' seeds are new
    axes = presets.ch2_axes("cpu")
    assert all(not p.seeds for a in ("steps", "steps_ch1_lr") for p in axes[a])
    assert not set(presets.CH2_SEEDS) & {c.seed for c in main}
    assert min(c.seed for c in main) >= 10
    # the pilot trains every member under both optimizers, on pilot documents only
    pilot = presets.group("01_phenomenon", "cpu", "pilot").configs
    assert {c.model for c in pilot} == set(presets.CH1_FAMILY)
    assert {c.optimizer for c in pilot} == {"adam_reset", "sgd"}
    assert {c.doc_split for c in pilot} == {"pilot"}


def test_smoke_results_never_go_to_committed_folders():
    for chapter in presets.CHAPTERS:
        for g in presets.groups(chapter, "smoke"):
            assert g.experiment.startswith("smoke/")
    assert "/results/smoke/" in (REPO / ".gitignore").read_text()


@pytest.mark.parametrize("bad, needle", [
    (dict(n_docs=0), "n_docs"),
    (dict(preset="nonsense"), "preset must be one of smoke, cpu, paper"),
    (dict(lr=-1e-3), "lr"),
    (dict(lr="fast"), "lr"),
    (dict(steps_per_doc=2.5), "steps_per_doc"),
    (dict(seeds=[0, 0]), "seeds"),
    (dict(seeds=[]), "seeds"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(device="tpu"), "device"),
])
def test_bad_parameters_name_the_parameter(bad, needle):
    with pytest.raises(ValueError, match=needle):
        presets.settings("01_phenomenon", _params(**bad))


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) n_doc for 01_phenomenon; valid parameters: preset"):
        presets.settings("01_phenomenon", _params(), defined=set(CH1) | {"n_doc"})


def test_overrides_apply_to_main_runs_only():
    s = presets.settings("01_phenomenon", _params(preset="smoke", n_epochs=4, seeds=[7]))
    main = s.group("main").configs
    assert [(c.n_epochs, c.seed, c.order) for c in main] == [(4, 7, "cyclic"),
                                                              (4, 7, "shuffled")]
    assert s.overrides == {"n_epochs": 4, "seeds": [7]}


TOY = {"preset": "cpu", "n_tasks": 25, "dim": 100, "lr": 0.01, "n_epochs": 50,
       "n_seeds": 5, "map_epoch": 10}


@pytest.mark.parametrize("bad, needle", [
    (dict(n_tasks=1), "n_tasks must be an integer >= 2, got 1"),
    (dict(dim=2.5), "dim must be an integer"),
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(lr=float("inf")), "lr must be a finite number > 0"),
    (dict(n_seeds=True), "n_seeds must be an integer"),
    (dict(map_epoch=50), "map_epoch must be below n_epochs=50"),
    (dict(preset="book"), "preset must be one of smoke, cpu, paper"),
])
def test_toy_parameters_are_checked(bad, needle):
    assert presets.settings("07_toy_model", TOY).preset == "cpu"
    with pytest.raises(ValueError, match=needle):
        presets.settings("07_toy_model", {**TOY, **bad})
    with pytest.raises(ValueError, match="unknown parameter.*seeds for 07_toy_model"):
        presets.settings("07_toy_model", TOY, defined=set(TOY) | {"seeds"})


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (["-p", "n_docs", "0"], "n_docs must be an integer >= 2"),
    (["-p", "preset", "nonsense"], "preset must be one of smoke, cpu, paper"),
    (["-p", "n_doc", "5"], "unknown parameter(s) n_doc"),
])
@pytest.mark.parametrize("chapter", ["01_phenomenon", "02_scale", "07_toy_model"])
def test_papermill_fails_fast_naming_the_parameter(tmp_path, args, needle, chapter):
    needle = needle.replace("01_phenomenon", chapter)
    if chapter == "07_toy_model" and "n_docs" in args:
        args, needle = ["-p", "n_tasks", "0"], "n_tasks must be an integer >= 2"
    if chapter == "02_scale" and "n_docs" in args:  # its axes are fixed: seeds only
        args, needle = ["-p", "seeds", "[-1]"], "seeds must be a non-empty list"
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "papermill", str(REPO / "notebooks" / f"{chapter}.ipynb"),
         str(tmp_path / "out.ipynb"), *args, "--cwd", str(REPO / "notebooks")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert needle in out.stdout + out.stderr
    assert time.time() - t0 < 120  # seconds of kernel start-up, no training


# ---- chapter 3 ---------------------------------------------------------------------

AXIS_FIELD = {"docs": "n_docs", "steps": "steps_per_doc", "context": "context_len"}


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_chapter3_axes_move_one_factor_from_the_base(preset):
    """Each axis of Fig. 5(a-c) differs from its base in its own field only; the cpu
    base is chapter 1's protocol, the paper's is its default (T=25, C=256, M=10)."""
    axes = presets.ch3_axes(preset)
    base = {"smoke": presets.SMOKE_BASE, "cpu": presets.CH1_RANDOM_BASE}.get(preset)
    if base is None:
        base = axes["docs"][1].config  # T = 25
        assert (base.model, base.init, base.optimizer, base.lr) == (
            "pythia-1b", "pretrained", "sgd", 1e-3)
    for axis, field in AXIS_FIELD.items():
        values = []
        for p in axes[axis]:
            diff = {k for k, v in p.config.to_dict().items() if v != getattr(base, k)}
            assert diff <= {field}, (axis, diff)
            values.append(getattr(p.config, field))
        assert values == sorted(values) and getattr(base, field) in values
    # Fig. 19(a): lr × M the same at every point; Fig. 13: its first point; Fig. 17:
    # the base with a cosine schedule over more epochs
    update = [p.config.lr * p.config.steps_per_doc for p in axes["same_update"]]
    assert update == pytest.approx([update[0]] * len(update))
    assert [p.config.steps_per_doc for p in axes["same_update"]] == \
        [p.config.steps_per_doc for p in axes["steps"]]
    assert axes["one_step"][0].config == axes["same_update"][0].config
    assert axes["one_step"][0].config.steps_per_doc == 1
    (cos,) = axes["cosine"]
    diff = {k for k, v in cos.config.to_dict().items() if v != getattr(base, k)}
    assert diff == {"lr_schedule", "n_epochs"} and cos.config.lr_schedule == "cosine"
    if preset != "smoke":
        assert update[0] == pytest.approx(0.01) and cos.config.n_epochs == 10
    # Fig. 6: Adam reset against GD, nothing else moved but the optimizer and its lr
    adam, gd = (p.config for p in axes["optimizer"])
    assert (adam.optimizer, gd.optimizer) == ("adam_reset", "sgd")
    for c in (adam, gd):
        diff = {k for k, v in c.to_dict().items() if v != getattr(base, k)}
        assert diff <= {"optimizer", "lr"}
    if preset == "cpu":  # each at the lr chapter 1's rules pass for it
        assert (adam.lr, gd.lr) == (presets.CH1_RANDOM_PROTOCOL["lr"], 0.1)
    if preset == "cpu":
        assert [p.config.n_docs for p in axes["docs"]] == [5, 10, 20, 40]
        assert [p.config.steps_per_doc for p in axes["steps"]] == [1, 5, 10, 20]
        assert [p.config.context_len for p in axes["context"]] == [64, 128, 256]


def test_chapter3_cpu_preset_computes_every_point_and_reuses_chapter1():
    groups = {g.name: g for g in presets.groups("03_training", "cpu")}
    reused = groups["reused"].configs
    assert set(reused) <= set(presets.group("01_phenomenon", "cpu", "random_main").configs)
    assert {c.seed for c in reused} == set(range(5)) and len(reused) == 10
    listed = set(groups["runs"].configs) | set(reused)
    for pts in presets.ch3_axes("cpu").values():
        for p in pts:
            for o in ("cyclic", "shuffled"):
                for s in range(5):
                    assert replace(p.config, order=o, seed=s) in listed
    # 8 new points of Fig. 5(a-c), 3 of Fig. 19(a) (M = 10 is chapter 1's), 1 of
    # Fig. 17, 1 of Fig. 6 (Fig. 13's is Fig. 19(a)'s first): × 5 seeds × 2 orders
    assert len(groups["runs"].configs) == 130
    cost = [presets._work(c) for c in groups["runs"].configs]
    assert cost == sorted(cost)  # a stopped sweep leaves the dear points behind


def test_chapter3_pretrained_axes_stand_on_chapter1s_protocol():
    """Each pre-trained axis moves its own field(s) from chapter 1's pre-trained
    protocol, at the learning rate its rule (presets, written before the runs) says."""
    axes = presets.ch3_axes("cpu", "pretrained")
    base = presets.CH1_CPU_BASE
    assert (base.model, base.init, base.optimizer, base.lr) == ("news-14m", "pretrained",
                                                                "sgd", 0.01)
    allowed = {"docs": {"n_docs"}, "steps": {"steps_per_doc"}, "context": {"context_len"},
               "same_update": {"steps_per_doc", "lr"}, "one_step": {"steps_per_doc", "lr"},
               "cosine": {"lr_schedule", "n_epochs"}, "optimizer": {"optimizer", "lr"}}
    for axis, pts in axes.items():
        for p in pts:
            diff = {k for k, v in p.config.to_dict().items() if v != getattr(base, k)}
            assert diff <= allowed[axis], (axis, diff)
            assert p.seeds == (10, 11, 12, 13, 14)
    assert [p.config.lr * p.config.steps_per_doc for p in axes["same_update"]] == \
        pytest.approx([0.1] * 4)
    assert axes["one_step"][0].config.lr == pytest.approx(0.1)  # 10 × the base rate
    adam, gd = (p.config for p in axes["optimizer"])
    assert (adam.optimizer, adam.lr, gd.optimizer, gd.lr) == ("adam_reset", 3e-5, "sgd",
                                                              0.01)
    listed = set(presets.group("03_training", "cpu", "pretrained_runs").configs) | set(
        presets.group("03_training", "cpu", "pretrained_reused").configs)
    for pts in axes.values():
        for p in pts:
            for o in ("cyclic", "shuffled"):
                for s in p.seeds:
                    assert RunConfig(**{**p.config.to_dict(), "order": o, "seed": s}) in listed
