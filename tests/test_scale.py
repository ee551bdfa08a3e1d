"""Chapter 2: changed shapes, the pre-trained checkpoints, the axes and their verdicts."""

import math

import numpy as np
import pytest
import torch
from scipy import stats as ss

from anticip_lib import models as M
from anticip_lib import presets, pretrain, results, scale, stats, verdicts
from anticip_lib.config import RunConfig


# ---- shapes ----------------------------------------------------------------------

def test_changed_shape_has_the_hand_counted_parameters():
    # d=32, L=1, h=2, vocab 257, FFN 4d = 128, every Linear with a bias:
    # embed_in + embed_out 2·257·32; per block 2 LayerNorms 2·2·32, qkv 32·96+96,
    # out 32·32+32, FFN 32·128+128 + 128·32+32; final LayerNorm 2·32
    block = 2 * 2 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
    want = 2 * 257 * 32 + block + 2 * 32
    m, _ = M.load_model("tiny-gpt", init="pythia", width=32, depth=1, heads=2)
    c = m.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
            c.intermediate_size) == (32, 1, 2, 128)
    assert sum(p.numel() for p in m.parameters()) == want


def test_pythia_init_uses_the_changed_width_and_depth():
    d, L = 256, 2
    m = M.random_model("pythia-14m", 257, init="pythia", width=d, depth=L, heads=8)
    for n, p in m.named_parameters():
        if "norm" in n or "bias" in n:
            continue
        if "dense_4h_to_h" in n or "attention.dense" in n:
            assert p.std().item() == pytest.approx(2 / (L * d ** 0.5), rel=0.05), n
        elif "dense_h_to_4h" in n or "query_key_value" in n:
            assert p.std().item() == pytest.approx((2 / (5 * d)) ** 0.5, rel=0.05), n


def test_a_changed_shape_equal_to_a_registry_shape_is_the_same_model():
    a = M.random_model("pythia-14m", 257, width=256, heads=8, seed=3)
    b = M.random_model("pythia-31m", 257, seed=3)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize("kwargs, word", [
    (dict(model="pythia-14m", init="pythia", heads=3), "heads=3"),  # 128 % 3
    (dict(model="pythia-14m", init="pythia", width=64, heads=16), "heads=16"),  # 4 dims
    (dict(model="smollm2-135m", width=64), "width"),  # pre-trained: fixed weights
    (dict(model="pythia-14m", init="pythia", depth=-1), "depth"),
    (dict(model="pythia-14m", init="pythia", width=2.5), "width"),
])
def test_bad_shapes_fail_before_any_weights_load(kwargs, word):
    from anticip_lib.trainer import check_run

    cfg = RunConfig(corpus="cnn-embedded", n_docs=2, context_len=16, tokenizer="tiny-gpt"
                    if kwargs.get("init") else "auto", **kwargs)
    with pytest.raises(ValueError, match=word):
        check_run(cfg)


def test_shape_fields_keep_old_keys_and_name_new_ones():
    old = RunConfig(model="pythia-14m", init="pythia")
    assert "width" not in old.key_dict() and old.arch() == {}
    new = RunConfig(model="pythia-14m", init="pythia", width=64, heads=8)
    assert new.arch() == {"width": 64, "heads": 8}
    assert results.config_key(old) != results.config_key(new)
    assert "_pythia_w64_h8_" in results.run_stem(new)
    assert M.describe("pythia-14m", "pythia", width=64, heads=8).startswith(
        "Pythia-14M architecture with d=64, h=8, random init")


# ---- pre-training ----------------------------------------------------------------

def test_learning_rate_schedule_by_hand():
    r = dict(warmup=4, steps=104, min_lr=0.1)
    assert pretrain._lr_factor(0, r) == pytest.approx(0.25)
    assert pretrain._lr_factor(3, r) == pytest.approx(1.0)
    assert pretrain._lr_factor(4, r) == pytest.approx(1.0)  # cosine starts at the top
    assert pretrain._lr_factor(54, r) == pytest.approx(0.55)  # half-way: (1 + 0.1) / 2
    assert pretrain._lr_factor(104, r) == pytest.approx(0.1)


