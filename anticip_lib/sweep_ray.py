"""The Ray engine of `python -m anticip_lib.sweep --engine ray`: one Ray task per run.

    python -m anticip_lib.sweep 01_phenomenon --preset cpu --engine ray --workers 2
    python -m anticip_lib.sweep 01_phenomenon --preset paper --engine ray \\
        --address head-node:6379 --device cuda

- **Cluster.** Without `--address` a local Ray cluster is started for the sweep with
  `workers × threads` CPUs (all the machine's CPUs when `--workers` is not given) and
  shut down at the end. With `--address` the sweep connects to an existing cluster
  (`ray start --head` on one machine, `ray start --address …` on the others); the
  cluster is left running. Nothing is started when no run is missing.
- **Resources of a task.** `num_cpus` = `--threads` (the run's torch threads). With a
  CUDA device (`--device cuda`, or `auto` on a cluster that has GPUs) a task also asks
  for `gpu_fraction(config)` of a GPU, read from the model's size in its name:
  under 200M parameters (tiny-gpt, pythia-14m…160m, smollm2-135m) 1/4 of a GPU,
  under 500M (pythia-410m, gemma3-270m) 1/2, anything larger or of unknown size (Hub
  ids, checkpoint folders) a whole GPU. Ray, not `--device cuda:N`, picks the GPU.
- **No shared file system.** A task trains with `trainer.train_run` and returns the
  Run (arrays and metadata, plus `meta["worker"]`: host, pid, torch threads); the
  driver writes the results cache (`results.save_run`).
  The worker checks that it computes the same results key as the driver (the same
  `anticip_lib` on every node), else the run fails with a message saying so.
- **Stopping and resuming.** A run checkpoints as in the local engine (every epoch end
  and at least every 10 minutes) on the worker that trains it, at
  `<cache>/checkpoints/<experiment>/<stem>.pt` — the file the local engine uses, under
  the same lock (next to the results for a cluster started here, next to the
  checkpoint on an existing cluster) — where `<cache>` is the driver's cache folder for
  a cluster started here and the worker's own `$ANTICIP_CACHE` (else
  `~/.cache/anticip`) on an existing cluster. The checkpoint is deleted only after the
  driver has saved the results and loaded them back. Ctrl-C (or SIGTERM) cancels the
  tasks and shuts Ray down; runs already returned are saved. A driver killed outright
  (SIGKILL) cannot clean up: a watcher started with a local cluster (`start_reaper`)
  then stops the cluster's processes within seconds. Running the same command again
  computes only what is missing: an interrupted run resumes from its checkpoint when
  it lands on the same machine, and restarts from episode 0 elsewhere (same numbers
  either way).
- **Failures.** A task that raises (or whose worker dies after Ray's retries) is
  reported with its config stem and error; the other runs continue, and `run_ray`
  returns `[(config, "Type: message")]` for the summary and the exit status.

Ray is imported only here (it is in the `test` extra, not a core dependency). Usage
statistics are off unless `RAY_DISABLE_USAGE_STATS` is already set.
"""

import os
import re
import signal
import sys
import time
from pathlib import Path

from .config import RunConfig


def gpu_fraction(config: RunConfig) -> float:
    """Share of one GPU a run asks Ray for, from the parameter count in the model name."""
    name = os.path.basename(config.model.rstrip("/"))
    if name == "tiny-gpt":
        return 0.25
    m = re.search(r"-(\d+(?:\.\d+)?)([mb])$", name.lower())
    if m is None:  # a Hub id or folder of unknown size: a whole GPU
        return 1.0
    params = float(m.group(1)) * (1e6 if m.group(2) == "m" else 1e9)
    return 0.25 if params < 200e6 else 0.5 if params < 500e6 else 1.0


