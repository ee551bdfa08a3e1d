"""The training loop: cyclic (or shuffled) fine-tuning with evaluation after every episode.

Paper §2 and SPEC §2.4: an episode is M gradient steps (batch size 1) on one document;
after each episode the loss on all T documents is evaluated into `eval_loss[k]`, with
row 0 before any training. Training losses are recorded before each update. The loss is
pluggable (`loss_fn`), so the same loop serves token documents (`lm_loss`), pixel-token
images and labelled image batches.
"""

import functools
import hashlib
import json
import math
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import records


@dataclass
class Run:
    """One run: a config (or None for the low-level loop) and its recorded losses."""

    config: object
    eval_loss: np.ndarray  # (E·T+1, T); row k = after k episodes, row 0 = before training
    train_loss: np.ndarray  # (E·T·M,), before each update
    order: np.ndarray  # (E·T,) document of each episode
    meta: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)  # {recorder name: {key: (E·T+1, …)}}


def lm_loss(model, input_ids, labels, attention_mask=None) -> torch.Tensor:
    """Per-document mean next-token NLL, shape (n,): HF's causal-LM loss for batch 1.

    Labels are shifted inside, and −100 positions (padding) do not count.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (n, C, V)
    # next-token targets, −100 at the last position: no sliced copy of the logits
    target = F.pad(labels[:, 1:], (0, 1), value=-100)
    nll = F.cross_entropy(
        logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100, reduction="none"
    ).view(target.shape)
    n_tokens = (target != -100).sum(dim=1).clamp(min=1)
    return nll.sum(dim=1) / n_tokens


def auto_eval_batch(model, inputs, budget_bytes: int = 2**29) -> int:
    """Documents per evaluation forward pass, keeping the fp32 logits under the budget."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not vocab or inputs.ndim != 2:
        return 1
    per_doc = 2 * inputs.shape[1] * vocab * 4  # logits + their log-softmax
    return max(1, min(inputs.shape[0], budget_bytes // per_doc))


@torch.inference_mode()
def evaluate(model, inputs, labels, attention_mask=None, *, loss_fn=lm_loss, eval_batch=None):
    """Loss on every document, shape (T,), in chunks of `eval_batch` documents."""
    was_training = model.training
    model.eval()
    eval_batch = eval_batch or auto_eval_batch(model, inputs)
    out = []
    for i in range(0, inputs.shape[0], eval_batch):
        mask = None if attention_mask is None else attention_mask[i : i + eval_batch]
        out.append(loss_fn(model, inputs[i : i + eval_batch], labels[i : i + eval_batch], mask))
    model.train(was_training)
    return torch.cat(out).double().cpu().numpy()


def _make_optimizer(name: str, params, lr: float):
    if name == "sgd":  # vanilla GD: no momentum, no weight decay (paper A.1)
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    if name in ("adam", "adam_reset"):
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adam_reset', got {name!r}")


def _lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    if schedule == "constant":
        return lr
    if schedule == "cosine":  # from lr to 0 over the whole run (App. B.6, min lr 0)
        return 0.5 * lr * (1 + math.cos(math.pi * step / total))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")


# ---- checkpoints ----------------------------------------------------------------

CHECKPOINT_FORMAT = "anticip-checkpoint-2"  # torch.save of tensors and plain values only


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used for this run; the message says what to do."""


def _delete_advice(path: Path) -> str:
    return (f"Delete it to start this run from episode 0 (rm '{path}'), or pass the "
            "checkpoint of this run.")


def _callable_name(f) -> str:
    if isinstance(f, functools.partial):
        kw = sorted(f.keywords.items())
        return f"partial({_callable_name(f.func)}, {f.args!r}, {kw!r})"
    qual = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{getattr(f, '__module__', None) or type(f).__module__}.{qual}"


def _update_tensor(h, t) -> None:
    t = torch.as_tensor(t).detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy on CPU


def _fingerprint(model, order, inputs, labels, attention_mask, settings: dict,
                 run_key: str | None) -> str:
    """Hash of everything that changes a run's numbers, taken before the first step.

    The model's *initial* state (so its name, init, revision and seed), which parameters
    are trained, the documents (token ids, so corpus, tokenizer, seed, C), the order,
    the settings (M, optimizer, lr, schedule, loss function by name, recorders) and
    `run_key` (train_run passes its config's key fields). Hashing the weights reads
    them once (a few seconds for Pythia-1B), only for runs with a checkpoint.
    """
    h = hashlib.sha1()
    h.update(CHECKPOINT_FORMAT.encode())
    for part in (torch.as_tensor(np.asarray(order)), inputs, labels):
        _update_tensor(h, part)
    if attention_mask is None:
        h.update(b"no attention mask")
    else:
        _update_tensor(h, attention_mask)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _update_tensor(h, t)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    h.update(json.dumps(trained).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update((run_key or "").encode())
    return h.hexdigest()


def _save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary name unique to this process, then an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact
    finally:
        tmp.unlink(missing_ok=True)


def _load_checkpoint(path: Path, fingerprint: str, shapes: dict) -> dict:
    """The checkpoint's state (CPU tensors, memory-mapped), after every check.

    `weights_only=True`: the file is read by torch's restricted unpickler, which builds
    tensors, dicts, lists and plain values only, so a file with a pickle payload is
    refused without running it. The fingerprint is compared before any of the state is
    used.
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
            f"numpy arrays). It was not loaded. {_delete_advice(path)}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} is not an anticip_lib checkpoint of format "
            f"{CHECKPOINT_FORMAT!r} (found {found!r}). {_delete_advice(path)}")
    if state.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run: its model, initial weights, "
            "documents, order or training settings differ from this call's. "
            + _delete_advice(path))
    problems = []
    if not isinstance(state.get("done"), int) or not 0 <= state["done"] <= shapes["done"]:
        problems.append("episodes done")
    for key in ("eval_loss", "train_loss"):
        t = state.get(key)
        if not torch.is_tensor(t) or tuple(t.shape) != shapes[key]:
            problems.append(key)
    recs = state.get("records")
    rows = shapes["done"] + 1
    if not isinstance(recs, dict) or not all(
        isinstance(v, dict) and all(torch.is_tensor(a) and a.ndim >= 1 and a.shape[0] == rows
                                    for a in v.values())
        for v in recs.values()
    ):
        problems.append("records")
    for key in ("model", "optimizer", "rng"):
        if key not in state:
            problems.append(key)
    if problems:
        raise CheckpointError(f"checkpoint {path} is incomplete ({', '.join(problems)}). "
                              + _delete_advice(path))
    return state


# ---- devices and folders, checked before any work --------------------------------

def resolve_device(device) -> torch.device:
    """`device` as a torch.device that exists here ("auto": CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'; "
                         f"got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available here (torch "
                             f"{torch.__version__}); use device='cpu', or 'auto' to take "
                             "a GPU when there is one")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r}: MPS is not available here; use 'cpu'")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'; "
                         f"got {device!r}")
    return dev


def ensure_writable(folder, what: str, hint: str = "") -> Path:
    """Create `folder` if needed and prove that a file can be written there.

    Raises OSError naming the folder (and `what` it is for) before any work is done.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(f"{what} {folder} is not writable ({type(err).__name__}: "
                      f"{err.strerror or err}). {hint}".rstrip()) from err
    return folder


# ---- the loop ---------------------------------------------------------------------

_clock = time.monotonic  # the checkpoint interval's clock (tests replace it)

def _store(arrays: dict, name: str, k: int, out, n_rows: int) -> None:
    """Put recorder `name`'s output for episode k into its stacked arrays."""
    if not isinstance(out, dict) or not out:
        raise TypeError(f"recorder {name!r} must return a non-empty dict of arrays, "
                        f"got {type(out).__name__}")
    slot = arrays.setdefault(name, {})
    if slot and set(slot) != set(out):
        raise ValueError(f"recorder {name!r} returned keys {sorted(out)} at episode {k}, "
                         f"{sorted(slot)} before")
    for key, value in out.items():
        a = np.asarray(value)
        if key not in slot:
            dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
            slot[key] = np.full((n_rows, *a.shape), np.nan, dtype=dtype)
        if slot[key].shape[1:] != a.shape:
            raise ValueError(f"recorder {name!r}, key {key!r}: shape {a.shape} at episode "
                             f"{k}, {slot[key].shape[1:]} before")
        slot[key][k] = a


def train(
    model,
    inputs,
    labels,
    order,
    *,
    steps_per_doc: int,
    optimizer: str = "sgd",
    lr: float = 1e-3,
    lr_schedule: str = "constant",
    attention_mask=None,
    loss_fn=lm_loss,
    eval_batch: int | None = None,
    on_episode_end=None,
    record=None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every_s: float = 600.0,
    keep_checkpoint: bool = False,
    run_key: str | None = None,
    device: str | torch.device = "cpu",  # or "auto": CUDA when available
    progress: bool = True,
    precision: str = "fp32",
) -> Run:
    """Train `model` on documents `inputs[order[k]]`, M steps each, evaluating all T.

    inputs, labels: (T, …) tensors, one entry per document (token ids (T, C) for LMs).
    order: (E·T,) document index of each episode (see `anticip_lib.orders`).
    on_episode_end(k, model): called after episode k's evaluation (and recorders),
    k = 0..E·T (0 = before training), in this process only: a resumed run calls it
    again for the episodes since its last checkpoint, not for the ones before.
    record: a recorder or several (`anticip_lib.records`); their per-episode arrays are
    stacked into `run.records[name][key]`, shape (E·T+1, …), and kept in checkpoints.

    Divergence: training stops at the first non-finite training loss (that step is not
    taken) or evaluation loss; the episode is still evaluated, and the rows of the
    episodes after it stay NaN (`meta["diverged_at"]` = that episode). No compute is
    spent on a diverged model.

    checkpoint: a file holding the whole state (weights, optimizer, RNG, losses,
    records). It is written atomically at the end of every epoch (every T episodes),
    after a divergence, and otherwise whenever `checkpoint_every_s` seconds have passed
    since the last write (0: after every episode). If it exists, the run resumes from
    it and ends with the same arrays as an uninterrupted run; a file that belongs to
    another run or cannot be read safely raises CheckpointError naming it. It is
    deleted when the run completes, unless `keep_checkpoint` (then it is also written
    at the very end, so a caller can delete it once the results are safely saved, and a
    call with the complete checkpoint finishes at once).
    run_key: text identifying the run, mixed into the checkpoint's fingerprint
    (`train_run` passes its config's key fields). The fingerprint also hashes the
    model's initial state, its trained parameters' names, the documents, the order, the
    settings, the loss function's name and the recorders, so a checkpoint of another
    model, init, seed, corpus or setting is refused even without a run_key.
    precision: "fp32", or "bf16" (forward and backward, training and evaluation, under
    bf16 autocast; weights and optimizer state stay fp32; in the fingerprint and in
    meta["precision"]).
    """
    from .config import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got "
                         f"{precision!r}")
    order = np.asarray(order, dtype=np.int64)
    n_docs, n_episodes = inputs.shape[0], len(order)
    if steps_per_doc < 1:
        raise ValueError(f"steps_per_doc must be >= 1, got {steps_per_doc}")
    if order.min() < 0 or order.max() >= n_docs:
        raise ValueError(f"order holds document indices outside 0..{n_docs - 1}")
    if not (isinstance(checkpoint_every_s, (int, float)) and checkpoint_every_s >= 0):
        raise ValueError(f"checkpoint_every_s must be a number >= 0 (seconds), got "
                         f"{checkpoint_every_s!r}")
    _lr_at(0, 1, lr, lr_schedule)  # rejects an unknown schedule before any work
    recs = records.as_tuple(record)
    device = resolve_device(device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision='bf16' needs a cpu or cuda device, got {device}")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "bf16")

    ckpt = Path(checkpoint) if checkpoint is not None else None
    total_steps = n_episodes * steps_per_doc
    state = None
    if ckpt is not None:
        ensure_writable(ckpt.parent, "checkpoint folder")
        settings = dict(steps_per_doc=int(steps_per_doc), optimizer=optimizer,
                        lr=repr(float(lr)), lr_schedule=lr_schedule,
                        loss_fn=_callable_name(loss_fn), records=records.identity(recs))
        if precision != "fp32":  # fp32 checkpoints keep their fingerprint
            settings["precision"] = precision
        fp = _fingerprint(model, order, inputs, labels, attention_mask, settings, run_key)
        if ckpt.exists():
            shapes = {"done": n_episodes, "eval_loss": (n_episodes + 1, n_docs),
                      "train_loss": (total_steps,)}
            state = _load_checkpoint(ckpt, fp, shapes)
    model.to(device)
    inputs, labels = inputs.to(device), labels.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr)
    eval_loss = np.full((n_episodes + 1, n_docs), np.nan)
    train_loss = np.full(total_steps, np.nan)
    rec_arrays: dict = {}
    done, diverged_at, wall_before = 0, None, 0.0  # episodes completed
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for s in opt.state.values():  # own copies, not views of the mapped file
            for key, v in s.items():
                if torch.is_tensor(v):
                    s[key] = v.clone()
        torch.set_rng_state(state["rng"])
        eval_loss = state["eval_loss"].numpy().copy()
        train_loss = state["train_loss"].numpy().copy()
        rec_arrays = {n: {k: a.numpy().copy() for k, a in v.items()}
                      for n, v in state["records"].items()}
        done = state["done"]
        diverged_at = state.get("diverged_at")
        wall_before = float(state.get("wall_s", 0.0))
        del state
    for r in recs:
        if hasattr(r, "bind"):
            r.bind(inputs, labels, attention_mask, loss_fn)
    eval_kw = dict(loss_fn=loss_fn, eval_batch=eval_batch)
    t0 = time.perf_counter()

    def after_episode(k):
        for r in recs:
            _store(rec_arrays, r.name, k, r(k, model), n_episodes + 1)
        if on_episode_end is not None:
            on_episode_end(k, model)

    def write_checkpoint(k):
        _save_atomic({
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fp,
            "done": k,
            "diverged_at": diverged_at,
            "wall_s": wall_before + time.perf_counter() - t0,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": torch.get_rng_state(),
            "eval_loss": torch.from_numpy(eval_loss),
            "train_loss": torch.from_numpy(train_loss),
            "records": {n: {key: torch.from_numpy(a) for key, a in v.items()}
                        for n, v in rec_arrays.items()},
        }, ckpt)

    if done == 0 and diverged_at is None:
        with autocast():
            eval_loss[0] = evaluate(model, inputs, labels, attention_mask, **eval_kw)
        after_episode(0)
        if not np.isfinite(eval_loss[0]).all():
            diverged_at = 0
    last_write = _clock()
    bar = tqdm(total=n_episodes, initial=done, desc="episodes", disable=not progress)
    k = done
    while diverged_at is None and k < n_episodes:
        k += 1  # episode k trains order[k-1]
        d = order[k - 1]
        x, y = inputs[d : d + 1], labels[d : d + 1]
        m = None if attention_mask is None else attention_mask[d : d + 1]
        if optimizer == "adam_reset":  # "reset the optimizer state for each document"
            opt = _make_optimizer("adam", params, lr)
        model.train()
        for j in range(steps_per_doc):
            step = (k - 1) * steps_per_doc + j
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total_steps, lr, lr_schedule)
            with autocast():
                loss = loss_fn(model, x, y, m).mean()
            train_loss[step] = loss.item()
            if not math.isfinite(train_loss[step]):
                diverged_at = k  # no step with a non-finite loss; evaluate and stop
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with autocast():
            eval_loss[k] = evaluate(model, inputs, labels, attention_mask, **eval_kw)
        if not np.isfinite(eval_loss[k]).all():
            diverged_at = k
        after_episode(k)
        last = diverged_at is not None or k == n_episodes
        due = (k % n_docs == 0 or diverged_at is not None
               or _clock() - last_write >= checkpoint_every_s)
        if ckpt is not None and due and (keep_checkpoint or not last):
            write_checkpoint(k)
            last_write = _clock()
        bar.update(1)
        bar.set_postfix(doc=int(d), loss=f"{eval_loss[k, d]:.3f}")
    if ckpt is not None and keep_checkpoint and k == done and done == 0:
        write_checkpoint(0)  # diverged before the first step (or no episodes)
    bar.close()
    if ckpt is not None and not keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    meta = {"wall_s": wall_before + time.perf_counter() - t0, "resumed_at": done,
            "device": str(device), "precision": precision}
    if diverged_at is not None:
        meta["diverged_at"] = int(diverged_at)
    return Run(None, eval_loss, train_loss, order, meta, records=rec_arrays)