def test_revisions_are_checked():
    assert pretrain.revisions("news-tiny") == ("step0", "step10", "step20", "main")
    assert pretrain.step_of("news-tiny", "main") == 20
    with pytest.raises(ValueError, match="revision must be one of step0, step10"):
        M.load_model("news-tiny", revision="step15")
    with pytest.raises(ValueError, match="model must be one of"):
        pretrain.recipe("news-2b")


# ---- presets ---------------------------------------------------------------------

def test_chapter2_shapes_match_the_registry():
    for name, dims in presets.CH2_SHAPES.items():
        s = M.MODELS[name]
        assert (s.d_model, s.n_layers, s.n_heads) == dims


def test_cpu_axes_hold_what_the_book_says():
    axes = presets.ch2_axes("cpu")
    dims = {a: [presets.ch2_dims(p.config) for p in pts]
            for a, pts in axes.items() if a not in ("steps", "steps_ch1_lr", "pretrained")}
    assert dims["width"] == [(64, 6, 8), (128, 6, 8), (256, 6, 8), (512, 6, 8)]
    assert dims["depth"] == [(128, L, 4) for L in (2, 4, 6, 8, 12)]
    assert dims["heads"] == [(128, 6, h) for h in (1, 2, 4, 8)]
    assert [p.config.init for p in axes["init"]] == ["pythia", "normal"] * 2
    assert [(presets.ch2_dims(p.config)[0], p.config.lr) for p in axes["width_lr"]] == [
        (64, 3e-3), (128, 1e-3), (256, 3e-4), (512, 3e-4)]
    # the pre-trained checkpoints: the pilot's choice, and chapter 1's lr kept beside it
    assert {p.config.lr for p in axes["steps"]} == {presets.CH2_STEPS_PROTOCOL["lr"]}
    assert {p.config.lr for p in axes["steps_ch1_lr"]} == {1e-3}
    assert [p.config.revision for p in axes["steps"]] == list(presets.CH2_REVISIONS)
    # the 14M shape is chapter 1's runs: same configs, not recomputed
    reused = presets.group("02_scale", "cpu", "reused").configs
    ch1 = set(presets.group("01_phenomenon", "cpu", "random_main").configs)
    assert set(reused) <= ch1 and {c.seed for c in reused} == set(range(5))
    # every point of every axis is computed: 5 seeds (its own, where it has them) ×
    # both orders
    listed = set(presets.configs("02_scale", "cpu"))
    for pts in axes.values():
        for p in pts:
            for o in ("cyclic", "shuffled"):
                for s in p.seeds or range(5):
                    assert RunConfig(**{**p.config.to_dict(), "order": o, "seed": s}) in listed
    # Fig. 2(a): the family under chapter 1's protocol, each member at its own lr, on
    # chapter 1's fresh seeds; the member chapter 1 runs is its main runs
    fam = axes["pretrained"]
    assert set(presets.CH2_FAMILY_LR) == set(presets.CH1_FAMILY)
    assert [p.config.model for p in fam] == [m for m in presets.CH1_FAMILY
                                             if presets.CH2_FAMILY_LR[m]]
    base = presets.CH1_CPU_BASE
    for p in fam:
        diff = {k for k, v in p.config.to_dict().items() if v != getattr(base, k)}
        assert diff <= {"model", "lr"} and p.config.lr == presets.CH2_FAMILY_LR[p.label]
        assert p.seeds == presets.CH1_SEEDS["main"][:5]
    main = set(presets.group("01_phenomenon", "cpu", "main").configs)
    reused = presets.group("02_scale", "cpu", "reused_pretrained").configs
    assert set(reused) <= main and len(reused) == 10


def test_paper_axes_are_the_papers_runs():
    axes = presets.ch2_axes("paper")
    assert [p.config.model for p in axes["pretrained"]] == [
        "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b", "pythia-2.8b"]
    assert {p.config.revision for p in axes["size"]} == {"step0"}
    assert [p.config.revision for p in axes["steps"]][:2] == ["step6000", "step12000"]
    c = axes["width"][0].config
    assert (c.model, c.init, c.width, c.optimizer, c.lr) == ("pythia-1b", "pythia", 256,
                                                             "sgd", 1e-3)