def train_task(config: RunConfig, experiment: str, device: str, threads: int,
               cache: str | None) -> dict:
    """Body of one Ray task (runs on a worker): train `config`, return the Run.

    `cache`: the cache folder for the checkpoint, or None for the worker's own.
    The checkpoint is kept: the driver drops it once the results are saved. A lock
    file next to it (the one `results.run_cached` takes) keeps two processes of this
    machine from training the same run at once.
    """
    import platform
    import socket
    from pathlib import Path

    import ray
    import torch

    from . import files, paths, results, trainer

    torch.set_num_threads(threads)
    root = paths.cache_dir() if cache is None else Path(cache)
    ckpt_dir = files.ensure_writable(root / "checkpoints" / experiment,
                                     "checkpoint folder (on the Ray worker)")
    stem = results.run_stem(config)
    ckpt = ckpt_dir / f"{stem}.pt"
    # the lock `results.run_cached` takes, next to the results, for a cluster started
    # here (this machine's results folder); on an existing cluster a worker has no
    # results folder of ours (the driver writes them): next to its checkpoint
    lock = (results.lock_path(experiment, stem) if cache is not None
            else ckpt_dir / f"{stem}.lock")
    with files.lock(lock, stem):
        files.clear_temporaries(ckpt)  # left by a killed writer
        run = trainer.train_run(config, device=device, checkpoint=ckpt, progress=False,
                                keep_checkpoint=True)
    run.meta["worker"] = {"engine": "ray", "host": socket.gethostname(),
                          "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__, "platform": platform.platform()}
    return {"stem": stem, "run": run, "checkpoint": str(ckpt),
            "node": ray.get_runtime_context().get_node_id()}


# Stops what a killed driver started. A local Ray cluster's processes (GCS, raylet,
# workers, agents) are children of the driver; SIGKILL of the driver leaves them
# running until they notice (a minute or more). This watcher, in a session of its own,
# notes the driver's descendants started after it, and when the driver is gone sends
# them SIGTERM, then SIGKILL. run_ray stops it when it returns.
_REAPER = r"""
import os, signal, sys, time
driver, me = int(sys.argv[1]), os.getpid()

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])  # state, parent, start time

born = stat(me)[2]
seen = {}
while True:
    st = stat(driver)
    if st is None or st[0] in "ZX":
        break
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            x = stat(int(d))
            if x is not None:
                kids.setdefault(x[1], []).append((int(d), x[2]))
    todo = [driver]
    while todo:
        for pid, start in kids.get(todo.pop(), []):
            if start >= born:
                seen[pid] = start
            todo.append(pid)
    time.sleep(0.5)
for sig in (signal.SIGTERM, signal.SIGKILL):
    left = [p for p, start in seen.items() if (stat(p) or (0, 0, -1))[2] == start
            and stat(p)[0] not in "ZX"]
    for pid in left:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    if not left:
        break
    time.sleep(3)
"""


def start_reaper():
    """Start the watcher that stops this process's new descendants (a local Ray
    cluster) if this process dies without cleaning up (SIGKILL). Linux only (reads
    /proc); None elsewhere. Stop it with `.terminate()` once Ray is shut down."""
    import subprocess

    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())],
                            start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_local_cluster(num_cpus=None, **kw):
    """`ray.init(address="local")` (a new cluster even when another one runs on this
    machine) with a reaper (`start_reaper`) watching it; returns the reaper."""
    import ray

    reaper = start_reaper()
    try:
        ray.init(address="local", num_cpus=num_cpus, **kw)
    except BaseException:
        if reaper is not None:
            reaper.terminate()
        raise
    return reaper


def drop_checkpoint(path: str) -> None:
    """Body of the small task that deletes a saved run's checkpoint on its node."""
    Path(path).unlink(missing_ok=True)


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None)  # RayTaskError carries the task's own exception
    if isinstance(cause, BaseException):
        err = cause
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}".rstrip(": ")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _sigterm_as_interrupt():
    """Make SIGTERM raise KeyboardInterrupt, so `kill` cleans up as Ctrl-C does.

    Installed after `ray.init` (Ray's own handler aborts the process). Returns a
    function that puts the previous handler back (nothing is done off the main thread).
    """
    try:
        prev = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        return lambda: None
    # None: the previous handler was not set from Python (Ray's): restore the default
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if prev is None else prev)


def _check_writable(experiments) -> None:
    """Stop before Ray starts when a results folder cannot be written."""
    from . import files, paths

    for exp in sorted(set(experiments)):
        try:
            files.ensure_writable(paths.results_dir() / exp, "results folder",
                                  "Set ANTICIP_RESULTS to a writable folder with room.",
                                  need_bytes=2**20)
        except OSError as err:
            raise SystemExit(str(err)) from None