def check_run(config, device="cpu") -> torch.device:
    """Everything about a run that can be checked before any weights load.

    The config's fields, the model name and its maximum context, the device, and the
    corpus: its name, that it can be reached (the Hub for "cnn_dailymail") and that it
    holds enough documents that can be long enough (`data.check_documents`). Returns
    the device. `train_run` and `results.run_cached` call it first.
    """
    from . import data, models

    config.validate()
    data.check_corpus(config.corpus)
    if config.arch():  # a changed shape: checked before anything loads
        models.shape(config.model, **config.arch())
    max_c = models.max_context(config.model)
    if config.context_len > max_c:
        raise ValueError(
            f"context_len={config.context_len} exceeds the maximum context of "
            f"model {config.model!r} ({max_c} tokens)"
        )
    dev = resolve_device(device)
    data.check_documents(config.corpus, config.n_docs,
                         min_tokens=data.min_doc_tokens(config.doc_filter, config.context_len),
                         split=config.doc_split)
    return dev


def run_key(config) -> str:
    """The config's key fields as text: mixed into a checkpoint's fingerprint."""
    return json.dumps(config.key_dict(), sort_keys=True)


def train_run(config, device="cpu", *, checkpoint=None, progress=True, on_episode_end=None,
              record=None, checkpoint_every_s=600.0, keep_checkpoint=False):
    """The high-level entry point: build model, documents and order from a RunConfig.

    Everything is checked (`check_run`: config fields, model name, context length,
    device, corpus contents; and the checkpoint folder) before any weights are loaded
    or any step is taken. `record`, `checkpoint`, `checkpoint_every_s` and
    `keep_checkpoint` are passed to `train`, with the config's key as `run_key`.
    """
    from . import data, models, orders

    check_run(config, device)
    if checkpoint is not None:
        ensure_writable(Path(checkpoint).parent, "checkpoint folder")
    records.as_tuple(record)  # names checked before the model loads
    order = orders.make(
        config.order, config.n_docs, config.n_epochs,
        seed=config.seed, n_shuffled=config.n_shuffled,
    )
    model, tokenizer = models.load_model(
        config.model, init=config.init, revision=config.revision,
        seed=config.seed, tokenizer=config.tokenizer, **config.arch(),
    )
    docs = data.load_documents(
        config.corpus, tokenizer, config.n_docs, config.context_len, config.seed,
        split=config.doc_split, doc_filter=config.doc_filter,
    )
    run = train(
        model, docs.input_ids, docs.labels, order,
        steps_per_doc=config.steps_per_doc, optimizer=config.optimizer, lr=config.lr,
        lr_schedule=config.lr_schedule, attention_mask=docs.attention_mask,
        on_episode_end=on_episode_end, record=record, checkpoint=checkpoint,
        checkpoint_every_s=checkpoint_every_s, keep_checkpoint=keep_checkpoint,
        run_key=run_key(config), device=device, progress=progress,
        precision=config.precision,
    )
    run.config = config
    run.meta.update(
        model_label=models.describe(config.model, config.init, config.revision,
                                    **config.arch()),
        doc_ids=[str(d) for d in docs.doc_ids],
        n_params=sum(p.numel() for p in model.parameters()),
    )
    return run


def train_many(*args, **kwargs):
    """K runs of one shape trained in lockstep; see `anticip_lib.lockstep.train_many`."""
    from .lockstep import train_many as lockstep_train_many

    return lockstep_train_many(*args, **kwargs)
