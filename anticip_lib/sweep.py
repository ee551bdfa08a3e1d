"""Compute every missing run of a chapter's preset: `python -m anticip_lib.sweep`.

    python -m anticip_lib.sweep 01_phenomenon --preset cpu            # all of it, here
    python -m anticip_lib.sweep 01_phenomenon --preset cpu --dry-run  # what is missing
    python -m anticip_lib.sweep 01_phenomenon --preset cpu --group pilot --shard 1/2
    python -m anticip_lib.sweep 01_phenomenon --preset cpu --lockstep 8  # 8 runs at once

Runs go through the results cache: finished runs are skipped, interrupted ones resume
from their last checkpoint, so a sweep stopped at any point (Ctrl-C, a killed process,
a closed laptop) picks up where it stopped when started again. `--shard i/n` takes the
runs whose results key falls in part i of n (a hash of the run's file stem, so it does
not depend on what is missing when a process starts), so n processes (one per core),
started together or not, share a sweep without a scheduler. The exit status is non-zero when a run failed; the summary names it.
"""

import argparse
import sys
import time
import traceback

from . import presets

VISION = ("05_vision",)  # chapters whose runs are VisionConfigs (local engine only)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like 0/2, got {text!r}")
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anticip_lib.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("chapter", choices=presets.CHAPTERS)
    p.add_argument("--preset", choices=presets.PRESETS, required=True)
    p.add_argument("--group", action="append", default=None,
                   help="only this group of the preset (repeatable)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: in this process, one run after another; ray: one Ray "
                        "task per run")
    p.add_argument("--address", default=None, help="an existing Ray cluster (ray engine)")
    p.add_argument("--workers", type=int, default=None,
                   help="ray engine: runs at once (default: the cluster's CPUs / threads)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (default 1: one run per core is fastest)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N")
    p.add_argument("--lockstep", type=int, default=1, metavar="K",
                   help="local engine: train up to K compatible runs (same config but "
                        "seed and order) at once in one batched computation "
                        "(anticip_lib.lockstep); K is capped by memory. Default 1: off")
    p.add_argument("--lockstep-mem", type=float, default=None, metavar="GB",
                   help="memory the lockstep groups may use (default: half the free "
                        "RAM, or 80%% of a GPU's free memory)")
    p.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    a = p.parse_args(argv)
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    if a.workers is not None and a.workers < 1:
        p.error(f"--workers must be >= 1, got {a.workers}")
    if a.address and a.engine != "ray":
        p.error("--address needs --engine ray")
    if a.lockstep < 1:
        p.error(f"--lockstep must be >= 1, got {a.lockstep}")
    if a.lockstep > 1 and a.engine != "local":
        p.error("--lockstep needs --engine local")
    if a.lockstep_mem is not None and not a.lockstep_mem > 0:
        p.error(f"--lockstep-mem must be > 0 GB, got {a.lockstep_mem}")
    if a.chapter in VISION and (a.engine != "local" or a.lockstep > 1):
        p.error(f"--engine ray and --lockstep train language-model runs; {a.chapter} "
                "runs with the local engine")
    try:
        known = [g.name for g in presets.groups(a.chapter, a.preset)]
    except ValueError as err:  # a preset that cannot run from here says why
        p.error(str(err))
    if a.group:
        for name in a.group:
            if name not in known:
                p.error(f"--group must be one of {', '.join(known) or '(none)'} for "
                        f"{a.chapter} --preset {a.preset}; got {name!r}")
    return a


def cache(config):
    """The results cache of a config's kind: `results` for the language chapters'
    RunConfigs, `vision` for chapter 5's VisionConfigs. Both have find_run (quiet),
    run_cached and run_stem."""
    from . import results  # imports torch: only when a sweep really starts
    from .config import RunConfig

    if isinstance(config, RunConfig):
        return results
    from . import vision

    return vision


def plan(chapter: str, preset: str, groups=None, shard=(0, 1)):
    """[(experiment, config, done)] for the runs of this shard, in preset order."""
    todo = []
    for g in presets.groups(chapter, preset):
        if groups and g.name not in groups:
            continue
        for c in g.configs:
            todo.append((g.experiment, c,
                         cache(c).find_run(c, g.experiment) is not None))
    return [t for t in todo if t[2] or shard_of(cache(t[1]).run_stem(t[1]), shard[1])
            == shard[0]]


def shard_of(stem: str, n: int) -> int:
    """The shard (0..n-1) of a run: a stable hash of its file stem, the same in every
    process whatever is missing when it starts."""
    import hashlib

    return int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % n


