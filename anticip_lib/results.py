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
are written and load back (or, after a kill in between, by the next load of the
run); temporary files carry the process id and a random part and are fsynced before
their rename; a lock file (`<experiment>/.locks/<stem>.lock`, POSIX `flock`) next to
the *results* lets only one process compute a given run, while a second one waits and
then loads its result (two processes sharing a results folder but not a cache too).
Before any training the results and checkpoint folders must be writable and the
results folder must have room for the run's files. A checkpoint that cannot be used
(damaged, or of other code) is set aside with a warning naming it, and the run starts
from episode 0.

One store for every kind of run: the language chapters' RunConfigs (here) and chapter
5's VisionConfigs (`vision.runs`) write and read their files through `write_files`,
`read_files` and `compute_once`. Reading needs numpy only: torch is imported when a
run is trained, never when committed results are read.
"""

import contextlib
import hashlib
import io
import json
import platform
import subprocess
import sys
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import files, paths, records
from .config import RunConfig
from .files import ensure_writable
from .run import Run

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
    import torch  # the runs being saved were trained: torch is loaded already
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


def write_files(stem: Path, arrays: dict, meta) -> Path:
    """Write `<stem>.npz` (the arrays), then `<stem>.json` (meta plus the npz's sha256;
    its presence marks completion), each atomically (a unique temporary, fsync,
    rename). meta: a dict, or a function giving it (called after the npz is written).
    Returns the npz. The one writer of the results store."""
    npz, js = _with(stem, ".npz"), _with(stem, ".json")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    files.atomic_write(npz, lambda f: f.write(data), suffix=".npz", what="results file")
    meta = {**(meta() if callable(meta) else meta),
            "npz_sha256": hashlib.sha256(data).hexdigest()}
    text = json.dumps(meta, indent=1, sort_keys=True, default=str)
    files.atomic_write(js, lambda f: f.write(text.encode("utf-8")), suffix=".json",
                       what="results file")
    return npz


def read_files(stem: Path, check, shape: tuple[int, int], keys=None):
    """(arrays, meta) of `<stem>.npz/.json`, or None when missing or failing a check
    (with a warning naming the checks; the caller recomputes). The one reader.

    check(meta) -> [problems]; shape: (episodes E·T, documents T); keys: the arrays to
    read (default eval_loss, train_loss, order) and any extra ones it names.
    """
    npz, js = _with(stem, ".npz"), _with(stem, ".json")
    if not (npz.exists() and js.exists()):
        return None
    n_ep, n_docs = shape
    try:
        meta = json.loads(js.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"the json holds a {type(meta).__name__}, not an object")
        problems = list(check(meta))
        if meta.get("npz_sha256") != _sha256(npz):
            problems.append("checksum")
        arrays = {}
        if not problems:
            with np.load(npz) as z:
                arrays = {k: z[k] for k in ("eval_loss", "train_loss", "order",
                                            *(keys or ()))}
            if arrays["eval_loss"].shape != (n_ep + 1, n_docs) or len(arrays["order"]) != n_ep:
                problems.append("shape")
            elif not np.isfinite(arrays["eval_loss"]).all() and not meta.get("diverged"):
                problems.append("non-finite losses")
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        problems = [f"unreadable ({err})"]
    if problems:
        warnings.warn(f"{npz.name}: failed checks ({', '.join(problems)}); recomputing")
        return None
    drop_leftover_checkpoint(stem.parent.relative_to(results_dir()).as_posix()
                             if stem.parent.is_relative_to(results_dir()) else None,
                             stem.name)
    return arrays, meta


def checkpoint_path(experiment: str, stem: str) -> Path:
    """Where `compute_once` checkpoints a run of `experiment`."""
    return cache_dir() / "checkpoints" / experiment / f"{stem}.pt"


def lock_path(experiment: str, stem: str) -> Path:
    """The run's lock: next to its results (made on first use)."""
    folder = results_dir() / experiment / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}.lock"


def drop_leftover_checkpoint(experiment: str | None, stem: str) -> None:
    """The checkpoint of a run whose results load is not needed: a process killed
    between saving them and deleting it left it behind. Removed (quietly; nothing is
    done when the cache cannot be read)."""
    if experiment is None:
        return
    ckpt = checkpoint_path(experiment, stem)
    with contextlib.suppress(OSError):
        if ckpt.exists():
            ckpt.unlink()
            files.clear_temporaries(ckpt)


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
    arrays = dict(eval_loss=run.eval_loss, train_loss=run.train_loss, order=run.order)
    for name, out in run.records.items():
        for key, a in out.items():
            arrays[_record_key(name, key)] = a
    def meta():
        out = {
            "config": run.config.to_dict(),
            "results_version": RESULTS_VERSION,
            "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            **run.meta,
            # a run whose losses went non-finite is a result too: saved, flagged, loaded
            "diverged": bool(not np.isfinite(run.eval_loss).all()),
        }
        if rec:
            out["records"] = {n: {"version": v, "keys": sorted(run.records[n])}
                              for n, v in rec.items()}
        return out

    return write_files(folder / run_stem(run.config, record), arrays, meta)


