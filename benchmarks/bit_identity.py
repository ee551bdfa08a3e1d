"""Committed runs recomputed through today's training engine, bit for bit (issue #18).

    python benchmarks/bit_identity.py                      # 2 runs of each chapter
    python benchmarks/bit_identity.py --per-chapter 4 --chapters 03_training

For a sample of the committed runs of chapters 1, 2 and 3 (results/<chapter>/, read
through `anticip_lib.results`), the same RunConfig is trained again with
`trainer.train_run` at one torch thread (as the committed runs were: their json says
`torch_threads: 1`) and default settings, and every eval_loss and train_loss array
is compared exactly. The sample takes, per chapter, the fastest run of each
(model, optimizer, lr schedule) present, so every protocol of the chapter shows up,
up to --per-chapter runs. Prints one line per run and the largest |Δ|; exits 1 when
any array differs. A measurement (minutes), not a test.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample(chapter: str, per_chapter: int):
    """[(experiment, RunConfig)]: the fastest committed run of each protocol."""
    from anticip_lib import results
    from anticip_lib.config import RunConfig

    best = {}
    for js in sorted((results.results_dir() / chapter).rglob("*.json")):
        meta = json.loads(js.read_text())
        if not isinstance(meta.get("config"), dict) or meta.get("records"):
            continue
        try:
            cfg = RunConfig.from_dict(meta["config"])
        except (TypeError, ValueError):
            continue
        if cfg.init == "pretrained":  # random init only: no weights to fetch or convert
            continue
        if meta.get("versions", {}).get("torch_threads") != 1 or meta.get("lockstep"):
            continue  # computed at 2 threads or in lockstep: not a bit-for-bit reference
        kind = (cfg.model, cfg.optimizer, cfg.lr_schedule)
        exp = js.parent.relative_to(results.results_dir()).as_posix()
        wall = meta.get("wall_s", 1e9)
        if kind not in best or wall < best[kind][0]:
            best[kind] = (wall, exp, cfg)
    picked = sorted(best.values(), key=lambda t: t[0])[:per_chapter]
    return [(exp, cfg) for _, exp, cfg in picked]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chapters", nargs="+",
                    default=["01_phenomenon", "02_scale", "03_training"])
    ap.add_argument("--per-chapter", type=int, default=2)
    a = ap.parse_args(argv)

    import torch

    from anticip_lib import results, trainer

    torch.set_num_threads(1)
    worst, n, bad = 0.0, 0, 0
    for chapter in a.chapters:
        for exp, cfg in sample(chapter, a.per_chapter):
            saved = results.load_run(cfg, exp)
            if saved is None:
                print(f"SKIP {exp}/{results.run_stem(cfg)}: does not load")
                continue
            t0 = time.perf_counter()
            run = trainer.train_run(cfg, progress=False)
            dt = time.perf_counter() - t0
            d_eval = float(np.nanmax(np.abs(run.eval_loss - saved.eval_loss)))
            d_train = float(np.nanmax(np.abs(run.train_loss - saved.train_loss)))
            same = (np.array_equal(run.eval_loss, saved.eval_loss, equal_nan=True)
                    and np.array_equal(run.train_loss, saved.train_loss, equal_nan=True))
            n += 1
            bad += not same
            worst = max(worst, d_eval, d_train)
            print(f"{'same' if same else 'DIFFERS'}  max|Δ| eval {d_eval:.3g} train "
                  f"{d_train:.3g}  ({dt:.0f} s)  {exp}/{results.run_stem(cfg)}", flush=True)
    print(f"{n} committed runs recomputed at 1 thread: {n - bad} bit-identical, "
          f"{bad} differ; largest |Δ| {worst:.3g} (torch {torch.__version__})")
    return 1 if bad or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