def test_seeds_override_applies_to_every_group():
    S = presets.settings("02_scale", dict(preset="cpu", seeds=[7, 8], device="auto"))
    assert {c.seed for g in S.groups for c in g.configs} == {7, 8}
    with pytest.raises(ValueError, match="unknown parameter.*model for 02_scale"):
        presets.settings("02_scale", dict(preset="cpu", seeds=None, device="auto"),
                         defined={"preset", "model"})


# ---- verdicts along an axis (hand-made per-seed values) ----------------------------
# Each claim kind of scale.CLAIMS / TRAINING_CLAIMS through scale.claim, with hand-worked
# numbers (t_{0.975,4} = 2.776, t_{0.95,4} = 2.132); p-values checked against scipy's own
# one-sample t-test, never against anticip_lib.

FLAT = [0.01, -0.01, 0.02, -0.02, 0.0]  # mean 0, sd 0.0158: 90 % interval ±0.0151


def _point(label, cyc, shuf, seeds=(0, 1, 2, 3, 4), final=None, expected=5):
    cyc, shuf = np.asarray(cyc, float), np.asarray(shuf, float)
    final = np.zeros(len(seeds)) if final is None else np.asarray(final, float)
    return dict(label=label, n=len(seeds), expected=expected, seeds=list(seeds),
                rs_cyc=cyc, rs_shuf=shuf, contrast=stats.paired_interval(cyc, shuf),
                final=final)


def _contrast(label, values, **kw):
    """A point whose cyclic − shuffled contrast per seed is `values` (floor 0.1)."""
    return _point(label, np.asarray(values) + 0.1, [0.1] * len(values), **kw)


def _tost(values, margin=0.05):
    lo = ss.ttest_1samp(values, -margin, alternative="greater").pvalue
    hi = ss.ttest_1samp(values, margin, alternative="less").pvalue
    return max(lo, hi)


def test_claims_are_declared_with_estimand_kind_margin_and_paper():
    every = {c.item: c for c in scale.CLAIMS + scale.TRAINING_CLAIMS}
    assert all(c.what == "contrast" for c in every.values())  # one estimand
    assert all(c.claim.margin == 0.05 for c in every.values())
    assert {k for k, c in every.items() if c.claim.kind == "equivalence"} == {
        "Fig. 14", "Fig. 5(b), M = 1"}
    assert every["Fig. 5(c)"].claim.direction == -1
    assert every["Fig. 15"].kind == "pairs" and every["Fig. 2(a)"].kind == "trend"
    assert every["Fig. 6"].claim.paper == pytest.approx(0.689 - 0.211)
    assert set(c.kind for c in every.values()) <= set(scale.KINDS)


