"""Choosing a CPU protocol by rules fixed in advance (chapter 1; developers' guide).

A *candidate* is (model, init, tokenizer, optimizer, lr). Its pilot runs (several
seeds, both orders, pilot documents only) are judged on stability and fit, never on
the recovery score:
- stable: every run finite, and no document's loss above `max_rise` × its start;
- margin: lr ≤ `lr_margin` × the smallest lr at which any run of the same model and
  optimizer was unstable;
- fit: mean episode fit ≥ `min_fit` (an episode at least halves its document's loss);
- cost: the whole preset fits `budget_core_min` core-minutes (a run's cost: the least
  wall time among its model's runs, `run_minutes`, as the machine may be shared).
Among candidates that pass, a pre-trained model is preferred, then the larger model,
then (where the rules name one) the paper's optimizer, then the smaller learning rate. Only numpy and the metrics are used here.
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
    incomplete: str = ""  # e.g. "0 of 6 runs": the pilot did not finish this candidate

    @property
    def passes(self) -> bool:
        return (not self.incomplete and self.stable and self.margin and self.fits
                and self.affordable)

    def as_row(self) -> dict:
        """A compact table row: the pilot's numbers and which rules fail."""
        model = self.model + ("" if self.init == "pretrained" else f" ({self.init} init)")
        row = {"model": model, "optimizer": self.optimizer, "lr": f"{self.lr:g}"}
        if self.incomplete:
            return {**row, "runs (unstable)": f"pilot incomplete: {self.incomplete}",
                    "max rise": "—", "mean fit": "—", "min / run": "—",
                    "rules failed": "— (not judged)"}
        failed = [name for name, ok in (("stable", self.stable), ("margin", self.margin),
                                        ("fit", self.fits), ("cost", self.affordable))
                  if not ok]
        if not self.margin and self.smallest_unstable_lr is not None:
            failed[failed.index("margin")] = f"margin (unstable at {self.smallest_unstable_lr:g})"
        return {**row, "runs (unstable)": f"{self.n_runs} ({self.n_unstable})",
                "max rise": f"{self.max_rise:.2f}", "mean fit": f"{self.fit:.2f}",
                "min / run": f"{self.minutes_per_run:.1f}",
                "rules failed": ", ".join(failed) or "none: passes"}


def run_is_stable(run, max_rise: float) -> bool:
    """Finite losses and no document above `max_rise` × its starting loss."""
    e = np.asarray(run.eval_loss)
    return bool(np.isfinite(e).all() and metrics.max_relative_rise(e) <= max_rise)


def candidate(c) -> tuple:
    """The candidate a config belongs to: (model, init, tokenizer, optimizer, lr)."""
    return (c.model, c.init, c.tokenizer, c.optimizer, c.lr)



def run_minutes(runs) -> dict:
    """{model: minutes one of its runs costs}: the least wall time among its runs.

    The wall time of a run on a machine shared with other work overstates what it costs
    on an idle core by the load of the moment; the least-loaded run of a model is the
    best estimate of its cost (runs of one model and shape do the same work whatever
    the optimizer or learning rate). Runs that diverged stopped early and are left
    out."""
    out: dict = {}
    finished = [r for r in runs if not r.meta.get("diverged")]  # a diverged run stops
    for r in finished or runs:                                    # early: not its cost
        m = r.meta.get("wall_s", np.nan) / 60
        out[r.config.model] = min(out.get(r.config.model, np.inf), m)
    for r in runs:  # a model all of whose runs diverged: their least wall time
        out.setdefault(r.config.model, r.meta.get("wall_s", np.nan) / 60)
    return out


def spent_minutes(runs) -> float:
    """Core-minutes the runs cost on idle cores, by `run_minutes`."""
    per = run_minutes(runs)
    return float(sum(per[r.config.model] for r in runs))


