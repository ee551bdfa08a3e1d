"""Choosing a CPU protocol by rules fixed in advance (chapter 1; developers' guide).

A *candidate* is (model, init, tokenizer, optimizer, lr). Its pilot runs (several
seeds, both orders, pilot documents only) are judged on stability and fit, never on
the recovery score:
- stable: every run finite, and no document's loss above `max_rise` × its start;
- margin: lr ≤ `lr_margin` × the smallest lr at which any run of the same model and
  optimizer was unstable;
- fit: mean episode fit ≥ `min_fit` (an episode at least halves its document's loss);
- cost: the whole preset fits `budget_core_min` core-minutes.
Among candidates that pass, a pre-trained model is preferred, then the larger model,
then the smaller learning rate. Only numpy and the metrics are used here.
"""

from dataclasses import dataclass

import numpy as np

from . import metrics


@dataclass
class Verdict:
    """One candidate's pilot summary and which rules it passes."""

    model: str
    init: str
    optimizer: str
    lr: float
    n_runs: int
    n_unstable: int
    max_rise: float
    fit: float
    minutes_per_run: float
    stable: bool = False
    margin: bool = False
    fits: bool = False
    affordable: bool = False
    smallest_unstable_lr: float | None = None

    @property
    def passes(self) -> bool:
        return self.stable and self.margin and self.fits and self.affordable

    def as_row(self) -> dict:
        yes = {True: "yes", False: "no"}
        unstable = self.smallest_unstable_lr
        return {
            "model": self.model + ("" if self.init == "pretrained" else f" ({self.init} init)"),
            "optimizer": self.optimizer, "lr": f"{self.lr:g}", "runs": self.n_runs,
            "unstable runs": self.n_unstable, "max rise": f"{self.max_rise:.2f}",
            "mean fit": f"{self.fit:.2f}", "min / run": f"{self.minutes_per_run:.1f}",
            "stable": yes[self.stable],
            "margin": yes[self.margin] + ("" if unstable is None
                                          else f" (unstable at {unstable:g})"),
            "fit ≥ rule": yes[self.fits], "affordable": yes[self.affordable],
        }


def run_is_stable(run, max_rise: float) -> bool:
    """Finite losses and no document above `max_rise` × its starting loss."""
    e = np.asarray(run.eval_loss)
    return bool(np.isfinite(e).all() and metrics.max_relative_rise(e) <= max_rise)


def _key(c) -> tuple:
    return (c.model, c.init, c.tokenizer, c.optimizer, c.lr)


def judge(runs, *, max_rise: float, lr_margin: float, min_fit: float,
          budget_core_min: float, runs_in_preset: int = 0, spent_core_min: float = 0.0,
          **_ignored) -> list[Verdict]:
    """One Verdict per candidate among `runs` (cached Runs with .config and .meta).

    runs_in_preset: how many runs of the chosen candidate the rest of the preset needs;
    spent_core_min: what the pilot itself cost, counted against the budget.
    """
    by_cand: dict = {}
    for r in runs:
        by_cand.setdefault(_key(r.config), []).append(r)
    out = []
    for (model, init, _tok, opt, lr), rr in by_cand.items():
        stable = [run_is_stable(r, max_rise) for r in rr]
        rises = [metrics.max_relative_rise(r.eval_loss) for r in rr]
        fits = np.concatenate([metrics.episode_fit(r.eval_loss, r.order) for r in rr])
        minutes = float(np.mean([r.meta.get("wall_s", np.nan) for r in rr])) / 60
        out.append(Verdict(model, init, opt, lr, len(rr), stable.count(False),
                           float(np.nanmax(rises)) if np.isfinite(rises).any() else np.inf,
                           float(np.nanmean(fits)), minutes, stable=all(stable)))
    for v in out:
        unstable = [w.lr for w in out if (w.model, w.init, w.optimizer)
                    == (v.model, v.init, v.optimizer) and not w.stable]
        v.smallest_unstable_lr = min(unstable) if unstable else None
        v.margin = v.smallest_unstable_lr is None or v.lr <= lr_margin * min(unstable)
        v.fits = v.fit >= min_fit
        v.affordable = spent_core_min + runs_in_preset * v.minutes_per_run <= budget_core_min
    return out


def choose(verdicts: list[Verdict], n_params: dict) -> Verdict | None:
    """The candidate the rules pick: pre-trained first, then larger, then smaller lr."""
    ok = [v for v in verdicts if v.passes]
    if not ok:
        return None
    return min(ok, key=lambda v: (v.init != "pretrained", -n_params.get(v.model, 0), v.lr))


def screen_row(run, *, max_rise: float, min_fit: float, **_ignored) -> dict:
    """One screened candidate (one epoch, one seed): fit and rise only."""
    c = run.config
    fit = float(np.mean(metrics.episode_fit(run.eval_loss, run.order)))
    rise = metrics.max_relative_rise(run.eval_loss)
    ok = bool(np.isfinite(run.eval_loss).all() and rise <= max_rise and fit >= min_fit)
    return {"model": c.model, "optimizer": c.optimizer, "lr": f"{c.lr:g}",
            "T × E": f"{c.n_docs} × {c.n_epochs}", "mean fit": f"{fit:.2f}",
            "max rise": f"{rise:.2f}", "min / run": f"{run.meta['wall_s'] / 60:.1f}",
            "passes the screen": "yes: needs the full pilot" if ok else "no"}


def stability_rows(runs, max_rise: float, about: dict | None = None) -> list[dict]:
    """Per corpus and order: runs, unstable runs, max rise and mean fit.

    about: optional {corpus: description} shown beside each corpus name.
    """
    out: dict = {}
    for r in runs:
        out.setdefault((r.config.corpus, r.config.order), []).append(r)
    rows = []
    for (corpus, order), rr in out.items():
        rises = [metrics.max_relative_rise(r.eval_loss) for r in rr]
        fit = np.nanmean([metrics.episode_fit(r.eval_loss, r.order).mean() for r in rr])
        rows.append({"corpus": corpus, "order": order, "runs": len(rr),
                     "unstable": sum(not run_is_stable(r, max_rise) for r in rr),
                     "max rise": f"{np.nanmax(rises):.2f}", "mean fit": f"{fit:.2f}",
                     "corpus (what it is)": (about or {}).get(corpus, "")})
    return rows


def check_choice(chosen: Verdict | None, expected: dict, overrides: dict) -> None:
    """Fail loudly when the rules no longer pick the preset's protocol (no overrides)."""
    if overrides:
        return
    got = None if chosen is None else dict(model=chosen.model, init=chosen.init,
                                           optimizer=chosen.optimizer, lr=chosen.lr)
    want = {k: expected[k] for k in ("model", "init", "optimizer", "lr")}
    if got != want:
        raise RuntimeError(f"the pilot rules choose {got}, but the preset runs {want}: "
                           "update presets.CH1_CPU_PROTOCOL and recompute the main runs")
