"""The toy model (SPEC §6): its step, its fast simulation, and its Explore widget
(the chapter notebook runs in test_notebooks.py)."""

from pathlib import Path

import numpy as np
import pytest

from anticip_lib import metrics, orders, toy

REPO = Path(__file__).resolve().parents[1]


def _trained_losses(r):
    """ℓ_{order[k−1]} after step k, for k = 1..E·T."""
    return r.eval_loss[np.arange(1, len(r.order) + 1), r.order]


@pytest.mark.parametrize("variant", toy.VARIANTS)
@pytest.mark.parametrize("order", ["cyclic", "shuffled"])
def test_trained_task_loss_is_exactly_zero(variant, order):
    r = toy.run(n_tasks=7, dim_in=20, dim_embed=9, n_epochs=4, variant=variant, order=order)
    assert np.all(_trained_losses(r) == 0.0)
    assert np.all(r.eval_loss[1:].max(axis=1) > 0)  # the other tasks are not solved


@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_literal_step_solves_its_task(variant):
    d = toy.init_tasks(5, 12, 8, seed=3)
    P, w = d["P"], d["w"]
    for i in [0, 1, 2, 3, 4, 0]:
        P, w = toy.step(P, w, d["X"][i], d["Y"][i], 0.02, variant)
        # y − (y − z) need not round back to z exactly: zero up to rounding
        assert toy.loss(P, w, d["X"][i], d["Y"][i], variant) < 1e-28


@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_p_update_is_the_analytic_gradient(variant):
    d = toy.init_tasks(4, 6, 5, seed=1)
    P, w, x, y = d["P"], d["w"], d["X"][2], d["Y"][2]
    g = toy.grad_P(P, w, x, y, variant)
    # central differences are exact for a quadratic, up to rounding
    fd, h = np.zeros_like(P), 1e-4
    for idx in np.ndindex(P.shape):
        E = np.zeros_like(P)
        E[idx] = h
        fd[idx] = (toy.loss(P + E, w, x, y, variant) - toy.loss(P - E, w, x, y, variant)) / (
            2 * h
        )
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-10)
    P_new, _ = toy.step(P, w, x, y, 0.05, variant)
    np.testing.assert_allclose(P_new, P - 0.05 * g, rtol=0, atol=1e-15)


