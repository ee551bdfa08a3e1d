"""Many RunConfigs at once: the sweep's `--lockstep K` (issue #9), on `trainer.train_many`.

Configs that differ only in seed and order (hence documents and orders) train as one
`train_many` call (`anticip_lib.batched`: one batched forward over the K runs' stacked
weights); each run is saved exactly as `results.run_cached` saves it (same stems and
keys; provenance notes "lockstep": K). Rounding differs from one run alone (batched
matrix products sum in another order; ≤ 1e-4 on eval_loss in fp32 in the tests), and
some protocols amplify it: Adam reset every episode moves every weight by ~lr on its
first step whatever the size of its gradient, and at lr 1e-3 `train` itself differs by
up to 1e-3 between 1 and 2 threads on random tokens (book/performance.md). None of the
book's committed results came from here.

`train_configs` builds each run exactly as `trainer.train_run` does; `run_cached_many`
is `results.run_cached` for many configs; `run_lockstep` is the sweep's engine. While
a group trains, each of its runs' `run_cached` locks is held; the group's checkpoint
(`lockstep<K>_<hash>.pt`, with a `.json` naming its runs) is deleted once every run
loads back, or by the next call that finds them all saved.
"""

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import files
from .run import Run
from .trainer import train_many

# ---- RunConfigs: build, group, train, cache --------------------------------------------


def prepare(config, device="cpu"):
    """(model, documents, order) of a RunConfig, built exactly as `trainer.train_run`
    (after the same checks, `trainer.check_run`)."""
    from . import data, models, orders
    from .trainer import check_run

    check_run(config, device)
    order = orders.make(config.order, config.n_docs, config.n_epochs,
                        seed=config.seed, n_shuffled=config.n_shuffled)
    model, tokenizer = models.load_model(
        config.model, init=config.init, revision=config.revision,
        seed=config.seed, tokenizer=config.tokenizer, **config.arch())
    docs = data.load_documents(
        config.corpus, tokenizer, config.n_docs, config.context_len, config.seed,
        split=config.doc_split, doc_filter=config.doc_filter)
    return model, docs, order


LOCKSTEP_FREE = ("seed", "order", "n_shuffled")  # what may differ within one call


def group_key(config) -> str:
    """Configs with equal keys can share one `train_many` call: they differ only in
    seed, order (and N of a partial order), hence documents and orders."""
    d = {k: v for k, v in config.to_dict().items() if k not in LOCKSTEP_FREE}
    return json.dumps(d, sort_keys=True)


