"""The training loop: cyclic (or shuffled) fine-tuning with evaluation after every episode.

Paper §2 and SPEC §2.4: an episode is M gradient steps (batch size 1) on one document;
after each episode the loss on all T documents is evaluated into `eval_loss[k]`, with
row 0 before any training. Training losses are recorded before each update. The loss is
pluggable (`loss_fn`), so the same loop serves token documents (`lm_loss`), pixel-token
images and labelled image batches.

One loop trains K ≥ 1 runs. `train` is one run through the model's own forward (the
path every committed result took); `train_many` is K runs of one architecture whose
stacked weights go through one batched forward (`anticip_lib.batched`), each run with
its own weights, documents and order, each returned `Run` what `train` gives for that
run alone up to float rounding (≤ 1e-4 on eval_loss in fp32). Both share the
schedule, the optimizer factory, the divergence rule, the recorders, the callback and
the checkpoints (`anticip_lib.checkpoint`).
"""

import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt_mod
from . import records
from .checkpoint import CheckpointError  # noqa: F401 - public here as before
from .files import ensure_writable  # noqa: F401 - public here as before
from .losses import auto_eval_batch, evaluate, lm_loss  # noqa: F401
from .run import Run

CHECKPOINT_FORMAT = ckpt_mod.FORMAT
_save_atomic = ckpt_mod.save  # looked up at each write (tests count the writes)
ENGINES = ("auto", "model", "neox", "vmap")


def make_optimizer(name: str, params, lr: float, fused: bool = False):
    """The optimizer of every run: vanilla GD (no momentum, no weight decay, paper A.1)
    or Adam. fused: torch's one-pass Adam kernel where the device has it (same update
    up to rounding; on CPU 6× faster than the default loop over ~10 kernels)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    if name in ("adam", "adam_reset"):
        if fused:
            try:
                return torch.optim.Adam(params, lr=lr, fused=True)
            except (RuntimeError, TypeError, ValueError):  # no fused kernel here
                pass
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adam_reset', got {name!r}")


def lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    """The learning rate of step `step` of `total`: constant, or cosine from lr to 0
    over the whole run (App. B.6, min lr 0)."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * step / total))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")


_lr_at = lr_at  # the name tests and benchmarks know


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


class _Model:
    """One run through the model's own forward: the backend of `train` (engine "model").

    The operations are exactly those every committed run was computed with."""

    K, sparse, embed = 1, False, None

    def __init__(self, model, inputs, labels, attention_mask, loss_fn, eval_batch):
        self.model, self.inputs, self.labels, self.mask = model, inputs, labels, attention_mask
        self.loss_fn, self.eval_batch = loss_fn, eval_batch
        self.dense = [p for p in model.parameters() if p.requires_grad]

    def begin_episode(self, docs) -> list:
        d = int(docs[0])
        self.x, self.y = self.inputs[d : d + 1], self.labels[d : d + 1]
        self.m = None if self.mask is None else self.mask[d : d + 1]
        self.model.train()
        return []

    def losses(self):
        return self.loss_fn(self.model, self.x, self.y, self.m).mean()

    def end_episode(self) -> None:
        pass

    def evaluate(self, weights=None) -> np.ndarray:
        return evaluate(self.model, self.inputs, self.labels, self.mask,
                        loss_fn=self.loss_fn, eval_batch=self.eval_batch)[None]


