"""Checkpoints of the training loop: one format, one fingerprint, one save, one checked load.

A checkpoint holds the whole state of one call of `trainer.train` / `train_many`
(weights, optimizer state, RNG, losses, records, episodes done). It is written with
`files.atomic_write` (a unique temporary, fsync, rename; a full disk raises OSError
naming the file) and read with torch's restricted unpickler (`weights_only=True`: no
pickle payload is ever run), then checked: format, fingerprint (the run it belongs
to), shapes. Every refusal is a `CheckpointError` naming the file and what to do.
"""

import functools
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from . import files

FORMAT = "anticip-checkpoint-2"  # torch.save of tensors and plain values only


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used for this run; the message says what to do."""


def delete_advice(path: Path) -> str:
    return (f"Delete it to start this run from episode 0 (rm '{path}'), or pass the "
            "checkpoint of this run.")


def callable_name(f) -> str:
    if isinstance(f, functools.partial):
        kw = sorted(f.keywords.items())
        return f"partial({callable_name(f.func)}, {f.args!r}, {kw!r})"
    qual = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{getattr(f, '__module__', None) or type(f).__module__}.{qual}"


def _update_tensor(h, t) -> None:
    t = torch.as_tensor(t).detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy on CPU


def fingerprint(models, order, inputs, labels, attention_mask, settings: dict,
                run_key: str | None) -> str:
    """Hash of everything that changes the runs' numbers, taken before the first step.

    The models' *initial* states (so their name, init, revision and seed), which
    parameters are trained, the documents (token ids, so corpus, tokenizer, seed, C),
    the order(s), the settings (M, optimizer, lr, schedule, loss function by name,
    recorders, engine) and `run_key` (train_run passes its config's key fields).
    Hashing the weights reads them once (a few seconds for Pythia-1B), only for runs
    with a checkpoint. One model: the fingerprint `trainer.train` always had.
    """
    h = hashlib.sha1()
    h.update(FORMAT.encode())
    for part in (torch.as_tensor(np.ascontiguousarray(order)), inputs, labels):
        _update_tensor(h, part)
    if attention_mask is None:
        h.update(b"no attention mask")
    else:
        _update_tensor(h, attention_mask)
    for model in models:
        for name, t in model.state_dict().items():
            h.update(name.encode())
            _update_tensor(h, t)
    trained = [n for n, p in models[0].named_parameters() if p.requires_grad]
    h.update(json.dumps(trained).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update((run_key or "").encode())
    return h.hexdigest()


def save(state: dict, path: Path) -> None:
    """Write `state` (format and fingerprint added by the caller) atomically to `path`."""
    files.atomic_write(path, lambda f: torch.save(state, f), what="checkpoint")


def _records_ok(recs, rows: int) -> bool:
    return isinstance(recs, dict) and all(
        isinstance(v, dict) and all(torch.is_tensor(a) and a.ndim >= 1 and a.shape[0] == rows
                                    for a in v.values())
        for v in recs.values())


def load(path: Path, fp: str, shapes: dict, keys=("model", "optimizer", "rng")) -> dict:
    """The checkpoint's state (CPU tensors, memory-mapped), after every check.

    shapes: {"done": episodes of the run, "eval_loss": shape, "train_loss": shape,
    "runs": K (records are then a list of K dicts)}. `weights_only=True`: the file is
    read by torch's restricted unpickler, which builds tensors, dicts, lists and plain
    values only, so a file with a pickle payload is refused without running it. The
    fingerprint is compared before any of the state is used.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - truncated, foreign or malicious file
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", x).strip() for x in str(err).splitlines()]
        lines = [x for x in lines if x] or [""]
        # torch's weights-only refusal names the object it would not build
        found = re.search(r"Unsupported global: GLOBAL \S+", str(err))
        why = found.group(0) if found else lines[0][:200]
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({type(err).__name__}: {why}): it "
            "is damaged (e.g. truncated), was written by another program or an older "
            "anticip_lib, or holds objects other than tensors and plain values (code, "
            f"numpy arrays). It was not loaded. {delete_advice(path)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} is not an anticip_lib checkpoint of format "
            f"{FORMAT!r} (found {found!r}). {delete_advice(path)}")
    if state.get("fingerprint") != fp:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run: its model, initial weights, "
            "documents, order or training settings differ from this call's. "
            + delete_advice(path))
    problems = []
    if not isinstance(state.get("done"), int) or not 0 <= state["done"] <= shapes["done"]:
        problems.append("episodes done")
    for key in ("eval_loss", "train_loss"):
        t = state.get(key)
        if not torch.is_tensor(t) or tuple(t.shape) != tuple(shapes[key]):
            problems.append(key)
    recs, rows = state.get("records"), shapes["done"] + 1
    K = shapes.get("runs")
    if K is None:
        ok = _records_ok(recs, rows)
    else:
        ok = isinstance(recs, list) and len(recs) == K and all(_records_ok(r, rows)
                                                               for r in recs)
    if not ok:
        problems.append("records")
    for key in keys:
        if key not in state:
            problems.append(key)
    if problems:
        raise CheckpointError(f"checkpoint {path} is incomplete ({', '.join(problems)}). "
                              + delete_advice(path))
    return state