def train_configs(configs, device="cpu", *, checkpoint=None, progress=True,
                  checkpoint_every: float = 0.0,
                  keep_checkpoint: bool = False) -> list[Run]:
    """`trainer.train_run` for compatible configs, in one `train_many` call (at the
    configs' precision)."""
    from . import models as models_mod
    from .trainer import run_key

    configs = list(configs)
    keys = {group_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError("configs must differ only in seed, order and n_shuffled to "
                         "train in lockstep")
    for c in configs:  # every config checked before any weights load
        prepare_check(c, device)
    built = [prepare(c, device) for c in configs]
    c0 = configs[0]
    runs = train_many(
        [m for m, _, _ in built],
        torch.stack([d.input_ids for _, d, _ in built]),
        torch.stack([d.labels for _, d, _ in built]),
        np.stack([o for _, _, o in built]),
        steps_per_doc=c0.steps_per_doc, optimizer=c0.optimizer, lr=c0.lr,
        lr_schedule=c0.lr_schedule,
        attention_mask=torch.stack([d.attention_mask for _, d, _ in built]),
        checkpoint=checkpoint, device=device, progress=progress, precision=c0.precision,
        checkpoint_every_s=checkpoint_every, keep_checkpoint=keep_checkpoint,
        run_key=json.dumps([run_key(c) for c in configs]))
    for run, c, (model, docs, _) in zip(runs, configs, built):
        run.config = c
        run.meta.update(
            model_label=models_mod.describe(c.model, c.init, c.revision, **c.arch()),
            doc_ids=[str(d) for d in docs.doc_ids],
            n_params=sum(p.numel() for p in model.parameters()))
    return runs


def tune_cpu_malloc(keep_bytes: int = 2**31 - 1) -> bool:
    """Keep large freed blocks in this process's heap for reuse (glibc `mallopt`).

    By default glibc returns every block above 32 MB to the OS when it is freed, so
    the next step's logits, log-softmax and gradients (tens to hundreds of MB at a 50k
    vocabulary) are page-faulted in afresh: measured on 2 CPU cores, a log-softmax of
    (1280, 50304) fp32 takes ~4× longer with fresh memory than with reused memory.
    Process-wide (the resident size stays at its peak); a no-op off glibc. Returns
    whether it applied. The sweep's `--lockstep` engine calls it; `train_many` does
    not (it would change the speed of everything else in the process).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, keep_bytes)
                    and libc.mallopt(M_TRIM_THRESHOLD, keep_bytes))
    except (OSError, AttributeError, ctypes.ArgumentError):
        return False


def memory_budget(device="cpu") -> int:
    """Bytes lockstep may use: half the available RAM, or 80 % of a GPU's free memory."""
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                          else "cpu" if device == "auto" else device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    try:
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
        return int(0.5 * info.get("MemAvailable", info["MemTotal"]))
    except (OSError, KeyError, ValueError):
        return 4 * 2**30


def bytes_per_run(config, n_params: int, vocab: int, d_model: int, n_layers: int) -> int:
    """Rough fp32 memory of one run in lockstep: weights, gradient, Adam state, the
    activations of one step and one evaluation chunk's logits."""
    C = config.context_len
    state = n_params * 4 * (2 + (2 if config.optimizer != "sgd" else 0))
    acts = n_layers * C * d_model * 4 * 40 + C * vocab * 4 * 4
    eval_logits = 2 * C * vocab * 4 * max(1, min(config.n_docs, 4))
    return state + acts + eval_logits


def cap_k(config, k: int, budget: int) -> int:
    """The largest group size ≤ k whose runs fit in `budget` bytes (at least 1)."""
    from . import models

    spec = models.MODELS.get(config.model)
    if spec is None or config.arch():  # count the weights of one model
        model, tok = models.load_model(config.model, init=config.init,
                                       revision=config.revision, seed=config.seed,
                                       tokenizer=config.tokenizer, **config.arch())
        n = sum(p.numel() for p in model.parameters())
        cfg = model.config
        d, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    else:
        tiny_tok = config.tokenizer == "tiny-gpt" or (
            config.tokenizer == "auto" and spec.family == "tiny")
        V = 257 if tiny_tok else 50304
        d, L = spec.d_model, spec.n_layers
        n = 2 * V * d + 12 * L * d * d
    return max(1, min(k, budget // max(1, bytes_per_run(config, n, V, d, L))))


def plan_groups(items, k: int, budget: int | None = None, device="cpu"):
    """[(experiment, [configs])]: the missing runs of `items` [(exp, cfg, done)] in
    groups of at most k compatible configs (same experiment), in preset order."""
    budget = memory_budget(device) if budget is None else budget
    groups, caps = {}, {}
    for exp, cfg, done in items:
        if done:
            continue
        key = (exp, group_key(cfg))
        if key not in caps:
            caps[key] = cap_k(cfg, k, budget)
        bucket = groups.setdefault(key, [[]])
        if len(bucket[-1]) == caps[key]:
            bucket.append([])
        bucket[-1].append(cfg)
    return [(exp, g) for (exp, _), buckets in groups.items() for g in buckets]


def _checkpoint_path(experiment: str, configs) -> Path:
    from . import paths, results

    stems = "|".join(results.run_stem(c) for c in configs)
    tag = hashlib.sha1(stems.encode()).hexdigest()[:12]
    return paths.cache_dir() / "checkpoints" / experiment / f"lockstep{len(configs)}_{tag}.pt"


def drop_leftovers(experiment: str) -> None:
    """Delete the group checkpoints of `experiment` whose runs are all saved (a
    process killed between saving them and deleting it left it behind)."""
    from . import paths, results

    folder = paths.cache_dir() / "checkpoints" / experiment
    if not folder.is_dir():
        return
    for manifest in folder.glob("lockstep*_*.json"):
        try:
            stems = json.loads(manifest.read_text())["stems"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        saved = all((results.results_dir() / experiment / f"{s}.json").exists()
                    for s in stems)
        if saved:
            for f in (manifest.with_suffix(".pt"), manifest):
                f.unlink(missing_ok=True)


def run_cached_many(configs, experiment: str, device="cpu", *, k: int = 16,
                    budget: int | None = None, progress=True) -> list[Run]:
    """`results.run_cached` for many configs: saved runs are loaded, the missing ones
    trained in lockstep groups of at most k (capped by memory) and saved exactly as
    `run_cached` saves them (same stems and keys; provenance notes "lockstep": K)."""
    from . import results

    configs = [c.validate() for c in configs]
    drop_leftovers(experiment)
    items = [(experiment, c, results.load_run(c, experiment) is not None) for c in configs]
    for exp, group in plan_groups(items, k, budget, device):
        _compute_group(exp, group, device, progress=progress)
    # a run another process was computing: run_cached waits for it, then loads it
    return [results.load_run(c, experiment) or results.run_cached(c, experiment, device)
            for c in configs]


def _compute_group(exp, group, device="cpu", *, progress=True,
                   checkpoint_every=0.0) -> list:
    """Train one group in lockstep and save each run as `run_cached` would; returns
    the configs computed here. Each run's `run_cached` lock is held meanwhile: a run
    locked by another process, or saved meanwhile, is left out of the group. The
    group's checkpoint is deleted once every run is saved and loads back; one the
    trainer refuses (damaged, other code) is set aside with a warning naming it."""
    import contextlib

    from . import results
    from .checkpoint import CheckpointError

    for c in group:  # before any folder is made or any weights load
        prepare_check(c, device)
    n_ep = max(c.n_epochs * c.n_docs for c in group)
    need = len(group) * results.result_bytes(n_ep, max(c.n_docs for c in group),
                                             n_ep * max(c.steps_per_doc for c in group))
    _, ckpt_dir = results.writable_folders(exp, need)
    with contextlib.ExitStack() as stack:
        mine = [c for c in group
                if stack.enter_context(files.lock(results.lock_path(exp, results.run_stem(c)),
                                                  wait=False))
                and results.find_run(c, exp) is None]
        if not mine:
            return []
        ckpt = _checkpoint_path(exp, mine)
        files.clear_temporaries(ckpt)
        files.write_text(ckpt.with_suffix(".json"),
                         json.dumps({"stems": [results.run_stem(c) for c in mine]}),
                         what="group checkpoint manifest")
        train = lambda: train_configs(mine, device, checkpoint=ckpt,  # noqa: E731
                                      progress=progress, checkpoint_every=checkpoint_every,
                                      keep_checkpoint=True)
        try:
            runs = train()
        except CheckpointError as err:
            aside = files.set_aside(ckpt, "refused")
            warnings.warn(f"{err} It was set aside as {aside}; these runs start from "
                          "episode 0.")
            runs = train()
        for run in runs:
            results.save_run(run, exp)
        if all(results.load_run(c, exp) is not None for c in mine):
            ckpt.unlink(missing_ok=True)
            ckpt.with_suffix(".json").unlink(missing_ok=True)
        else:  # the load warned why; the next call re-saves without training
            warnings.warn(f"lockstep group {ckpt.name}: saved runs fail their checks; "
                          "the checkpoint is kept")
    return mine


def prepare_check(config, device="cpu"):
    """`trainer.check_run`: everything checkable before weights load."""
    from .trainer import check_run

    return check_run(config, device)


def run_lockstep(items, *, k: int, device="cpu", threads=1, budget=None, log=print):
    """The sweep's `--lockstep K` engine: the missing runs of `items` in lockstep
    groups, each saved through `results.save_run`; returns [(cfg, error)]."""
    import sys
    import traceback

    from . import results

    torch.set_num_threads(threads)
    on_cpu = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                          else "cpu" if device == "auto" else device).type == "cpu"
    if on_cpu:
        tune_cpu_malloc()
    for exp in sorted({e for e, _, _ in items}):
        drop_leftovers(exp)
    groups = plan_groups(items, k, budget, device)
    n_missing = sum(len(g) for _, g in groups)
    failed, finished, t0 = [], 0, time.time()
    for exp, group in groups:
        left = n_missing - finished
        eta = ("" if finished == 0 else
               f", ETA {_fmt_eta((time.time() - t0) / finished * left)}")
        log(f"[{finished}/{n_missing} done, {len(group)} running in lockstep, "
            f"{left - len(group)} left{eta}] {exp}: "
            + ", ".join(results.run_stem(c) for c in group))
        try:
            _compute_group(exp, group, device, progress=sys.stderr.isatty(),
                           checkpoint_every=0.0 if on_cpu else 60.0)
        except KeyboardInterrupt:
            log("interrupted: finished runs are saved; run the same command to resume")
            raise
        except Exception as err:  # noqa: BLE001 - reported in the summary
            traceback.print_exc()
            failed.extend((c, f"{type(err).__name__}: {err}") for c in group)
        finished += len(group)
    return failed


def _fmt_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
