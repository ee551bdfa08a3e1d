"""Results: run a config once, keep its arrays, and load them back (STYLE §13).

`run_cached(config, experiment)` returns the saved run when a valid one exists and
trains it otherwise. Each run is two files under `RESULTS_DIR/<experiment>/`:
`<stem>__<key>.npz` (eval_loss, train_loss, order, and the arrays of any recorders)
and `<stem>__<key>.json` (config, provenance, the npz's sha256). The key hashes the
config and `RESULTS_VERSION` (and the names and versions of the run's recorders, when
it has any), so a changed config or trainer never reuses stale numbers; a file that
fails its checks is recomputed, never silently used.

Not in the key: the device and the number of torch threads. Both change the order of
floating-point sums, so the same config gives results that differ in about the 7th
significant digit (far below the seed-to-seed spread of every quantity the book
reports); keying on them would make a run computed on one machine invisible to
another. Both are recorded in the json (`device`, `versions.torch_threads`).

Computing is safe against interruptions and concurrency: the trainer checkpoints
under `cache_dir()/checkpoints/<experiment>/` (at least every `checkpoint_every_s`
seconds and at every epoch end) and the checkpoint is deleted only once the results
are written and load back; temporary files carry the process id and a random part;
and a lock file (`<stem>.lock`, POSIX `flock`) next to the checkpoint lets only one
process compute a given run, while a second one waits and then loads its result.
"""

import contextlib
import hashlib
import json
import os
import platform
import secrets
import subprocess
import sys
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import paths, records
from .config import RunConfig
from .trainer import Run, check_run, ensure_writable, train_run

RESULTS_VERSION = 1  # bump when the trainer's semantics change
_REPO = paths.REPO
results_dir, cache_dir = paths.results_dir, paths.cache_dir