def test_trend_is_the_paired_change_of_the_contrast():
    lo = _point("small", [0.2, 0.3, 0.2, 0.3, 0.25], [0.1, 0.1, 0.1, 0.1, 0.1])
    hi = _point("big", [0.4, 0.5, 0.45, 0.5, 0.4], [0.1, 0.2, 0.1, 0.1, 0.1])
    # contrasts per seed: small 0.1, 0.2, 0.1, 0.2, 0.15; big 0.3, 0.3, 0.35, 0.4, 0.3
    iv = scale.change(lo, hi)  # big − small: 0.2, 0.1, 0.25, 0.2, 0.15
    assert iv.mean == pytest.approx(0.18) and iv.n == 5
    sd = np.std([0.2, 0.1, 0.25, 0.2, 0.15], ddof=1)  # √(0.013 / 4) = 0.0570
    assert iv.hi - iv.mean == pytest.approx(2.776445 * sd / math.sqrt(5), rel=1e-5)
    # t = 0.18 / 0.0255 = 7.06, p = 0.0021; interval 0.18 ± 0.0708 = [0.11, 0.25]
    row = scale.claim("Fig. 3(a)", {"width": [lo, hi]}, 4)
    p = ss.ttest_1samp([0.2, 0.1, 0.25, 0.2, 0.15], 0).pvalue
    assert p == pytest.approx(0.0021, abs=1e-4)
    assert row["verdict"] == "reproduced" and row["judgement"].p == pytest.approx(p)
    assert row["measured"] == ("cyclic − shuffled RS at RS(4), big minus small: "
                               "0.18 [0.11, 0.25], p = 0.0021, n = 5")
    assert row["magnitude"] == "—" and row["estimand"].startswith("cyclic − shuffled")
    row = scale.claim("Fig. 3(a)", {"width": [hi, lo]}, 4)
    assert row["verdict"] == "opposite"
    # no change (FLAT): the 90 % interval ±0.015 lies within ±0.05, absence shown
    flat = _contrast("flat", np.asarray([0.1, 0.2, 0.1, 0.2, 0.15]) + FLAT)
    assert scale.claim("Fig. 3(a)", {"width": [lo, flat]}, 4)["verdict"] == \
        "not reproduced"
    # a wide change holding zero: −0.1 … 0.2 (mean 0.03, 95 % [−0.12, 0.18])
    wide = _contrast("wide", np.asarray([0.1, 0.2, 0.1, 0.2, 0.15])
                     + [0.0, 0.2, -0.1, 0.1, -0.05])
    assert scale.claim("Fig. 3(a)", {"width": [lo, wide]}, 4)["verdict"] == "undetermined"
    # one point on the axis: a trend cannot be read
    row = scale.claim("Fig. 2(a)", {"pretrained": [lo]}, 4)
    assert row["verdict"] == "not tested (one point on the axis so far (small))"
    assert row["judgement"].word == "not tested" and row["measured"] == "—"


def test_change_pairs_only_the_seeds_both_points_have():
    a = _point("a", [0.1, 0.2, 0.3], [0, 0, 0], seeds=(0, 1, 2))
    b = _point("b", [0.5, 0.7], [0, 0], seeds=(1, 2))
    assert scale.change(a, b).n == 2
    assert scale.change(a, b).mean == pytest.approx(((0.5 - 0.2) + (0.7 - 0.3)) / 2)
    assert scale.change_values(a, b) == pytest.approx([0.3, 0.4])


def test_little_effect_is_an_equivalence_claim():
    """Fig. 14, 'little effect': two one-sided tests against ±0.05, fixed in advance."""
    few = _contrast("h=1", [0.2, 0.2, 0.2, 0.2, 0.2])
    same = _contrast("h=8", np.asarray([0.2] * 5) + FLAT)  # change = FLAT
    row = scale.claim("Fig. 14", {"heads": [few, same]}, 4)
    assert row["verdict"] == "reproduced"
    assert row["judgement"].p == pytest.approx(_tost(FLAT))
    assert "p_TOST = 0.0011" in row["measured"]
    # chapter 2's case: change 0.05, 0.1, 0.08, 0.06, 0.11 (mean 0.08, sd 0.0255, se
    # 0.0114): 95 % [0.048, 0.112] excludes 0 but reaches into ±0.05: not shown to be
    # more than little, so neither the claim nor its opposite: undetermined
    up = [0.05, 0.1, 0.08, 0.06, 0.11]
    more = _contrast("h=8", np.asarray([0.2] * 5) + up)
    j = scale.claim("Fig. 14", {"heads": [few, more]}, 4)["judgement"]
    assert j.interval.lo == pytest.approx(0.0483, abs=1e-4) and j.interval.excludes_zero()
    assert j.word == "undetermined"
    # change 0.2 … 0.3: 95 % wholly beyond +0.05: more than a little effect
    big = _contrast("h=8", np.asarray([0.2] * 5) + [0.2, 0.25, 0.3, 0.22, 0.28])
    assert scale.claim("Fig. 14", {"heads": [few, big]}, 4)["verdict"] == "not reproduced"


