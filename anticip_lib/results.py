"""Results: run a config once, keep its arrays, and load them back (STYLE §13).

`run_cached(config, experiment)` returns the saved run when a valid one exists and
trains it otherwise. Each run is two files under `RESULTS_DIR/<experiment>/`:
`<stem>__<key>.npz` (eval_loss, train_loss, order) and `<stem>__<key>.json`
(config, provenance, the npz's sha256). The key hashes the config and
`RESULTS_VERSION`, so a changed config or trainer never reuses stale numbers; a file
that fails its checks is recomputed, never silently used.
"""

import hashlib
import json
import os
import platform
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import paths
from .config import RunConfig
from .trainer import Run, train_run

RESULTS_VERSION = 1  # bump when the trainer's semantics change
_REPO = paths.REPO
results_dir, cache_dir = paths.results_dir, paths.cache_dir


def config_key(config: RunConfig) -> str:
    blob = json.dumps(config.key_dict(), sort_keys=True) + f"|v{RESULTS_VERSION}"
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def run_stem(config: RunConfig) -> str:
    """Readable file stem plus the safety hash, e.g. smollm2-135m_T10_..._s0__3f9a1c07e2."""
    c = config
    model = Path(c.model.rstrip("/")).name if ("/" in c.model) else c.model
    init = "" if c.init == "pretrained" else f"_{c.init}"
    split = "" if c.doc_split == "all" else f"_{c.doc_split}"
    order = c.order if c.order != "partial" else f"partial{c.n_shuffled}"
    return (
        f"{model}{init}_T{c.n_docs}_C{c.context_len}_M{c.steps_per_doc}_E{c.n_epochs}"
        f"_{c.optimizer}{c.lr:g}_{order}{split}_s{c.seed}__{config_key(c)}"
    )


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def save_run(run: Run, experiment: str) -> Path:
    """Write the run's .npz, then its .json (the json's presence marks completion)."""
    folder = results_dir() / experiment
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / run_stem(run.config)
    npz = _with(stem, ".npz")  # not with_suffix: the stem holds dots ("sgd0.005")
    tmp = _with(stem, ".tmp.npz")
    np.savez_compressed(tmp, eval_loss=run.eval_loss, train_loss=run.train_loss, order=run.order)
    os.replace(tmp, npz)
    meta = {
        "config": run.config.to_dict(),
        "results_version": RESULTS_VERSION,
        "npz_sha256": _sha256(npz),
        "git_commit": _git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        **run.meta,
        # a run whose losses went non-finite is a result too: saved, flagged, loaded
        "diverged": bool(not np.isfinite(run.eval_loss).all()),
    }
    tmp_json = _with(stem, ".tmp.json")
    tmp_json.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp_json, _with(stem, ".json"))
    return npz


def _key_dict(saved: dict) -> dict | None:
    try:
        return RunConfig.from_dict(saved).key_dict()
    except (TypeError, ValueError):
        return None


def load_run(config: RunConfig, experiment: str) -> Run | None:
    """The saved run for `config`, or None when it is missing or fails a check."""
    stem = results_dir() / experiment / run_stem(config)
    npz, js = _with(stem, ".npz"), _with(stem, ".json")
    if not (npz.exists() and js.exists()):
        return None
    try:
        meta = json.loads(js.read_text())
        problems = []
        if meta.get("results_version") != RESULTS_VERSION:
            problems.append("results version")
        saved = meta.get("config")
        if not isinstance(saved, dict) or _key_dict(saved) != config.key_dict():
            problems.append("config")
        if meta.get("npz_sha256") != _sha256(npz):
            problems.append("checksum")
        if not problems:
            with np.load(npz) as z:
                arrays = {k: z[k] for k in ("eval_loss", "train_loss", "order")}
            c = config
            n_ep = c.n_epochs * c.n_docs
            if arrays["eval_loss"].shape != (n_ep + 1, c.n_docs) or len(arrays["order"]) != n_ep:
                problems.append("shape")
            elif not np.isfinite(arrays["eval_loss"]).all() and not meta.get("diverged"):
                problems.append("non-finite losses")
    except (OSError, ValueError, KeyError) as err:
        problems = [f"unreadable ({err})"]
    if problems:
        warnings.warn(f"{npz.name}: failed checks ({', '.join(problems)}); recomputing")
        return None
    return Run(config, arrays["eval_loss"], arrays["train_loss"], arrays["order"], meta)


def find_run(config: RunConfig, experiment: str | None = None) -> Run | None:
    """The saved run for `config` in `experiment`, or (None) in any results sub-folder.

    Quiet: a missing or failing file gives None without a warning.
    """
    if experiment is None:
        name = run_stem(config) + ".json"
        hits = sorted(results_dir().rglob(name)) if results_dir().is_dir() else []
        experiments = [h.parent.relative_to(results_dir()).as_posix() for h in hits]
    else:
        experiments = [experiment]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in experiments:
            run = load_run(config, exp)
            if run is not None:
                run.meta["experiment"] = exp
                return run
    return None


def run_cached(
    config: RunConfig, experiment: str | None = None, device: str = "cpu", *, progress=True
) -> Run:
    """Load the run for `config` from `results/<experiment>/`, or train and save it.

    experiment=None: the run is looked up in every results sub-folder (a chapter's
    committed results are found from their config alone) and saved to `runs/` if new.

    `device` ("cpu", "cuda" or "auto") is not part of the key: a run computed on a GPU
    loads on a CPU and vice versa.

    Training checkpoints after every episode under `cache_dir()/checkpoints`, so an
    interrupted call resumes where it stopped.
    """
    config.validate()
    if experiment is None:
        found = find_run(config)
        if found is not None:
            return found
        experiment = "runs"
    run = load_run(config, experiment)
    if run is not None:
        return run
    ckpt = cache_dir() / "checkpoints" / experiment / f"{run_stem(config)}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    run = train_run(config, device=device, checkpoint=ckpt, progress=progress)
    save_run(run, experiment)
    return load_run(config, experiment) or run
