"""The training loop: cyclic (or shuffled) fine-tuning with evaluation after every episode.

Paper §2 and SPEC §2.4: an episode is M gradient steps (batch size 1) on one document;
after each episode the loss on all T documents is evaluated into `eval_loss[k]`, with
row 0 before any training. Training losses are recorded before each update. The loss is
pluggable (`loss_fn`), so the same loop serves token documents (`lm_loss`), pixel-token
images and labelled image batches.
"""

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass
class Run:
    """One run: a config (or None for the low-level loop) and its recorded losses."""

    config: object
    eval_loss: np.ndarray  # (E·T+1, T); row k = after k episodes, row 0 = before training
    train_loss: np.ndarray  # (E·T·M,), before each update
    order: np.ndarray  # (E·T,) document of each episode
    meta: dict = field(default_factory=dict)


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


def _fingerprint(order, steps_per_doc, optimizer, lr, lr_schedule, inputs, labels) -> str:
    h = hashlib.sha1()
    for part in (np.asarray(order), inputs.cpu().numpy(), labels.cpu().numpy()):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(repr((steps_per_doc, optimizer, float(lr), lr_schedule)).encode())
    return h.hexdigest()


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


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
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",  # or "auto": CUDA when available
    progress: bool = True,
) -> Run:
    """Train `model` on documents `inputs[order[k]]`, M steps each, evaluating all T.

    inputs, labels: (T, …) tensors, one entry per document (token ids (T, C) for LMs).
    order: (E·T,) document index of each episode (see `anticip_lib.orders`).
    on_episode_end(k, model): called after episode k's evaluation, k = 0..E·T (0 =
    before training), in this process only (a resumed run skips finished episodes).
    checkpoint: file written atomically after every episode; if it exists the run
    resumes from it and ends with the same arrays as an uninterrupted run. It is
    deleted when the run completes.
    """
    order = np.asarray(order, dtype=np.int64)
    n_docs, n_episodes = inputs.shape[0], len(order)
    if steps_per_doc < 1:
        raise ValueError(f"steps_per_doc must be >= 1, got {steps_per_doc}")
    if order.min() < 0 or order.max() >= n_docs:
        raise ValueError(f"order holds document indices outside 0..{n_docs - 1}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model.to(device)
    inputs, labels = inputs.to(device), labels.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr)
    total_steps = n_episodes * steps_per_doc
    eval_loss = np.full((n_episodes + 1, n_docs), np.nan)
    train_loss = np.full(total_steps, np.nan)
    fp = _fingerprint(order, steps_per_doc, optimizer, lr, lr_schedule, inputs, labels)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    done = 0  # episodes completed
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state["fingerprint"] != fp:
            raise RuntimeError(f"checkpoint {ckpt} belongs to a different run; delete it")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        eval_loss, train_loss, done = state["eval_loss"], state["train_loss"], state["done"]
    eval_kw = dict(loss_fn=loss_fn, eval_batch=eval_batch)
    t0 = time.perf_counter()
    if done == 0:
        eval_loss[0] = evaluate(model, inputs, labels, attention_mask, **eval_kw)
        if on_episode_end is not None:
            on_episode_end(0, model)
    bar = tqdm(total=n_episodes, initial=done, desc="episodes", disable=not progress)
    for k in range(done + 1, n_episodes + 1):  # episode k trains order[k-1]
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
            loss = loss_fn(model, x, y, m).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_loss[step] = loss.item()
        eval_loss[k] = evaluate(model, inputs, labels, attention_mask, **eval_kw)
        if on_episode_end is not None:
            on_episode_end(k, model)
        if ckpt is not None:
            _save_atomic(
                {
                    "fingerprint": fp,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": torch.get_rng_state(),
                    "eval_loss": eval_loss,
                    "train_loss": train_loss,
                    "done": k,
                },
                ckpt,
            )
        bar.update(1)
        bar.set_postfix(doc=int(d), loss=f"{eval_loss[k, d]:.3f}")
    bar.close()
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    meta = {"wall_s": time.perf_counter() - t0, "resumed_at": done, "device": str(device)}
    return Run(None, eval_loss, train_loss, order, meta)


def train_run(config, device="cpu", *, checkpoint=None, progress=True, on_episode_end=None):
    """The high-level entry point: build model, documents and order from a RunConfig.

    Everything is validated (config fields, model name, corpus, context length) before
    any weights are loaded or any step is taken.
    """
    from . import data, models, orders

    config.validate()
    data.check_corpus(config.corpus)
    max_c = models.max_context(config.model)
    if config.context_len > max_c:
        raise ValueError(
            f"context_len={config.context_len} exceeds the maximum context of "
            f"model {config.model!r} ({max_c} tokens)"
        )
    order = orders.make(
        config.order, config.n_docs, config.n_epochs,
        seed=config.seed, n_shuffled=config.n_shuffled,
    )
    model, tokenizer = models.load_model(
        config.model, init=config.init, revision=config.revision,
        seed=config.seed, tokenizer=config.tokenizer,
    )
    docs = data.load_documents(
        config.corpus, tokenizer, config.n_docs, config.context_len, config.seed,
        split=config.doc_split, doc_filter=config.doc_filter,
    )
    run = train(
        model, docs.input_ids, docs.labels, order,
        steps_per_doc=config.steps_per_doc, optimizer=config.optimizer, lr=config.lr,
        lr_schedule=config.lr_schedule, attention_mask=docs.attention_mask,
        on_episode_end=on_episode_end, checkpoint=checkpoint, device=device,
        progress=progress,
    )
    run.config = config
    run.meta.update(
        model_label=models.describe(config.model, config.init, config.revision),
        doc_ids=[str(d) for d in docs.doc_ids],
        n_params=sum(p.numel() for p in model.parameters()),
    )
    return run