def test_pairs_claim_and_missing_points():
    pythia = _point("Pythia", [0.3] * 4 + [0.35], [0.1] * 5, final=[2.0] * 5)
    normal = _point("normal", [0.1, 0.12, 0.1, 0.11, 0.1], [0.1] * 5, final=[2.5] * 5)
    # contrast Pythia − normal per seed: 0.2, 0.18, 0.2, 0.19, 0.25 (mean 0.204)
    row = scale.claim("Fig. 15", {"init": [pythia, normal]}, 4)
    assert row["verdict"] == "reproduced"
    assert "Pythia minus normal: 0.20 [" in row["measured"]
    assert "shown, not judged: Pythia minus normal: RS of the cyclic runs 0.20" in \
        row["measured"]  # the cyclic-only value, the old estimand, shown beside
    assert "final loss second minus first 0.50" in row["measured"]
    # a second pair with no difference (FLAT): its TOST passes, "not reproduced"; the
    # parts differ, so the claim is "undetermined", each part's word in the text
    p31 = _contrast("Pythia 31M", [0.2] * 5)
    n31 = _contrast("normal 31M", np.asarray([0.2] * 5) - FLAT)
    row = scale.claim("Fig. 15", {"init": [pythia, normal, p31, n31]}, 4)
    j = row["judgement"]
    assert row["verdict"] == "undetermined" and [w.word for _, w in j.parts] == [
        "reproduced", "not reproduced"]
    assert "— reproduced; Pythia 31M minus normal 31M:" in row["measured"]
    assert j.p == pytest.approx(ss.ttest_1samp(FLAT, 0).pvalue)  # the largest part p
    missing = dict(label="normal", n=3, expected=5)
    assert scale.claim("Fig. 15", {"init": [pythia, missing]}, 4)["verdict"] == \
        "not tested (not yet computed: seeds missing at normal)"
    assert scale.claim("Fig. 20", {}, 4)["verdict"] == "not tested (not in this preset)"


def test_single_claim_and_its_paper_magnitude():
    # Fig. 6's single pair: Adam − GD contrasts 0.1 each seed + FLAT: 0.10 [0.08, 0.12];
    # the paper's 0.478 (v1's Fig. 6): 0.10 < 0.25 · 0.478 = 0.12, sign only
    adam = _contrast("Adam", np.asarray([0.2] * 5) + FLAT)
    gd = _contrast("GD", [0.1] * 5)
    row = scale.claim("Fig. 6", {"optimizer": [adam, gd]}, 4, table=T3)
    assert row["verdict"] == "reproduced in sign only"
    assert row["magnitude"] == "0.10 vs paper 0.48 (ratio 0.21)"
    # single: the one point's contrast, 0.1 + FLAT
    row = scale.claim("Fig. 17", {"cosine": [adam]}, 4, table=T3)
    assert row["verdict"] == "reproduced" and row["measured"].startswith(
        "cyclic − shuffled RS at RS(4) at Adam: 0.20 [0.18, 0.22], p < 0.001, n = 5")
    # fewer than 5 seeds that are all there is (expected 3): undetermined, not 'inconclusive'
    three = _contrast("three", [0.2, 0.21, 0.19], seeds=(0, 1, 2), expected=3)
    row = scale.claim("Fig. 17", {"cosine": [three]}, 4, table=T3)
    assert row["verdict"] == "undetermined" and "fewer than 5 seeds" in row[
        "judgement"].reason


def test_model_note_names_what_the_points_share():
    ch = scale.Chapter.__new__(scale.Chapter)
    lab = lambda m: f"{m} architecture, random init (Pythia recipe); byte-level"  # noqa: E731
    ch.stats = {"a": [dict(n=5, model=lab("Pythia-14M")), dict(n=5, model=lab("Pythia-31M"))],
                "b": [dict(n=5, model="ours @ step0"), dict(n=5, model="ours @ main")],
                "c": [dict(n=5, model="same"), dict(n=0)]}
    assert ch.note("a") == ("each point's model as labelled (parameters in the table), "
                            "random init (Pythia recipe); byte-level")
    assert ch.note("b") == "ours, at the checkpoint of each point"
    assert ch.note("c") == "same"


# ---- chapter 3's claims (hand-worked points) ----------------------------------------