def _check_many(models, inputs, labels, orders, attention_mask):
    if not isinstance(models, (list, tuple)) or len(models) == 0:
        raise ValueError("models must be a non-empty list of models (one per run)")
    K = len(models)
    names0 = [(n, tuple(p.shape), p.dtype) for n, p in models[0].named_parameters()]
    for i, m in enumerate(models[1:], 1):
        if type(m) is not type(models[0]):
            raise ValueError(f"models[{i}] is a {type(m).__name__}, models[0] a "
                             f"{type(models[0]).__name__}: one architecture per call")
        names = [(n, tuple(p.shape), p.dtype) for n, p in m.named_parameters()]
        if names != names0:
            raise ValueError(f"models[{i}] has other parameters (names, shapes or "
                             "dtypes) than models[0]: one architecture per call")
    for name, t in (("inputs", inputs), ("labels", labels)):
        if not torch.is_tensor(t) or t.ndim < 2 or t.shape[0] != K:
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"{name} must be a tensor (K={K}, T, …), one entry per "
                             f"model; got {shape}")
    if labels.shape[:2] != inputs.shape[:2]:
        raise ValueError(f"labels has shape {tuple(labels.shape)}, inputs "
                         f"{tuple(inputs.shape)}: both must be (K, T, …)")
    if attention_mask is not None and (
            not torch.is_tensor(attention_mask) or attention_mask.shape != inputs.shape):
        shape = (tuple(attention_mask.shape) if torch.is_tensor(attention_mask)
                 else type(attention_mask).__name__)
        raise ValueError(f"attention_mask must have the shape of inputs "
                         f"{tuple(inputs.shape)}; got {shape}")
    orders = np.asarray(orders)
    if orders.ndim != 2 or orders.shape[0] != K:
        raise ValueError(f"orders must be (K={K}, E·T), one order per model; got shape "
                         f"{orders.shape}")
    if orders.shape[1] < 1 or not np.issubdtype(orders.dtype, np.integer):
        raise ValueError("orders must hold integer document indices, at least one "
                         "episode per run")
    if orders.min() < 0 or orders.max() >= inputs.shape[1]:
        raise ValueError(f"orders holds document indices outside 0..{inputs.shape[1] - 1}")
    return np.ascontiguousarray(orders)