def _key_dict(saved: dict) -> dict | None:
    try:
        return RunConfig.from_dict(saved).key_dict()
    except (TypeError, ValueError):
        return None


def load_run(config: RunConfig, experiment: str, record=None) -> Run | None:
    """The saved run for `config` (with these recorders), or None when it is missing or
    fails a check (with a warning naming the check)."""
    rec = records.identity(record)

    def check(meta):
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
        else:
            keys.extend(_record_key(n, k) for n in rec for k in saved_rec[n]["keys"])
        return problems

    keys: list = []
    c = config
    got = read_files(results_dir() / experiment / run_stem(config, record),
                     check, (c.n_epochs * c.n_docs, c.n_docs), keys)
    if got is None:
        return None
    arrays, meta = got
    recs = {n: {k.split("/", 2)[2]: arrays[k] for k in keys
                if k.startswith(f"record/{n}/")} for n in rec}
    if any(a.shape[:1] != (c.n_epochs * c.n_docs + 1,)
           for out in recs.values() for a in out.values()):
        warnings.warn(f"{run_stem(config, record)}.npz: failed checks (records shape); "
                      "recomputing")
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


def writable_folders(experiment: str, need_bytes: int = 0) -> tuple[Path, Path]:
    """(results folder, checkpoint folder) of an experiment, made if missing; an
    unwritable one, or a results folder with less than `need_bytes` free, raises,
    naming it and the variable that moves it."""
    return (ensure_writable(results_dir() / experiment, "results folder",
                            "Set ANTICIP_RESULTS to a writable folder with room, or fix "
                            "this folder's permissions.", need_bytes=need_bytes),
            ensure_writable(cache_dir() / "checkpoints" / experiment, "checkpoint folder",
                            "Set ANTICIP_CACHE to a writable folder, or fix this "
                            "folder's permissions."))


def locked(path: Path, what: str):
    """An exclusive lock on `path` for a `with` block (`files.lock`; waits, saying so)."""
    return files.lock(path, what)


def result_bytes(n_episodes: int, n_docs: int, n_steps: int) -> int:
    """Room a run's two files need at most (uncompressed arrays, and the json)."""
    return 8 * ((n_episodes + 1) * n_docs + n_steps + n_episodes) + 2**16


def check_run(config, device="cpu"):
    """`trainer.check_run` (imported on first use: reading results costs no torch)."""
    from .trainer import check_run as check

    return check(config, device)


def train_run(config, **kw):
    """`trainer.train_run` (imported on first use: reading results costs no torch)."""
    from .trainer import train_run as train

    return train(config, **kw)


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
    (`trainer.check_run`), the results and checkpoint folders must be writable and
    the results folder must have room for the run's files. Training checkpoints under
    `cache_dir()/checkpoints/<experiment>/` at every epoch end and at least every
    `checkpoint_every_s` seconds, so an interrupted call resumes where it stopped; the
    checkpoint is deleted once the results are written and load back. One process at
    a time computes a given run (a lock file next to the results); another one
    calling for it waits, then loads it.
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

    c = config
    n_ep = c.n_epochs * c.n_docs
    return compute_once(
        experiment, run_stem(config, recs), find=found,
        train=lambda ckpt: train_run(config, device=device, checkpoint=ckpt,
                                     progress=progress, record=recs,
                                     checkpoint_every_s=checkpoint_every_s,
                                     keep_checkpoint=True),
        save=lambda run: save_run(run, experiment, recs),
        load=lambda: load_run(config, experiment, recs),
        need_bytes=result_bytes(n_ep, c.n_docs, n_ep * c.steps_per_doc))


def compute_once(experiment: str, stem: str, *, find, train, save, load,
                 need_bytes: int = 2**16):
    """Compute one run under its lock, save it, and return it as loaded back.

    find(): the run if another process saved it meanwhile (then nothing is trained);
    train(checkpoint): the run, trained resumably from `checkpoint` (kept at the end);
    save(run) writes its files, load() reads them back with their checks. The
    checkpoint is deleted once the files load; if they fail their checks it is kept,
    so the next call re-saves without training. A checkpoint the trainer refuses
    (damaged, or written by other code) is set aside, named in a warning, and the run
    starts from episode 0. need_bytes: room the results folder must have before any
    work. Shared by `run_cached` and `vision.run_cached`: call it after the run's
    inputs are checked.
    """
    from .checkpoint import CheckpointError

    folder, ckpt_dir = writable_folders(experiment, need_bytes)
    ckpt = ckpt_dir / f"{stem}.pt"
    with files.lock(lock_path(experiment, stem), stem):
        run = find()  # written meanwhile by another process
        if run is not None:
            return run
        files.clear_temporaries(ckpt)  # left by a killed writer
        files.clear_temporaries(folder / f"{stem}.npz")
        files.clear_temporaries(folder / f"{stem}.json")
        try:
            run = train(ckpt)
        except CheckpointError as err:
            aside = files.set_aside(ckpt, "refused")
            warnings.warn(f"{err} It was set aside as {aside}; this run starts from "
                          "episode 0.")
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