T3 = scale.TRAINING_CLAIMS


def test_falls_claim_is_the_last_point_minus_the_first_predicted_negative():
    short = _point("C=64", [0.4, 0.5, 0.45, 0.5, 0.4], [0.1, 0.2, 0.1, 0.1, 0.1])
    long = _point("C=256", [0.2, 0.3, 0.2, 0.3, 0.25], [0.1] * 5)
    # contrasts: C=64 0.3, 0.3, 0.35, 0.4, 0.3; C=256 0.1, 0.2, 0.1, 0.2, 0.15
    row = scale.claim("Fig. 5(c)", {"context": [short, long]}, 4, table=T3)
    assert row["verdict"] == "reproduced"
    assert "C=256 minus C=64: -0.18 [-0.25, -0.11], p = 0.0021" in row["measured"]
    row = scale.claim("Fig. 5(c)", {"context": [long, short]}, 4, table=T3)
    assert row["verdict"] == "opposite"


def test_every_point_claim_combines_its_points():
    yes = _point("T=5", [0.3, 0.35, 0.3, 0.32, 0.31], [0.1] * 5)
    also = _point("T=10", [0.4, 0.45, 0.42, 0.41, 0.4], [0.1] * 5)
    # T=40's contrast 0.0, 0.2, −0.1, 0.1, −0.05: mean 0.03, sd 0.1204, 95 % [−0.12, 0.18]
    flat = _point("T=40", [0.1, 0.3, 0.0, 0.2, 0.05], [0.1, 0.1, 0.1, 0.1, 0.1])
    row = scale.claim("Fig. 5(a)", {"docs": [yes, also]}, 4, table=T3)
    j = row["judgement"]
    assert row["verdict"] == "reproduced" and "T=5: 0.22 [" in row["measured"]
    # p of "every point recovers": the largest of the parts' (intersection-union)
    p5 = ss.ttest_1samp([0.2, 0.25, 0.2, 0.22, 0.21], 0).pvalue
    p10 = ss.ttest_1samp([0.3, 0.35, 0.32, 0.31, 0.3], 0).pvalue
    assert j.p == pytest.approx(max(p5, p10))
    row = scale.claim("Fig. 5(a)", {"docs": [yes, also, flat]}, 4, table=T3)
    assert row["verdict"] == "undetermined"
    assert row["judgement"].reason == ("the parts differ: T=5 reproduced, T=10 "
                                       "reproduced, T=40 undetermined")
    assert "T=40: 0.03 [-0.12, 0.18]" in row["measured"]
    assert row["verdict"] in verdicts.WORDS


def test_no_recovery_at_the_first_point():
    """M = 1 "shows no anticipation": its contrast within ±0.05 (TOST), fixed in advance."""
    m1 = _contrast("M=1", FLAT)  # contrast 0 ± 0.015 (90 %)
    m20 = _point("M=20", [0.5, 0.52, 0.5, 0.51, 0.5], [0.1] * 5)  # contrast ~0.41
    row = scale.claim("Fig. 5(b), M = 1", {"steps": [m1, m20]}, 4, table=T3)
    assert row["verdict"] == "reproduced" and "p_TOST = 0.0011" in row["measured"]
    m1_up = _contrast("M=1", [0.2, 0.21, 0.19, 0.2, 0.2])  # 0.2, wholly beyond 0.05
    row = scale.claim("Fig. 5(b), M = 1", {"steps": [m1_up, m20]}, 4, table=T3)
    assert row["verdict"] == "not reproduced"
    # chapter 3's case: 0.07 [−0.03, 0.16] holds 0 and reaches past 0.05: undetermined
    m1_wide = _contrast("M=1", [0.0, 0.15, 0.05, 0.12, 0.03])
    row = scale.claim("Fig. 5(b), M = 1", {"steps": [m1_wide, m20]}, 4, table=T3)
    assert row["verdict"] == "undetermined"
    assert scale.claim("Fig. 5(b)", {"steps": [m1, m20]}, 4, table=T3)["verdict"] == \
        "reproduced"
