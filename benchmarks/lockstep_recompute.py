"""Recompute saved runs of a preset through lockstep and compare them with the saved ones.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lockstep_recompute.py 01_phenomenon \\
        --preset cpu --group pilot --model pythia-14m --k 6

Every run of the chosen groups that is already saved in the results folder is trained
again with `lockstep.run_cached_many` (groups of up to K compatible configs) into a
temporary results folder, and its eval_loss is compared with the saved one: the
largest |Δ eval_loss| and |Δ RS(E−1)| per lockstep group, with the group's protocol.
Then, for every set of runs that pairs cyclic with shuffled seeds (same config but seed
and order), the chapter's comparison (`compare.compare`: RS(n), document 1, growth,
online loss) of the saved runs and of the recomputed ones side by side, with their
verdicts: "the same results" at the level a chapter reports them.
Nothing is written to the real results folder.

Differences are rounding (batched products sum in another order), amplified by the
training dynamics: Adam reset every episode moves every weight by ~lr on its first
step, whatever the size of its gradient, so at larger learning rates `train` itself
differs at this level between 1 and 2 threads (see book/performance.md).
"""

import argparse
import os
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chapter")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--group", action="append", default=None)
    ap.add_argument("--model", default=None, help="only configs of this model")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--engine", choices=("lockstep", "train"), default="lockstep",
                    help="train: recompute one run at a time with trainer.train_run "
                         "(the control: how far `train` moves from itself at another "
                         "thread count)")
    a = ap.parse_args()

    import torch

    from anticip_lib import lockstep, metrics, presets, results

    torch.set_num_threads(a.threads)
    lockstep.tune_cpu_malloc()
    saved = []
    for g in presets.groups(a.chapter, a.preset):
        if a.group and g.name not in a.group:
            continue
        for c in g.configs:
            if a.model and c.model != a.model:
                continue
            run = results.find_run(c, g.experiment)
            if run is not None and not run.meta.get("lockstep"):
                saved.append((g.experiment, c, run))
    how = (f"in lockstep groups of ≤ {a.k}" if a.engine == "lockstep"
           else "one at a time with trainer.train_run")
    print(f"{len(saved)} saved runs to recompute {how}; "
          f"{a.threads} thread(s), loadavg {os.getloadavg()[0]:.2f} at start")
    real = os.environ.get("ANTICIP_RESULTS")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ANTICIP_RESULTS"] = os.path.join(tmp, "results")
        os.environ.setdefault("ANTICIP_CACHE", os.path.join(tmp, "cache"))
        items = [(exp, c, False) for exp, c, _ in saved]
        groups = lockstep.plan_groups(items, a.k, None, "cpu")
        by_stem = {results.run_stem(c): run for _, c, run in saved}
        worst = 0.0
        for exp, group in groups:
            t = time.time()
            if a.engine == "lockstep":
                runs = lockstep.run_cached_many(group, exp, progress=False, k=a.k)
            else:
                runs = [results.run_cached(c, exp, progress=False) for c in group]
            d_loss, d_rs = [], []
            for c, run in zip(group, runs):
                ref = by_stem[results.run_stem(c)]
                d_loss.append(np.abs(run.eval_loss - ref.eval_loss).max())
                E = c.n_epochs
                if E >= 2:
                    rs = [metrics.recovery_score(x, c.n_docs, E - 1, run.order)
                          for x in (run.eval_loss, ref.eval_loss)]
                    d_rs.append(abs(rs[0] - rs[1]))
            c0 = group[0]
            worst = max(worst, max(d_loss))
            print(f"{c0.model} {c0.optimizer} {c0.lr:g} ({len(group)} runs, "
                  f"{time.time() - t:.0f} s): max |Δ eval_loss| {max(d_loss):.1e}, "
                  f"max |Δ RS({c0.n_epochs - 1})| {max(d_rs) if d_rs else float('nan'):.1e}"
                  f"   [loadavg {os.getloadavg()[0]:.2f}]", flush=True)
        print(f"largest |Δ eval_loss| over all runs: {worst:.1e}")
        verdicts(saved, {results.run_stem(c): run for _, c, run in saved},
                 {results.run_stem(c): results.find_run(c, exp) for exp, c, _ in saved})
    if real is None:
        os.environ.pop("ANTICIP_RESULTS", None)


def verdicts(saved, before: dict, after: dict) -> None:
    """Chapter-level comparison of cyclic against shuffled, saved vs recomputed."""
    import json

    from anticip_lib import compare, results

    sets = {}
    for exp, c, _ in saved:
        rest = {k: v for k, v in c.to_dict().items() if k not in ("seed", "order")}
        sets.setdefault((exp, json.dumps(rest, sort_keys=True)), []).append(c)
    same = changed = 0
    for (exp, _), cfgs in sets.items():
        by = {o: [c for c in cfgs if c.order == o] for o in ("cyclic", "shuffled")}
        if not by["cyclic"] or not by["shuffled"]:
            continue
        c0 = by["cyclic"][0]
        print(f"\n{exp}: {c0.model} on {c0.corpus}, {c0.optimizer} {c0.lr:g}, "
              f"seeds {sorted(c.seed for c in by['cyclic'])}")
        rows = {}
        for name, runs in (("saved", before), ("recomputed", after)):
            pick = {o: [runs[results.run_stem(c)] for c in by[o]] for o in by}
            rows[name] = compare.compare(pick["cyclic"], pick["shuffled"],
                                         c0.n_docs)["rows"]
        for a, b in zip(rows["saved"], rows["recomputed"]):
            mark = "same verdict" if a.verdict == b.verdict else "verdict changes"
            same, changed = same + (a.verdict == b.verdict), changed + (a.verdict != b.verdict)
            print(f"  {a.statistic[:40]:40s} {a.contrast_name}: saved "
                  f"{a.contrast.text()} ({a.verdict}) | recomputed {b.contrast.text()} "
                  f"({b.verdict})  {mark}")
    print(f"\nverdicts: {same} the same, {changed} changed")


if __name__ == "__main__":
    main()