def _fmt_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run_local(items, *, device="cpu", threads=1, log=print) -> list[tuple]:
    """Compute the missing runs one after another in this process; [(cfg, error)]."""
    import torch

    torch.set_num_threads(threads)
    if device == "cpu":  # reuse freed logits memory between steps: speed only, same numbers
        from .lockstep import tune_cpu_malloc
        tune_cpu_malloc()
    missing = [(e, c) for e, c, done in items if not done]
    failed, t0 = [], time.time()
    for i, (exp, cfg) in enumerate(missing):
        left = len(missing) - i
        eta = "" if i == 0 else f", ETA {_fmt_eta((time.time() - t0) / i * left)}"
        log(f"[{i}/{len(missing)} done, 1 running, {left - 1} left{eta}] "
            f"{cache(cfg).run_stem(cfg)}")
        try:
            cache(cfg).run_cached(cfg, exp, device=device, progress=sys.stderr.isatty())
        except KeyboardInterrupt:
            log("interrupted: finished runs are saved; run the same command to resume")
            raise
        except Exception as err:  # noqa: BLE001 - reported in the summary
            traceback.print_exc()
            failed.append((cfg, f"{type(err).__name__}: {err}"))
    return failed


def _fmt_time(seconds: float) -> str:
    """Run time for the summary: seconds under a minute (a short run is not 0.0)."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def run_seconds(run) -> float:
    """A run's own compute time from its provenance (language runs: wall_s; vision
    runs: total_s); 0 when not recorded."""
    return float(run.meta.get("wall_s", run.meta.get("total_s", 0)) or 0)


def folders(items) -> dict:
    """{experiment: (results folder, checkpoint folder)} of the runs in `items`
    (`$ANTICIP_RESULTS`, `$ANTICIP_CACHE`); nothing is created."""
    from . import paths

    return {exp: (paths.results_dir() / exp, paths.cache_dir() / "checkpoints" / exp)
            for exp in dict.fromkeys(e for e, *_ in items)}


def _unlink_unheld(path) -> bool:
    """Delete a lock file unless a process holds its flock now; True when deleted."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock locks to tidy
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        path.unlink(missing_ok=True)
        return True


def tidy_locks(items) -> int:
    """Remove the lock files of the finished runs in `items`; returns how many.

    A run's lock (an empty file held with flock while the run computes) is not
    needed once its results are saved: a process still waiting on one finds the
    results when it gets the lock and loads them instead of computing. A lock held
    now (another process is inside) is left alone."""
    removed = 0
    for exp, (res_dir, ckpt_dir) in folders(items).items():
        for e, cfg, _ in items:
            if e != exp or cache(cfg).find_run(cfg, exp) is None:
                continue
            stem = cache(cfg).run_stem(cfg)
            for path in (ckpt_dir / f"{stem}.lock", res_dir / ".locks" / f"{stem}.lock"):
                if path.exists() and _unlink_unheld(path):
                    removed += 1
        for d in (res_dir / ".locks",):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    return removed


def summary(items, failed, log=print) -> None:
    """Per results folder: the runs done, diverged, failed and missing, their compute
    time, and where the results and checkpoints are."""
    bad = {cache(c).run_stem(c): why for c, why in failed}
    rows = {}
    for exp, cfg, _ in items:
        r = cache(cfg).find_run(cfg, exp)
        stem = cache(cfg).run_stem(cfg)
        state = ("failed" if stem in bad else "missing" if r is None
                 else "diverged" if r.meta.get("diverged") else "done")
        g = rows.setdefault(exp, {"done": 0, "diverged": 0, "failed": 0, "missing": 0,
                                  "seconds": 0.0})
        g[state] += 1
        if r is not None:
            g["seconds"] += run_seconds(r)
    log(f"{'experiment':24} {'done':>5} {'diverged':>8} {'failed':>6} "
        f"{'missing':>7} {'run time':>9}")
    for exp, g in rows.items():
        log(f"{exp:24} {g['done']:5d} {g['diverged']:8d} {g['failed']:6d} "
            f"{g['missing']:7d} {_fmt_time(g['seconds']):>9}")
    for exp, (res_dir, ckpt_dir) in folders(items).items():
        log(f"{exp}: results in {res_dir.resolve()}"
            + (f"; checkpoints of unfinished runs in {ckpt_dir.resolve()}"
               if rows.get(exp, {}).get("missing") or rows.get(exp, {}).get("failed")
               else ""))
    for stem, why in bad.items():
        log(f"FAILED {stem}: {why}")


def main(argv=None) -> int:
    a = parse_args(argv)
    items = plan(a.chapter, a.preset, a.group, a.shard)
    n_done = sum(done for *_, done in items)
    print(f"{a.chapter} --preset {a.preset}: {len(items)} runs in this shard, "
          f"{n_done} done, {len(items) - n_done} to compute")
    for res, _ in folders(items).values():
        print(f"results in {res.resolve()}")
    if a.dry_run:
        for exp, cfg, done in items:
            print(f"  {'done ' if done else 'to do'}  {exp}/{cache(cfg).run_stem(cfg)}")
        return 0
    if a.engine == "ray":
        from .sweep_ray import run_ray
        failed = run_ray(items, address=a.address, workers=a.workers, threads=a.threads,
                         device=a.device)
    elif a.lockstep > 1:
        from .lockstep import run_lockstep
        budget = None if a.lockstep_mem is None else int(a.lockstep_mem * 2**30)
        failed = run_lockstep(items, k=a.lockstep, device=a.device, threads=a.threads,
                              budget=budget)
    else:
        failed = run_local(items, device=a.device, threads=a.threads)
    tidy_locks(items)
    summary(items, failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