def train(model, inputs, labels, order, *, engine: str = "model", **kw) -> Run:
    """Train `model` on documents `inputs[order[k]]`, M steps each, evaluating all T.

    inputs, labels: (T, …) tensors, one entry per document (token ids (T, C) for LMs).
    order: (E·T,) document index of each episode (see `anticip_lib.orders`).
    engine: "model" (default: the model's own forward, the path of every committed
    result) or "neox" / "vmap" (the batched forward of `train_many`, with K = 1:
    faster, equal up to rounding). Every other argument is `train_many`'s.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine in ("model", "auto"):
        return _loop([model], inputs, labels, order, batched=False, engine="model", **kw)[0]
    order = np.asarray(order, dtype=np.int64)
    mask = kw.pop("attention_mask", None)
    return _loop([model], inputs[None], labels[None], order[None], batched=True,
                 engine=engine, attention_mask=None if mask is None else mask[None],
                 **kw)[0]


def train_many(models, inputs, labels, orders, *, engine: str = "auto", **kw) -> list[Run]:
    """Train K runs at once: `[Run]`, each `train`'s result for that run up to rounding.

    models: K models of one architecture (each its own weights); trained in place, as
    `train` does (their weights hold the final ones when this returns).
    inputs, labels: (K, T, …) tensors, run k's documents in inputs[k] (token ids
    (K, T, C) for LMs); attention_mask: (K, T, C) or None.
    orders: (K, E·T) document index of each episode, one row per run.
    engine: "auto" | "neox" | "vmap" (`anticip_lib.batched`; auto: neox where it applies).
    Every other argument is as for `train` (see `_loop`).
    """
    if engine not in ENGINES or engine == "model":
        raise ValueError(f"engine must be one of auto, neox, vmap; got {engine!r}")
    orders = _check_many(models, inputs, labels, orders, kw.get("attention_mask"))
    return _loop(list(models), inputs, labels, orders, batched=True, engine=engine, **kw)


def _loop(
    models,
    inputs,
    labels,
    order,
    *,
    batched: bool,
    engine: str,
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
    fused_adam: bool | None = None,
    overlap_eval: bool | None = None,
) -> list[Run]:
    """The one loop, for K ≥ 1 runs (`train`: one; `train_many`: K).

    on_episode_end(k, model): called after episode k's evaluation (and recorders),
    k = 0..E·T (0 = before training), once per run (K runs: with that run's model,
    its weights those after episode k), in this process only: a resumed run calls it
    again for the episodes since its last checkpoint, not for the ones before.
    record: a recorder or several (`anticip_lib.records`); their per-episode arrays are
    stacked into `run.records[name][key]`, shape (E·T+1, …), and kept in checkpoints
    (K runs: each run its own copy of the recorders, bound to its own documents).

    Divergence: a run stops at its first non-finite training loss (that step is not
    taken) or evaluation loss; the episode is still evaluated, and the rows of the
    episodes after it stay NaN (`meta["diverged_at"]` = that episode); its weights are
    never trained again (K runs: its gradient is dropped and its weights are put back
    at every episode end while the others go on; its model ends with the weights it
    diverged with). One run: no compute is spent on a diverged model.

    checkpoint: a file holding the whole state (weights, optimizer, RNG, losses,
    records). It is written atomically at the end of every epoch (every T episodes),
    after a divergence, and otherwise whenever `checkpoint_every_s` seconds have passed
    since the last write (0: after every episode). If it exists, the runs resume from
    it and end with the same arrays as an uninterrupted call; a file that belongs to
    other runs or cannot be read safely raises CheckpointError naming it. It is
    deleted when the runs complete, unless `keep_checkpoint` (then it is also written
    at the very end, so a caller can delete it once the results are safely saved, and a
    call with the complete checkpoint finishes at once).
    run_key: text identifying the run(s), mixed into the checkpoint's fingerprint
    (`train_run` passes its config's key fields). The fingerprint also hashes the
    models' initial states, their trained parameters' names, the documents, the
    orders, the settings, the loss function's name and the recorders.
    precision: "fp32", or "bf16" (forward and backward, training and evaluation, under
    bf16 autocast; weights and optimizer state stay fp32; in the fingerprint and in
    meta["precision"]).
    fused_adam: torch's fused Adam kernel (same update up to rounding). Default: on for
    the batched engines, off for engine "model" (whose numbers stay bit for bit those
    of the committed runs).
    overlap_eval: evaluate episode k's weights (a copy) in a second thread while
    episode k+1 trains (batched "neox" engine only). Default: on a CPU with ≥ 2
    threads, where a batch-1 step of a small model gains nothing from a second thread
    and evaluation is a third of the work; the torch thread count is halved between
    the two meanwhile (restored on return). Same arrays as without; a checkpoint may
    then hold the weights of an episode whose evaluation was still running, and a
    resume evaluates it first.
    """
    from .config import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got "
                         f"{precision!r}")
    K = len(models)
    order = np.asarray(order, dtype=np.int64)
    orders = order.reshape(K, -1)
    n_docs = inputs.shape[1] if batched else inputs.shape[0]
    n_episodes = orders.shape[1]
    if not isinstance(steps_per_doc, (int, np.integer)) or steps_per_doc < 1:
        raise ValueError(f"steps_per_doc must be an integer >= 1, got {steps_per_doc!r}")
    if orders.min() < 0 or orders.max() >= n_docs:
        raise ValueError(f"order holds document indices outside 0..{n_docs - 1}")
    if not (isinstance(checkpoint_every_s, (int, float)) and checkpoint_every_s >= 0):
        raise ValueError(f"checkpoint_every_s must be a number >= 0 (seconds), got "
                         f"{checkpoint_every_s!r}")
    lr_at(0, 1, lr, lr_schedule)  # rejects an unknown schedule before any work
    if optimizer not in ("sgd", "adam", "adam_reset"):
        raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adam_reset', got "
                         f"{optimizer!r}")
    recs = records.as_tuple(record)
    device = resolve_device(device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision='bf16' needs a cpu or cuda device, got {device}")
    if batched:
        from . import batched as batched_mod

        engine = batched_mod.pick_engine(models[0], loss_fn, engine)
    fused = batched if fused_adam is None else bool(fused_adam)
    if overlap_eval is None:
        overlap_eval = (engine == "neox" and device.type == "cpu"
                        and torch.get_num_threads() >= 2)
    elif overlap_eval and engine != "neox":  # functional_call is not thread-safe
        raise ValueError("overlap_eval=True needs the 'neox' engine; this call uses "
                         f"'{engine}'")

    def autocast():  # a fresh context each time: two threads may be inside one
        return torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "bf16")

    # ---- checkpoint: fingerprint and checked load, before anything moves ----
    ckpt = Path(checkpoint) if checkpoint is not None else None
    total_steps = n_episodes * steps_per_doc
    state, fp = None, None
    if ckpt is not None:
        ensure_writable(ckpt.parent, "checkpoint folder")
        settings = dict(steps_per_doc=int(steps_per_doc), optimizer=optimizer,
                        lr=repr(float(lr)), lr_schedule=lr_schedule,
                        loss_fn=ckpt_mod.callable_name(loss_fn),
                        records=records.identity(recs))
        if precision != "fp32":  # fp32 checkpoints keep their fingerprint
            settings["precision"] = precision
        if batched:
            settings.update(engine=engine, runs=K, fused_adam=fused)
        elif fused:
            settings["fused_adam"] = True
        fp = ckpt_mod.fingerprint(models, order, inputs, labels, attention_mask,
                                  settings, run_key)
        if ckpt.exists():
            if batched:
                shapes = {"done": n_episodes, "eval_loss": (K, n_episodes + 1, n_docs),
                          "train_loss": (K, total_steps), "runs": K}
                state = ckpt_mod.load(ckpt, fp, shapes, keys=("params", "optimizer", "rng"))
            else:
                shapes = {"done": n_episodes, "eval_loss": (n_episodes + 1, n_docs),
                          "train_loss": (total_steps,)}
                state = ckpt_mod.load(ckpt, fp, shapes)

    # ---- the runs' weights on the device, and their backend ----
    inputs, labels = inputs.to(device), labels.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    if batched:
        backend = batched_mod.Stacked(models, inputs, labels, attention_mask,
                                      loss_fn=loss_fn, engine=engine, optimizer=optimizer,
                                      device=device, eval_batch=eval_batch,
                                      autocast=autocast)
    else:
        models[0].to(device)
        backend = _Model(models[0], inputs, labels, attention_mask, loss_fn, eval_batch)
    opt = make_optimizer(optimizer, backend.dense, lr, fused) if backend.dense else None
    eval_loss = np.full((K, n_episodes + 1, n_docs), np.nan)
    train_loss = np.full((K, total_steps), np.nan)
    rec_arrays = [{} for _ in range(K)]
    done, evaluated, wall_before = 0, -1, 0.0  # episodes trained; last row filed
    diverged_at: list = [None] * K
    if state is not None:
        if batched:
            with torch.no_grad():
                for n, p in backend.params.items():
                    p.copy_(state["params"][n])
            eval_loss[:] = state["eval_loss"].numpy()
            train_loss[:] = state["train_loss"].numpy()
            diverged_at = list(state.get("diverged_at") or diverged_at)
            recs_state = state["records"]
        else:
            models[0].load_state_dict(state["model"])
            eval_loss[0] = state["eval_loss"].numpy()
            train_loss[0] = state["train_loss"].numpy()
            diverged_at = [state.get("diverged_at")]
            recs_state = [state["records"]]
        if opt is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            for s in opt.state.values():  # own copies, not views of the mapped file
                for key, v in s.items():
                    if torch.is_tensor(v):
                        s[key] = v.clone()
        torch.set_rng_state(state["rng"])
        rec_arrays = [{n: {k: a.numpy().copy() for k, a in v.items()}
                       for n, v in rs.items()} for rs in recs_state]
        done = state["done"]
        evaluated = int(state.get("evaluated", done))
        wall_before = float(state.get("wall_s", 0.0))
        del state
    run_recs = [recs] + [copy.deepcopy(recs) for _ in range(K - 1)]
    for r in range(K):
        for rec in run_recs[r]:
            if hasattr(rec, "bind"):
                m = None if attention_mask is None else attention_mask[r if batched else slice(None)]
                rec.bind(inputs[r] if batched else inputs, labels[r] if batched else labels,
                         m, loss_fn)
    # a diverged run's weights, put back at every episode end (K runs)
    frozen = {r: backend.weights_of(r) for r in range(K)
              if batched and diverged_at[r] is not None}
    per_episode = bool(recs) or on_episode_end is not None  # they read the models

    def alive():
        return any(d is None for d in diverged_at)
    t0 = time.perf_counter()

    # ---- evaluation, in this thread or beside the training ----
    threads, pool = torch.get_num_threads(), None
    if overlap_eval:
        from concurrent.futures import ThreadPoolExecutor

        backend.net.rope(inputs.shape[-1], device)  # filled once, not by two threads
        torch.set_num_threads(max(1, threads // 2))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train-eval")

    def submit(k):
        """Start evaluating the weights after episode k (row k of eval_loss)."""
        if batched and per_episode:  # models[r] hold the weights after episode k
            backend.to_models(models)
        if pool is None:
            with autocast():
                return k, backend.evaluate(), None
        weights = backend.copy_weights()
        return k, pool.submit(backend.evaluate, weights), weights

    def finish(job):
        """Wait for a submitted evaluation, file its row, run recorders and the
        callback, apply the divergence rule; returns its episode."""
        k, row, weights = job
        row = row if pool is None else row.result()
        for r in range(K):
            if diverged_at[r] is not None and diverged_at[r] < k:
                continue  # rows after a divergence stay NaN
            eval_loss[r, k] = row[r]
            for rec in run_recs[r]:
                _store(rec_arrays[r], rec.name, k, rec(k, models[r]), n_episodes + 1)
            if on_episode_end is not None:
                on_episode_end(k, models[r])
            if diverged_at[r] is None and not np.isfinite(row[r]).all():
                diverged_at[r] = k
                if batched:  # its weights after episode k (with overlap: the copy)
                    frozen[r] = backend.weights_of(r, weights)
                    backend.set_weights(r, frozen[r])
                    if k < done_now[0]:  # episode k+1 already trained: undone
                        train_loss[r, k * steps_per_doc:(k + 1) * steps_per_doc] = np.nan
        return k

    def write_checkpoint(k):
        common = {"format": CHECKPOINT_FORMAT, "fingerprint": fp, "done": k,
                  "wall_s": wall_before + time.perf_counter() - t0,
                  "optimizer": (None if opt is None or (batched and optimizer == "adam_reset")
                                else opt.state_dict()),
                  "rng": torch.get_rng_state()}
        if batched:
            state = {**common, "evaluated": evaluated, "diverged_at": diverged_at,
                     "params": {n: p.detach() for n, p in backend.params.items()},
                     "eval_loss": torch.from_numpy(eval_loss),
                     "train_loss": torch.from_numpy(train_loss),
                     "records": [{n: {key: torch.from_numpy(a) for key, a in v.items()}
                                  for n, v in rs.items()} for rs in rec_arrays]}
        else:
            state = {**common, "diverged_at": diverged_at[0],
                     "model": models[0].state_dict(),
                     "eval_loss": torch.from_numpy(eval_loss[0]),
                     "train_loss": torch.from_numpy(train_loss[0]),
                     "records": {n: {key: torch.from_numpy(a) for key, a in v.items()}
                                 for n, v in rec_arrays[0].items()}}
        _save_atomic(state, ckpt)

    def train_episode(k):
        """Episode k: M steps on each live run's document orders[:, k-1]."""
        nonlocal opt
        extra = backend.begin_episode(orders[:, k - 1])
        if optimizer == "adam_reset":  # "reset the optimizer state for each document"
            opt = make_optimizer("adam", backend.dense, lr, fused)
        sub_opt = (make_optimizer("adam" if optimizer == "adam_reset" else "sgd", extra,
                                  lr, fused) if extra else None)
        for j in range(steps_per_doc):
            step = (k - 1) * steps_per_doc + j
            lr_now = lr_at(step, total_steps, lr, lr_schedule)
            for o in (opt, sub_opt):
                if o is not None:
                    for group in o.param_groups:
                        group["lr"] = lr_now
            with autocast():
                loss = backend.losses()
            if not batched:
                train_loss[0, step] = loss.item()
                if not math.isfinite(train_loss[0, step]):
                    diverged_at[0] = k  # no step with a non-finite loss; evaluate, stop
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                continue
            vals = loss.detach().double().cpu().numpy()
            for r in range(K):
                if diverged_at[r] is None:
                    train_loss[r, step] = vals[r]
                    if not math.isfinite(vals[r]):  # this step is not taken for it
                        diverged_at[r] = k
                        frozen[r] = backend.current_weights(r)
            live = [diverged_at[r] is None for r in range(K)]
            if not any(live):
                break
            for o in (opt, sub_opt):
                if o is not None:
                    o.zero_grad(set_to_none=True)
            if all(live):  # run k's gradient is its own loss's gradient
                loss.sum().backward()
            else:
                keep = torch.tensor(live, device=loss.device)
                torch.where(keep, loss, torch.zeros_like(loss)).sum().backward()
                for r in range(K):
                    if not live[r]:
                        backend.zero_grads(r)
            for o in (opt, sub_opt):
                if o is not None:
                    o.step()
        backend.end_episode()
        for r, w in frozen.items():  # a diverged run keeps the weights it had
            backend.set_weights(r, w)

    done_now = [done]  # the last episode trained (finish reads it)
    bar = tqdm(total=n_episodes, initial=done, disable=not progress,
               desc="episodes" if not batched else f"{K} runs in lockstep")
    k, job = done, None
    try:
        if evaluated < done and alive():  # row `done` (0 at the start) is pending
            job = submit(done)
            if pool is None:
                evaluated, job = finish(job), None
        last_write = _clock()
        while alive() and k < n_episodes:
            k += 1  # episode k trains orders[:, k-1]
            train_episode(k)
            done_now[0] = k
            if job is not None:  # episode k-1's evaluation ran while k trained
                evaluated, job = finish(job), None
                if not alive():
                    break
            job = submit(k)
            if pool is None:
                evaluated, job = finish(job), None
            last = not alive() or k == n_episodes
            due = (last or k % n_docs == 0 or any(d == k for d in diverged_at)
                   or _clock() - last_write >= checkpoint_every_s)
            if ckpt is not None and due and (keep_checkpoint or not last) and not (
                    pool is not None and last):  # with row k pending: evaluated first
                write_checkpoint(k)
                last_write = _clock()
            bar.update(1)
            if not batched:
                d = orders[0, k - 1]
                bar.set_postfix(doc=int(d), loss=f"{eval_loss[0, k, d]:.3f}")
        if job is not None:
            evaluated, job = finish(job), None
            if ckpt is not None and keep_checkpoint:
                write_checkpoint(k)
        if ckpt is not None and keep_checkpoint and k == done == 0:
            write_checkpoint(0)  # diverged before the first step (or no episodes)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)
    bar.close()
    wall = time.perf_counter() - t0
    if ckpt is not None and not keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    if batched:
        backend.to_models(models)  # the models hold their final weights, as after train
    runs = []
    for r in range(K):
        if batched:
            meta = {"wall_s": (wall_before + wall) / K, "lockstep_wall_s": wall_before + wall,
                    "lockstep": K, "lockstep_engine": engine, "precision": precision,
                    "resumed_at": done, "overlap_eval": bool(overlap_eval),
                    "fused_adam": fused, "device": str(device)}
        else:
            meta = {"wall_s": wall_before + wall, "resumed_at": done,
                    "device": str(device), "precision": precision}
            if fused:
                meta["fused_adam"] = True
        if diverged_at[r] is not None:
            meta["diverged_at"] = int(diverged_at[r])
        runs.append(Run(None, eval_loss[r], train_loss[r], orders[r], meta,
                        records=rec_arrays[r]))
    return runs


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
