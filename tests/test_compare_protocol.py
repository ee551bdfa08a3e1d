"""compare (cyclic vs shuffled per seed) and protocol (pilot rules) on hand-worked runs."""

from types import SimpleNamespace

import numpy as np
import pytest

from anticip_lib import compare, protocol
from anticip_lib.config import RunConfig

# T = 3, E = 2, cyclic order 0 1 2 0 1 2; rows k = 0..6, columns = documents
L = np.array([
    [4.0, 4.0, 4.0],
    [1.0, 3.0, 3.5],
    [3.0, 1.0, 3.2],
    [2.0, 2.0, 1.0],
    [0.5, 2.0, 3.0],
    [1.0, 0.6, 1.0],
    [1.2, 1.0, 0.4],
])
CYCLIC = np.array([0, 1, 2, 0, 1, 2])


def run(eval_loss=L, order=CYCLIC, seed=0, wall_s=60.0, **cfg):
    kw = dict(model="tiny-gpt", init="pythia", n_docs=3, n_epochs=2, seed=seed)
    kw.update(cfg)
    return SimpleNamespace(config=RunConfig(**kw), eval_loss=np.asarray(eval_loss, float),
                           order=np.asarray(order), meta={"wall_s": wall_s})


def test_per_seed_hand_worked():
    s = compare.per_seed([run()], 3)
    # doc 0, epoch 1: peak 3 (k=2), before revisit 2 (k=3), after training 1 (k=1)
    assert s["doc1"][0, 0] == pytest.approx((3 - 2) / (3 - 1))
    # RS(1): l_max mean 8/3, l_before mean 5/3, l_after mean 1 -> 0.6
    assert s["rs"][0, 0] == pytest.approx(0.6)
    # online loss over epoch 2: L[3,0], L[4,1], L[5,2] = 2, 2, 1
    assert s["online"][0] == pytest.approx(5 / 3)
    assert s["max_rise"][0] == pytest.approx(1.0) and not s["unstable"][0]  # row 0 / row 0


def test_non_finite_run_is_unstable_and_nan():
    bad = L.copy()
    bad[4, 1] = np.inf
    s = compare.per_seed([run(bad)], 3)
    assert s["unstable"][0] and np.isnan(s["rs"][0, 0]) and np.isnan(s["online"][0])


def test_compare_pairs_by_seed_and_contrasts():
    flat = L.copy()
    flat[3, 0] = 3.0  # doc 0 no longer recovers: before = peak -> RS falls
    c = [run(seed=1), run(seed=0)]  # unsorted on purpose
    s = [run(flat, seed=0, order=CYCLIC), run(flat, seed=1, order=CYCLIC)]
    res = compare.compare(c, s, 3)
    assert res["seeds"] == [0, 1]
    rs = next(r for r in res["rows"] if r.statistic == "RS(1)")
    # shuffled (here: the flat matrix) RS(1) = (8/3 - 2) / (8/3 - 1) = 0.4
    assert rs.shuffled.mean == pytest.approx(0.4)
    assert rs.contrast.mean == pytest.approx(0.2) and rs.contrast.n == 2
    assert rs.verdict == "undetermined"  # 2 seeds < 5
    with pytest.raises(ValueError, match="same seeds"):
        compare.compare([run(seed=0)], [run(seed=1)], 3)


def _pilot(lr, rise_ok=True, fit_big=True, model="pythia-14m", n=2,
           optimizer="adam_reset"):
    e = L.copy()
    if not fit_big:  # an episode lowers its document's loss only a little
        e = np.array([[4.0, 4, 4], [3.8, 4, 4], [3.8, 3.8, 4], [3.8, 3.8, 3.8],
                      [3.7, 3.8, 3.8], [3.7, 3.7, 3.8], [3.7, 3.7, 3.7]])
    if not rise_ok:
        e = e.copy()
        e[2, 0] = 7.0  # 1.75 x its start
    return [run(e, seed=s, lr=lr, model=model, optimizer=optimizer) for s in range(n)]


RULES = dict(max_rise=1.5, lr_margin=0.5, min_fit=0.5, budget_core_min=240)


def test_judge_applies_each_rule():
    runs = (_pilot(1e-3) + _pilot(6e-3) + _pilot(1e-2, rise_ok=False)
            + _pilot(1e-4, fit_big=False))
    v = {x.lr: x for x in protocol.judge(runs, **RULES, runs_in_preset=10)}
    assert not v[1e-2].stable and v[1e-2].n_unstable == 2
    assert v[6e-3].stable and not v[6e-3].margin  # 6e-3 > 0.5 * 1e-2
    assert v[1e-3].passes and v[1e-3].smallest_unstable_lr == 1e-2
    assert v[1e-4].stable and not v[1e-4].fits
    assert v[1e-4].as_row()["rules failed"] == "fit"
    assert v[6e-3].as_row()["rules failed"] == "margin (unstable at 0.01)"
    assert v[1e-3].as_row()["rules failed"] == "none: passes"
    # cost: 10 runs x 1 min + 0 spent <= 240; with 1000 runs it is not affordable
    expensive = protocol.judge(_pilot(1e-3), **RULES, runs_in_preset=1000)[0]
    assert not expensive.affordable