@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_p_update_matches_autograd(variant):
    torch = pytest.importorskip("torch")
    d = toy.init_tasks(4, 6, 5, seed=2)
    P = torch.tensor(d["P"], requires_grad=True)
    w, x, y = (torch.tensor(d[k]) for k in ("w", "X", "Y"))
    target = w if variant == "identity" else y[1] - w
    (0.5 * ((P @ x[1] - target) ** 2).sum()).backward()
    g = toy.grad_P(d["P"], d["w"], d["X"][1], d["Y"][1], variant)
    np.testing.assert_allclose(g, P.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("variant", toy.VARIANTS)
@pytest.mark.parametrize("order", ["cyclic", "shuffled"])
@pytest.mark.parametrize("dims", [(9, 5), (8, 12)])  # M ≤ T+1, and M > T+1 (subspace)
def test_fast_simulation_equals_the_literal_loop(variant, order, dims):
    N, M = dims
    cfg = toy.ToyConfig(n_tasks=5, dim_in=N, dim_embed=M, lr=0.05, n_epochs=6,
                        variant=variant, seed=4)
    ref = toy.run_reference(cfg, order)
    fast = toy.run(5, N, M, 0.05, 6, variant, 4, order)
    assert (fast.basis is not None) == (M > 6)
    np.testing.assert_array_equal(fast.order, ref.order)
    np.testing.assert_allclose(fast.eval_loss, ref.eval_loss, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(fast.solutions, ref.solutions, rtol=1e-10, atol=1e-12)


def test_variants_differ_only_in_where_solutions_start():
    """With y_i = 2 P_0 x_i the target variant's solutions start where the identity's
    do (u_i = P_0 x_i), and every loss then agrees: the mechanism is shared."""
    d = toy.init_tasks(5, 10, 6, seed=0)
    X, P0, w0 = d["X"], d["P"], d["w"]
    Y = 2 * X @ P0.T
    (Pa, wa), (Pb, wb) = (P0, w0), (P0, w0)
    for i in orders.cyclic(5, 3):
        Pa, wa = toy.step(Pa, wa, X[i], Y[i], 0.05, "identity")
        Pb, wb = toy.step(Pb, wb, X[i], Y[i], 0.05, "target")
        la = [toy.loss(Pa, wa, X[j], Y[j], "identity") for j in range(5)]
        lb = [toy.loss(Pb, wb, X[j], Y[j], "target") for j in range(5)]
        np.testing.assert_allclose(la, lb, rtol=1e-9, atol=1e-14)


def test_shapes_and_initial_state():
    T, N, M, E = 6, 11, 4, 3
    r = toy.run(T, N, M, 0.01, E, "target", seed=5)
    assert r.eval_loss.shape == (E * T + 1, T)
    assert r.solutions.shape == (E + 1, T, M)
    np.testing.assert_array_equal(r.order, orders.cyclic(T, E))
    d = toy.init_tasks(T, N, M, seed=5)
    np.testing.assert_allclose(r.solutions[0], d["Y"] - d["X"] @ d["P"].T, atol=1e-14)
    assert abs(d["P"].std() * N - 1) < 0.15  # std 1/N (App. A.5)
    assert d["X"].min() >= -1 and d["X"].max() <= 1


def test_order_array_is_accepted_and_checked():
    o = orders.shuffled(5, 3, seed=9)
    r = toy.run(n_tasks=5, dim_in=8, dim_embed=8, n_epochs=3, order=o)
    np.testing.assert_array_equal(r.order, o)
    with pytest.raises(ValueError):
        toy.run(n_tasks=5, dim_in=8, dim_embed=8, n_epochs=4, order=o)
    with pytest.raises(ValueError):
        toy.run(variant="sideways")


def test_same_seed_same_run_other_seed_other_run():
    a, b = (toy.run(n_epochs=5, variant="target", seed=3, order="shuffled") for _ in "ab")
    c = toy.run(n_epochs=5, variant="target", seed=4, order="shuffled")
    np.testing.assert_array_equal(a.eval_loss, b.eval_loss)
    np.testing.assert_array_equal(a.solutions, b.solutions)
    assert not np.allclose(a.eval_loss, c.eval_loss)
    # vectorising over seeds changes nothing
    (v,) = [r for r in toy.run_seeds([4, 3], n_epochs=5, variant="target",
                                     order="shuffled") if r.config.seed == 3]
    np.testing.assert_allclose(v.eval_loss, a.eval_loss, rtol=1e-12, atol=1e-15)


def test_recovery_rises_across_epochs_for_variant_b():
    """Fig. 10(b) setting (N = M = 100, T = 25, α = 0.01), five seeds."""
    for r in toy.run_seeds(range(5), n_epochs=20, variant="target"):
        rs, degenerate = toy.recovery_curve(r)
        assert not degenerate.any()
        assert rs[0] < rs[4] < rs[9] < rs[18]
        assert rs[0] < 0.6 and rs[18] > 0.9


@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_shuffled_order_recovers_markedly_less(variant):
    epochs = range(2, 11)
    kw = dict(seeds=range(4), n_epochs=11, variant=variant)
    cyc = [toy.recovery_curve(r, epochs)[0] for r in toy.run_seeds(**kw)]
    shu = [toy.recovery_curve(r, epochs)[0] for r in toy.run_seeds(**kw, order="shuffled")]
    assert np.mean(cyc) > np.mean(shu) + 0.25
    assert np.all(np.mean(cyc, axis=0) > np.mean(shu, axis=0))
    # and no circle forms without a fixed order
    circles = [toy.circle_order(toy.pca2(r.solutions[-1])[0])
               for r in toy.run_seeds(**kw, order="shuffled")]
    assert max(circles) < 0.3


def test_literal_setting_a_diverges_and_the_stable_readings_do_not():
    assert toy.run(dim_in=1000, dim_embed=1000, lr=0.01, n_epochs=3).diverged
    assert not toy.run(dim_in=100, dim_embed=100, lr=0.01, n_epochs=20).diverged
    assert not toy.run(dim_in=1000, dim_embed=1000, lr=0.001, n_epochs=20).diverged
    r = toy.run(dim_in=1000, dim_embed=1000, lr=0.01, n_epochs=3)
    assert np.isnan(r.eval_loss[-1]).all() and np.isnan(r.recovery(1))
    k0 = int(np.isnan(r.eval_loss[:, 0]).argmax())  # blanked from here on
    assert 0 < k0 < 25 and np.isfinite(r.eval_loss[:k0]).all()
    assert np.isfinite(r.solutions[0]).all() and np.isnan(r.solutions[1:]).all()


@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_critical_step_size(variant):
    a_c = toy.critical_lr(100, 25)
    kw = dict(seeds=range(3), n_epochs=20, variant=variant)
    assert not any(r.diverged for r in toy.run_seeds(**kw, lr=0.8 * a_c))
    assert all(r.diverged for r in toy.run_seeds(**kw, lr=1.25 * a_c))


def test_circle_order_and_pca():
    T = 12
    ang = 2 * np.pi * np.arange(T) / T
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    assert toy.circle_order(ring) == 1.0
    assert toy.circle_order(ring[::-1]) == 1.0
    assert toy.circle_order(ring[np.random.default_rng(0).permutation(T)]) < 0.5
    rng = np.random.default_rng(1)
    lifted = ring @ rng.normal(size=(2, 30)) + 5.0  # a ring in a 2-D plane of ℝ^30
    xy, share = toy.pca2(lifted)
    assert xy.shape == (T, 2) and share > 1 - 1e-12
    assert toy.circle_order(xy) == 1.0


def test_recovery_map_marks_divergence():
    m = toy.recovery_map([1e-3, 1e-2, 1e-1], "dim", [20, 100], seeds=(0, 1), epoch=3,
                         variant="target")
    assert m["rs"].shape == m["diverged"].shape == (3, 2)
    assert m["diverged"][2, 1] and not m["diverged"][:2].any()
    assert np.isnan(m["rs"][2, 1]) and np.isfinite(m["rs"][:2]).all()
    t = toy.recovery_map([1e-2], "n_tasks", [5, 10], seeds=(0,), epoch=2, variant="identity")
    assert t["rs"].shape == (1, 2)


def test_recovery_curve_agrees_with_metrics():
    r = toy.run(n_epochs=6, variant="target")
    rs, _ = toy.recovery_curve(r)
    assert rs.shape == (5,)
    assert rs[2] == pytest.approx(metrics.recovery_score(r.eval_loss, 25, 3))
    assert rs[2] == pytest.approx(r.recovery(3))


def test_explorer_redraws_on_every_control():
    """The Explore widget's callbacks run (outside a kernel: no display capture)."""
    import matplotlib

    matplotlib.use("Agg")
    from anticip_lib import widgets

    box = widgets.toy_explorer(n_tasks=6, dim_in=20, dim_embed=20, n_epochs=4)
    controls = [w for row in box.children[:5]
                for w in (row.children if hasattr(row, "children") else [row])]
    note = box.children[5]
    by_name = {w.description: w for w in controls}
    by_name["step size α"].value = 0.5  # far past the critical α for N = 20
    assert "diverged" in note.value
    by_name["step size α"].value = 0.01
    assert "diverged" not in note.value
    for name, value in [("tasks T", 9), ("epochs E", 5), ("input dim N", 50),
                        ("embed dim M", 10), ("seed", 3), ("f_i(w)", "identity"),
                        ("order", "shuffled")]:
        by_name[name].value = value
    assert "α‖x‖² ≈ 0.17" in note.value  # 0.01 · 50 / 3


@pytest.mark.slow
def test_explorer_redraws_in_a_live_kernel():
    """Executed by a real kernel (as Jupyter would): a control change replaces the
    figure under the controls in place (display handle), and nothing raises."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from anticip_lib import widgets\n"
            "box = widgets.toy_explorer(n_tasks=6, dim_in=20, dim_embed=20, n_epochs=4)"
        ),
        nbformat.v4.new_code_cell(
            "box.children[0].children[0].value = 8\n"
            "box.children[2].children[0].value = 0.5\n"
            "print(box.children[5].value)"
        ),
    ]

    def images(cell):
        return [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]

    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        before = images(nb.cells[0])
        client.execute_cell(nb.cells[1], 1)
        after = images(nb.cells[0])
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "diverged" in printed
    assert len(before) == len(after) == 1 and before != after  # replaced, not appended
    assert not images(nb.cells[1])


def test_chapter_claims_are_judged_by_the_one_rule():
    """Chapter 7's claims (Figs. 10(a), 10(b), growth, 11): each estimand cyclic −
    shuffled paired by seed, judged by verdicts.judge; texts carry intervals and p."""
    from scipy import stats as ss

    from anticip_lib import verdicts

    seeds = (0, 1, 2, 3, 4)
    values = toy.claim_values(seeds)
    # Fig. 10(b)'s estimand by hand: RS(10) of each seed's cyclic run minus its shuffled
    kw = dict(toy.CLAIM_SETTING, variant="target")
    cyc = [toy.recovery_curve(r, [10])[0][0] for r in toy.run_seeds(seeds, **kw)]
    shu = [toy.recovery_curve(r, [10])[0][0]
           for r in toy.run_seeds(seeds, order="shuffled", **kw)]
    assert values["10b"] == pytest.approx(np.subtract(cyc, shu))
    J = toy.judge_claims(seeds)
    assert set(J) == {"10a", "10b", "growth", "11"}
    for k, j in J.items():
        assert j.word in verdicts.WORDS and j.claim.margin == toy.TOY_MARGIN
        assert j.p == pytest.approx(ss.ttest_1samp(values[k], 0).pvalue)
    assert J["10b"].word == "reproduced"
    for row in toy.verdict_rows(J):
        assert "[" in row["measured (95 % interval, p)"] and "±" not in \
            row["measured (95 % interval, p)"]
        assert row["verdict"] in verdicts.WORDS