def _fmt_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run_ray(items, *, address=None, workers=None, threads=1, device="cpu",
            log=print) -> list[tuple]:
    """Compute the missing runs of `items` [(experiment, config, done)] as Ray tasks.

    Returns [(config, "Type: message")] for the runs that failed. See the module
    docstring for the cluster, resources, checkpoints and interruption.
    """
    missing = [(e, c) for e, c, done in items if not done]
    if not missing:
        return []
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _check_writable(e for e, _ in missing)
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

    import logging

    import ray
    import torch

    from . import paths, results

    torch.set_num_threads(threads)  # so the saved provenance shows the runs' threads
    own = not ray.is_initialized()  # a session started here is shut down here
    failed, t0 = [], time.time()
    pending = {}  # ObjectRef -> (experiment, config, start time)
    drops = []
    reaper = None
    restore_term = lambda: None  # noqa: E731
    try:
        common = dict(include_dashboard=False, logging_level=logging.ERROR,
                      log_to_driver=True)
        if not own:  # the caller's own Ray session: use it, leave it running
            where = "the running Ray session"
        elif address:
            where = f"Ray cluster {address}"
            try:
                ray.init(address=address, **common)
            except ConnectionError as err:
                raise SystemExit(
                    f"--address {address}: cannot connect to a Ray cluster there ({err}). "
                    "A cluster with token authentication (Ray's default) also needs "
                    "RAY_AUTH_MODE=token here and its token in ~/.ray/auth_token or "
                    "RAY_AUTH_TOKEN (book: Setup, 'Computing a chapter's runs')"
                ) from None
        else:
            where = "a local Ray cluster"
            reaper = start_local_cluster(
                num_cpus=None if workers is None else workers * threads, **common)
        restore_term = _sigterm_as_interrupt()
        # a cluster started here shares this machine's cache; others use their own
        cache = str(paths.cache_dir()) if own and not address else None
        res = ray.cluster_resources()
        n_gpus = res.get("GPU", 0)
        if device == "auto":
            device = "cuda" if n_gpus > 0 else "cpu"
        use_gpu = device.startswith("cuda")
        if use_gpu:
            device = "cuda"  # the GPU Ray assigns is the task's cuda:0
            if n_gpus <= 0:
                raise SystemExit(f"--device cuda: {where} has no GPU")
        max_node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes()
                             if n.get("Alive")), default=0)
        if threads > max_node_cpus:
            raise SystemExit(f"--threads {threads}: no node of {where} has that many "
                             f"CPUs (largest: {max_node_cpus:g})")
        cap = int(res.get("CPU", 0) // threads)
        if use_gpu:
            cap = min(cap, int(n_gpus // min(gpu_fraction(c) for _, c in missing)))
        n_workers = max(1, workers or cap)
        log(f"{where}: {n_workers} runs at once, {threads} thread(s) each, "
            f"device {device}")

        remote = ray.remote(train_task)
        drop_remote = ray.remote(num_cpus=0)(drop_checkpoint)

        def drop(out):
            """Delete a saved run's checkpoint: here for a cluster started here (same
            machine), else by a task on the node that trained it."""
            if cache is not None:
                return drop_checkpoint(out["checkpoint"])
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            on_node = NodeAffinitySchedulingStrategy(out["node"], soft=False)
            return drop_remote.options(scheduling_strategy=on_node).remote(
                out["checkpoint"])

        queue = list(missing)
        n_done, n_total = 0, len(missing)

        def submit():
            while queue and len(pending) < n_workers:
                exp, cfg = queue.pop(0)
                opts = {"num_cpus": threads}
                if use_gpu:
                    opts["num_gpus"] = gpu_fraction(cfg)
                ref = remote.options(**opts).remote(cfg, exp, device, threads, cache)
                pending[ref] = (exp, cfg, time.time())

        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                exp, cfg, t_start = pending.pop(ref)
                stem = results.run_stem(cfg)
                try:
                    out = ray.get(ref)
                    if out["stem"] != stem:
                        raise RuntimeError(
                            f"the worker computed results key {out['stem']!r}, the "
                            f"driver {stem!r}: install the same anticip_lib on every "
                            "node")
                    run = out["run"]
                    run.config = cfg
                    results.save_run(run, exp)
                    if results.load_run(cfg, exp) is None:  # it warned why
                        raise RuntimeError(
                            f"the files just written to {paths.results_dir() / exp} fail "
                            f"their checks; the checkpoint {out['checkpoint']} is kept "
                            "on its worker, so the next sweep re-saves without training")
                    drops.append(drop(out))
                    status = f"{time.time() - t_start:.0f} s"
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as err:  # noqa: BLE001 - reported, others go on
                    print(f"FAILED {stem}:\n{err}", file=sys.stderr)
                    failed.append((cfg, _error_text(err)))
                    status = "FAILED: " + failed[-1][1]
                n_done += 1
                submit()
                left = len(queue)
                rate = n_done / (time.time() - t0)
                eta = f", ETA {_fmt_eta((n_total - n_done) / rate)}" if left or pending else ""
                log(f"[{n_done}/{n_total} done, {len(pending)} running, {left} left"
                    f"{eta}] {stem} ({status})")
        drops = [d for d in drops if d is not None]
        if drops:  # a checkpoint left behind costs disk only: do not wait long
            ray.wait(drops, num_returns=len(drops), timeout=60)
    except KeyboardInterrupt:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
        log("interrupted: finished runs are saved; run the same command to resume")
        raise
    finally:
        if own:
            ray.shutdown()
        if reaper is not None:
            reaper.terminate()
        restore_term()
    return failed