def judge(runs, *, max_rise: float, lr_margin: float, min_fit: float,
          budget_core_min: float, runs_in_preset: int = 0, spent_core_min: float = 0.0,
          expected=None, **_ignored) -> list[Verdict]:
    """One Verdict per candidate among `runs` (cached Runs with .config and .meta).

    runs_in_preset: how many runs of the chosen candidate the rest of the preset needs;
    spent_core_min: what the pilot itself cost, counted against the budget;
    expected: the pilot's configs; a candidate with fewer finished runs than configs is
    reported as incomplete (it cannot pass).
    """
    by_cand: dict = {}
    for r in runs:
        by_cand.setdefault(candidate(r.config), []).append(r)
    planned: dict = {}
    for c in expected or []:
        planned[candidate(c)] = planned.get(candidate(c), 0) + 1
    out = []
    for key, n in planned.items():
        if len(by_cand.get(key, [])) < n:
            model, init, _tok, opt, lr = key
            done = len(by_cand.pop(key, []))
            out.append(Verdict(model, init, opt, lr, done, 0, np.nan, np.nan, np.nan,
                               incomplete=f"{done} of {n} runs"))
    cost = run_minutes([r for rr in by_cand.values() for r in rr])
    for (model, init, _tok, opt, lr), rr in by_cand.items():
        stable = [run_is_stable(r, max_rise) for r in rr]
        rises = [metrics.max_relative_rise(r.eval_loss) for r in rr]
        fits = np.concatenate([metrics.episode_fit(r.eval_loss, r.order) for r in rr])
        minutes = cost[model]
        out.append(Verdict(model, init, opt, lr, len(rr), stable.count(False),
                           float(np.nanmax(rises)) if np.isfinite(rises).any() else np.inf,
                           float(np.nanmean(fits)), minutes, stable=all(stable)))
    for v in out:
        if v.incomplete:
            continue
        unstable = [w.lr for w in out if (w.model, w.init, w.optimizer)
                    == (v.model, v.init, v.optimizer) and not w.stable
                    and not w.incomplete]
        v.smallest_unstable_lr = min(unstable) if unstable else None
        v.margin = v.smallest_unstable_lr is None or v.lr <= lr_margin * min(unstable)
        v.fits = v.fit >= min_fit
        v.affordable = spent_core_min + runs_in_preset * v.minutes_per_run <= budget_core_min
    return out


def choose(verdicts: list[Verdict], n_params: dict,
           prefer_optimizer: str | None = None) -> Verdict | None:
    """The candidate the rules pick: pre-trained first, then larger, then (when
    `prefer_optimizer` is given) that optimizer, then the smaller lr."""
    ok = [v for v in verdicts if v.passes]
    if not ok:
        return None
    return min(ok, key=lambda v: (v.init != "pretrained", -n_params.get(v.model, 0),
                                  prefer_optimizer is not None
                                  and v.optimizer != prefer_optimizer, v.lr))


def work_units(n_docs: int, n_epochs: int, steps_per_doc: int) -> int:
    """Document passes of a run: a training step costs ~3 (forward + backward), an
    evaluation of one document 1; used to scale a measured cost to another shape."""
    return 3 * n_docs * n_epochs * steps_per_doc + (n_docs * n_epochs + 1) * n_docs


def screen_row(run, *, max_rise: float, min_fit: float, budget_core_min: float,
               full_shape: dict, runs_needed: int, **_ignored) -> dict:
    """One screened candidate (one epoch, one seed): fit, rise and estimated cost.

    full_shape: n_docs, n_epochs, steps_per_doc of a full pilot/main run; runs_needed:
    how many such runs the candidate would need (full pilot + the preset's runs).
    The cost of a full run is the screen's measured minutes scaled by `work_units`.
    """
    c = run.config
    fit = float(np.mean(metrics.episode_fit(run.eval_loss, run.order)))
    rise = metrics.max_relative_rise(run.eval_loss)
    scale = work_units(**full_shape) / work_units(c.n_docs, c.n_epochs, c.steps_per_doc)
    full_min = run.meta["wall_s"] / 60 * scale
    ok = bool(np.isfinite(run.eval_loss).all() and rise <= max_rise and fit >= min_fit)
    cheap = runs_needed * full_min <= budget_core_min
    verdict = ("no: fit or stability" if not ok else
               "fits and is stable, but not affordable" if not cheap else
               "yes: needs the full pilot")
    return {"model": c.model, "optimizer": c.optimizer, "lr": f"{c.lr:g}",
            "T × E": f"{c.n_docs} × {c.n_epochs}", "mean fit": f"{fit:.2f}",
            "max rise": f"{rise:.2f}", "min (screen)": f"{run.meta['wall_s'] / 60:.1f}",
            "est. min per full run": f"{full_min:.0f}",
            f"est. core-min for {runs_needed} runs": f"{runs_needed * full_min:.0f}",
            "passes": verdict}


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
                           "update the protocol in anticip_lib/presets.py and recompute "
                           "the runs that use it")