def config_key(config: RunConfig, record=None) -> str:
    """10 hex digits identifying the run's numbers (config, RESULTS_VERSION, recorders).

    A run without recorders keeps the key it had before recorders existed.
    """
    blob = json.dumps(config.key_dict(), sort_keys=True) + f"|v{RESULTS_VERSION}"
    rec = records.identity(record)
    if rec:
        blob += "|records=" + json.dumps(rec, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def run_stem(config: RunConfig, record=None) -> str:
    """Readable file stem plus the safety hash, e.g. smollm2-135m_T10_..._s0__3f9a1c07e2.

    A run with recorders has `_rec` before the hash.
    """
    c = config
    model = Path(c.model.rstrip("/")).name if ("/" in c.model) else c.model
    init = "" if c.init == "pretrained" else f"_{c.init}"
    init += "".join(f"_{k[0]}{v}" for k, v in c.arch().items())  # _w256_d6_h8
    init += "" if c.revision == "main" else f"_{c.revision}"
    split = "" if c.doc_split == "all" else f"_{c.doc_split}"
    split += "" if c.precision == "fp32" else f"_{c.precision}"
    split += "" if c.lr_schedule == "constant" else f"_{c.lr_schedule}"
    order = c.order if c.order != "partial" else f"partial{c.n_shuffled}"
    rec = "_rec" if records.identity(record) else ""
    return (
        f"{model}{init}_T{c.n_docs}_C{c.context_len}_M{c.steps_per_doc}_E{c.n_epochs}"
        f"_{c.optimizer}{c.lr:g}_{order}{split}_s{c.seed}{rec}__{config_key(c, record)}"
    )


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def _tmp(path: Path, suffix: str) -> Path:
    """A temporary name next to `path`, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


_COMMIT_AT_IMPORT = _head()


def git_commit() -> str | None:
    """The commit of the code this process runs: HEAD when this module was imported
    (results land in the repository while a long sweep runs; a commit made meanwhile
    does not describe the code that computed them). None outside a git checkout."""
    return _COMMIT_AT_IMPORT


def versions() -> dict:
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),  # not in the key: see the docstring
    }


def _record_key(name: str, key: str) -> str:
    return f"record/{name}/{key}"


def save_run(run: Run, experiment: str, record=None) -> Path:
    """Write the run's .npz, then its .json (the json's presence marks completion).

    record: the recorders the run was trained with (their arrays are `run.records`).
    """
    rec = records.identity(record)
    if set(rec) != set(run.records):
        raise ValueError(f"record: the run holds records {sorted(run.records)} but "
                         f"save_run was given recorders {sorted(rec)}; pass the same "
                         "recorders as to the training")
    folder = results_dir() / experiment
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / run_stem(run.config, record)
    npz = _with(stem, ".npz")  # not with_suffix: the stem holds dots ("sgd0.005")
    arrays = dict(eval_loss=run.eval_loss, train_loss=run.train_loss, order=run.order)
    for name, out in run.records.items():
        for key, a in out.items():
            arrays[_record_key(name, key)] = a
    tmp = _tmp(npz, ".npz")
    try:
        np.savez_compressed(tmp, **arrays)
        sha = _sha256(tmp)  # of the bytes written here, whoever renames last
        os.replace(tmp, npz)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "config": run.config.to_dict(),
        "results_version": RESULTS_VERSION,
        "npz_sha256": sha,
        "git_commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        **run.meta,
        # a run whose losses went non-finite is a result too: saved, flagged, loaded
        "diverged": bool(not np.isfinite(run.eval_loss).all()),
    }
    if rec:
        meta["records"] = {n: {"version": v, "keys": sorted(run.records[n])}
                           for n, v in rec.items()}
    js = _with(stem, ".json")
    tmp_json = _tmp(js, ".json")
    try:
        tmp_json.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp_json, js)
    finally:
        tmp_json.unlink(missing_ok=True)
    return npz


def _key_dict(saved: dict) -> dict | None:
    try:
        return RunConfig.from_dict(saved).key_dict()
    except (TypeError, ValueError):
        return None


def load_run(config: RunConfig, experiment: str, record=None) -> Run | None:
    """The saved run for `config` (with these recorders), or None when it is missing or
    fails a check (with a warning naming the check)."""
    rec = records.identity(record)
    stem = results_dir() / experiment / run_stem(config, record)
    npz, js = _with(stem, ".npz"), _with(stem, ".json")
    if not (npz.exists() and js.exists()):
        return None
    try:
        meta = json.loads(js.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"the json holds a {type(meta).__name__}, not an object")
        problems = []
        if meta.get("results_version") != RESULTS_VERSION:
            problems.append("results version")
        saved = meta.get("config")
        if not isinstance(saved, dict) or _key_dict(saved) != config.key_dict():
            problems.append("config")
        saved_rec = meta.get("records", {})
        if not isinstance(saved_rec, dict) or {
            n: v.get("version") if isinstance(v, dict) else None
            for n, v in saved_rec.items()
        } != rec:
            problems.append("records")
        if meta.get("npz_sha256") != _sha256(npz):
            problems.append("checksum")
        if not problems:
            c = config
            n_ep = c.n_epochs * c.n_docs
            with np.load(npz) as z:
                arrays = {k: z[k] for k in ("eval_loss", "train_loss", "order")}
                recs = {n: {k: z[_record_key(n, k)] for k in saved_rec[n]["keys"]}
                        for n in rec}
            if arrays["eval_loss"].shape != (n_ep + 1, c.n_docs) or len(arrays["order"]) != n_ep:
                problems.append("shape")
            elif any(a.shape[:1] != (n_ep + 1,) for out in recs.values() for a in out.values()):
                problems.append("records shape")
            elif not np.isfinite(arrays["eval_loss"]).all() and not meta.get("diverged"):
                problems.append("non-finite losses")
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        problems = [f"unreadable ({err})"]
    if problems:
        warnings.warn(f"{npz.name}: failed checks ({', '.join(problems)}); recomputing")
        return None
    return Run(config, arrays["eval_loss"], arrays["train_loss"], arrays["order"], meta,
               records=recs)


def find_run(config: RunConfig, experiment: str | None = None, record=None) -> Run | None:
    """The saved run for `config` in `experiment`, or (None) in any results sub-folder.

    Quiet: a missing or failing file gives None without a warning.
    """
    if experiment is None:
        name = run_stem(config, record) + ".json"
        hits = sorted(results_dir().rglob(name)) if results_dir().is_dir() else []
        experiments = [h.parent.relative_to(results_dir()).as_posix() for h in hits]
    else:
        experiments = [experiment]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in experiments:
            run = load_run(config, exp, record)
            if run is not None:
                run.meta["experiment"] = exp
                return run
    return None


def writable_folders(experiment: str) -> tuple[Path, Path]:
    """(results folder, checkpoint folder) of an experiment, made if missing; an
    unwritable one raises, naming it and the variable that moves it."""
    return (ensure_writable(results_dir() / experiment, "results folder",
                            "Set ANTICIP_RESULTS to a writable folder, or fix this "
                            "folder's permissions."),
            ensure_writable(cache_dir() / "checkpoints" / experiment, "checkpoint folder",
                            "Set ANTICIP_CACHE to a writable folder, or fix this "
                            "folder's permissions."))


@contextlib.contextmanager
def locked(path: Path, what: str):
    """Hold an exclusive lock on `path` (POSIX flock); wait, saying so, while another
    process holds it. Without fcntl (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{what}: another process is computing this run (lock {path}); "
                  "waiting for it to finish", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_cached(
    config: RunConfig, experiment: str | None = None, device: str = "cpu", *,
    progress=True, record=None, checkpoint_every_s: float = 600.0,
) -> Run:
    """Load the run for `config` from `results/<experiment>/`, or train and save it.

    experiment=None: the run is looked up in every results sub-folder (a chapter's
    committed results are found from their config alone) and saved to `runs/` if new.

    `device` ("cpu", "cuda" or "auto") is not part of the key: a run computed on a GPU
    loads on a CPU and vice versa.

    record: a recorder or several (`anticip_lib.records`): their per-episode arrays are
    saved with the run and loaded as `run.records[name][key]`. The recorders' names
    and versions enter the key, so a run with recorders is a run of its own.

    Before any weights load: the config, model, device and corpus are checked
    (`trainer.check_run`), and the results and checkpoint folders must be writable.
    Training checkpoints under `cache_dir()/checkpoints/<experiment>/` at every epoch
    end and at least every `checkpoint_every_s` seconds, so an interrupted call
    resumes where it stopped; the checkpoint is deleted only after the results are
    written and load back. One process at a time computes a given run (a lock file
    next to the checkpoint); another one calling for it waits, then loads it.
    """
    config.validate()
    recs = records.as_tuple(record)
    if experiment is None:
        found = find_run(config, record=recs)
        if found is not None:
            return found
        experiment = "runs"
    run = load_run(config, experiment, recs)
    if run is not None:
        return run
    check_run(config, device)  # before any folder is made or any weights load

    def found():
        run = find_run(config, experiment, recs)
        if run is not None:
            run.meta.pop("experiment", None)
        return run

    return compute_once(
        experiment, run_stem(config, recs), find=found,
        train=lambda ckpt: train_run(config, device=device, checkpoint=ckpt,
                                     progress=progress, record=recs,
                                     checkpoint_every_s=checkpoint_every_s,
                                     keep_checkpoint=True),
        save=lambda run: save_run(run, experiment, recs),
        load=lambda: load_run(config, experiment, recs))


def compute_once(experiment: str, stem: str, *, find, train, save, load):
    """Compute one run under its lock, save it, and return it as loaded back.

    find(): the run if another process saved it meanwhile (then nothing is trained);
    train(checkpoint): the run, trained resumably from `checkpoint` (kept at the end);
    save(run) writes its files, load() reads them back with their checks. The
    checkpoint is deleted only once the files load; if they fail their checks it is
    kept, so the next call re-saves without training. Shared by `run_cached` and
    `vision.run_cached`: call it after the run's inputs are checked.
    """
    folder, ckpt_dir = writable_folders(experiment)
    ckpt = ckpt_dir / f"{stem}.pt"
    with locked(ckpt_dir / f"{stem}.lock", stem):
        run = find()  # written meanwhile by another process
        if run is not None:
            return run
        for stale in ckpt_dir.glob(f".{ckpt.name}.*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        run = train(ckpt)
        save(run)
        saved = load()
        if saved is None:  # the load warned why; keep the checkpoint for a new try
            warnings.warn(f"{stem}: the files just written to {folder} fail their checks; "
                          f"the checkpoint {ckpt} is kept, so the next call re-saves "
                          "without training")
            return run
        ckpt.unlink(missing_ok=True)
    return saved