def test_choose_prefers_pretrained_then_larger_then_smaller_lr():
    runs = _pilot(1e-3) + _pilot(3e-4) + _pilot(1e-3, model="pythia-70m")
    vs = protocol.judge(runs, **RULES)
    pick = protocol.choose(vs, {"pythia-14m": 14e6, "pythia-70m": 70e6})
    assert (pick.model, pick.lr) == ("pythia-70m", 1e-3)
    small = protocol.choose([v for v in vs if v.model == "pythia-14m"], {})
    assert small.lr == 3e-4
    assert protocol.choose([], {}) is None


def test_choose_prefers_the_named_optimizer_after_size_before_lr():
    runs = _pilot(1e-4) + _pilot(0.1, optimizer="sgd") + _pilot(0.3, optimizer="sgd")
    vs = protocol.judge(runs, **RULES)
    assert protocol.choose(vs, {}).optimizer == "adam_reset"  # smaller lr, no preference
    pick = protocol.choose(vs, {}, prefer_optimizer="sgd")
    assert (pick.optimizer, pick.lr) == ("sgd", 0.1)
    # a larger model still comes first, whatever its optimizer
    big = protocol.judge(_pilot(1e-4, model="pythia-70m"), **RULES)
    pick = protocol.choose(vs + big, {"pythia-70m": 70e6}, prefer_optimizer="sgd")
    assert (pick.model, pick.optimizer) == ("pythia-70m", "adam_reset")


def test_check_choice_fails_when_rules_disagree_with_preset():
    v = protocol.judge(_pilot(1e-3), **RULES)[0]
    want = dict(model="pythia-14m", init="pythia", optimizer="adam_reset", lr=1e-3)
    protocol.check_choice(v, want, {})
    with pytest.raises(RuntimeError, match="update the protocol in anticip_lib/presets.py"):
        protocol.check_choice(v, {**want, "lr": 3e-3}, {})
    protocol.check_choice(v, {**want, "lr": 3e-3}, {"lr": 3e-3})  # overrides: no check


def test_candidate_with_missing_pilot_runs_is_incomplete():
    done = _pilot(1e-3)
    missing = [r.config for r in _pilot(1e-3, model="pythia-70m")]
    vs = protocol.judge(done, **RULES, expected=[r.config for r in done] + missing)
    v = {x.model: x for x in vs}
    assert v["pythia-70m"].incomplete == "0 of 2 runs" and not v["pythia-70m"].passes
    assert "pilot incomplete" in v["pythia-70m"].as_row()["runs (unstable)"]
    assert v["pythia-14m"].passes


def test_work_units_and_screen_cost_estimate():
    # T=5, E=1, M=10: 3*50 + 6*5 = 180; T=10, E=5, M=10: 3*500 + 51*10 = 2010
    assert protocol.work_units(5, 1, 10) == 180
    assert protocol.work_units(10, 5, 10) == 2010
    r = run(wall_s=180.0)  # T=3, E=2, M=10 (RunConfig default): 3*60 + 7*3 = 201 units
    row = protocol.screen_row(r, **RULES, full_shape=dict(n_docs=10, n_epochs=5,
                              steps_per_doc=10), runs_needed=20)
    per_run = 3.0 * 2010 / 201  # minutes
    assert row["est. min per full run"] == f"{per_run:.0f}"
    assert row["passes"] == "fits and is stable, but not affordable"  # 20 * 30 > 240


def test_run_cost_is_the_least_loaded_run_of_its_model():
    runs = [run(wall_s=60.0, lr=1e-3), run(wall_s=300.0, lr=3e-3, seed=1),
            run(wall_s=120.0, model="pythia-14m", lr=1e-3)]
    assert protocol.run_minutes(runs) == {"tiny-gpt": 1.0, "pythia-14m": 2.0}
    assert protocol.spent_minutes(runs) == pytest.approx(1.0 + 1.0 + 2.0)
    v = {(x.model, x.lr): x for x in protocol.judge(runs, **RULES)}
    assert v[("tiny-gpt", 3e-3)].minutes_per_run == 1.0  # not its own 5 minutes
    early = run(wall_s=6.0, lr=1e-2, seed=2)
    early.meta["diverged"] = True  # stopped after a few episodes: not a run's cost
    assert protocol.run_minutes(runs + [early])["tiny-gpt"] == 1.0
