"""Many runs at once: K independent runs trained in lockstep (issue #9).

The paper's protocol trains with batch size 1, so one run leaves most of a machine idle
(a GPU almost entirely). `train_many` trains K runs of one architecture and one
(T, C, M, E) side by side: each run has its own weights, documents and order, and every
training step and every evaluation is one batched computation over the K runs. The runs
never mix: each step's loss is the sum of the K runs' losses, whose gradient with
respect to run k's weights is run k's own gradient, and SGD and Adam are elementwise,
so one optimizer over the stacked weights (K, …) is K independent optimizers. Each
returned `Run` is what `trainer.train` gives for that run alone, up to float rounding
(batched matrix products sum in another order; tests: ≤ 1e-4 on eval_loss in fp32).
Rounding differences are amplified by some protocols: Adam reset every episode moves
every weight by ~lr on its first step whatever the size of its gradient, and at lr
1e-3 `train` itself differs by up to 1e-3 between 1 and 2 threads on random tokens
(book/performance.md); lockstep differs from `train` by the same amount there.

Two engines compute the K forward passes:
- "neox": a batched GPT-NeoX forward written here (`torch.baddbmm` over the stacked
  weights, one `scaled_dot_product_attention` over K·n sequences) for
  `GPTNeoXForCausalLM` models (every pythia-* and tiny-gpt shape) with `lm_loss`. It
  also skips the embedding rows a step does not touch where that is exact (SGD, and
  Adam reset every episode: untouched rows have zero gradient and zero state, so their
  update is exactly 0); kept Adam updates every row, as `train` does. Evaluation
  takes the log-sum-exp over blocks of the vocabulary, never writing the full logits.
  Adam is torch's fused kernel (same update up to rounding, 6× faster on CPU).
- "vmap": any model and loss, through `torch.func.functional_call` + `vmap` over the
  stacked weights (slower: generic batching rules, no sparse embedding).
`engine="auto"` picks "neox" when it applies.

`precision="bf16"` runs forward and backward under bf16 autocast with fp32 weights
and optimizer state. It changes the numbers (see benchmarks/lockstep_speed.py), so it
is recorded in each run's meta ("precision") and in the checkpoint fingerprint; it is
never the default. For RunConfigs it is a field (`RunConfig.precision`, part of a
run's key, so bf16 runs are cached apart from fp32 ones); `train_configs` trains at
the configs' precision.

Resuming: with `checkpoint`, the K runs' weights, optimizer state and losses are
written atomically after every episode (or every `checkpoint_every` seconds); a call with the same arguments resumes from
it (loaded with `weights_only=True`: no pickle payload is executed) and ends with the
same arrays as an uninterrupted call. The file is deleted when the runs complete.

`train_configs` / `run_cached_many` do the same for RunConfigs (building each run
exactly as `trainer.train_run` does), and `run_lockstep` is the sweep runner's
`--lockstep K` engine.
"""

import copy
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import PRECISIONS
from .trainer import Run, lm_loss

OPTIMIZERS = ("sgd", "adam", "adam_reset")
ENGINES = ("auto", "neox", "vmap")
EVAL_BUDGET = 2**30  # bytes of fp32 logits (+ their log-softmax) per evaluation pass


# ---- checks ---------------------------------------------------------------------------


def _check_args(models, inputs, labels, orders, attention_mask, steps_per_doc,
                optimizer, lr_schedule, precision, engine):
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
    n_docs = inputs.shape[1]
    if orders.min() < 0 or orders.max() >= n_docs:
        raise ValueError(f"orders holds document indices outside 0..{n_docs - 1}")
    if not isinstance(steps_per_doc, int) or steps_per_doc < 1:
        raise ValueError(f"steps_per_doc must be an integer >= 1, got {steps_per_doc!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adam_reset', got "
                         f"{optimizer!r}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got "
                         f"{lr_schedule!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got "
                         f"{precision!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    return orders.astype(np.int64)


def _lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    # the schedule of trainer._lr_at (kept in step with it by the equality tests)
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1 + math.cos(math.pi * step / total))


def neox_unsupported(model, loss_fn=lm_loss) -> str | None:
    """Why the batched GPT-NeoX engine cannot train `model` with `loss_fn` (None: it can)."""
    if loss_fn is not lm_loss:
        return "a custom loss_fn"
    if type(model).__name__ != "GPTNeoXForCausalLM":
        return f"a {type(model).__name__}, not a GPTNeoXForCausalLM"
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    problems = {
        "dropout": (cfg.attention_dropout or cfg.hidden_dropout),
        "rope type": rope.get("rope_type", "default") != "default",
        "tied embeddings": getattr(cfg, "tie_word_embeddings", False),
        "rotary scaling": getattr(model.gpt_neox.rotary_emb, "attention_scaling",
                                  1.0) != 1.0,
        "grouped-query attention": getattr(cfg, "num_key_value_heads",
                                           cfg.num_attention_heads)
                                   not in (None, cfg.num_attention_heads),
    }
    bad = [k for k, v in problems.items() if v]
    if bad:
        return "a GPT-NeoX config with " + ", ".join(bad)
    names = {n for n, _ in model.named_parameters()}
    if "lm_head.weight" not in names or "gpt_neox.embed_in.weight" not in names:
        return "GPT-NeoX parameters under other names"
    return None


# ---- the batched GPT-NeoX forward ------------------------------------------------------


class _BLinear(torch.autograd.Function):
    """x (K, N, i) @ w (K, o, i)ᵀ + b (K, o): K linear layers at once.

    Autograd's own bmm backward returns the weight gradient of `w.transpose(1, 2)`,
    which is then copied into w's layout (a full extra pass over every weight per
    step); here it is computed in w's layout directly. Under autocast the products
    run in the autocast dtype, the gradients are cast back to the weights' dtype.
    """

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        dt = g.dtype
        gx = torch.bmm(g, w.to(dt)) if ctx.needs_input_grad[0] else None
        gw = (torch.bmm(g.transpose(1, 2), x.to(dt)).to(w.dtype)
              if ctx.needs_input_grad[1] else None)
        gb = (g.sum(dim=1).to(w.dtype)
              if ctx.has_bias and ctx.needs_input_grad[2] else None)
        return gx, gw, gb


def _blinear(x, w, b=None):
    if torch.is_autocast_enabled(x.device.type):  # autocast's dtype, as F.linear
        dt = torch.get_autocast_dtype(x.device.type)
        x, w, b = x.to(dt), w.to(dt), None if b is None else b.to(dt)
        with torch.autocast(x.device.type, enabled=False):
            return _BLinear.apply(x, w, b)
    return _BLinear.apply(x, w, b)


class _Neox:
    """K stacked GPT-NeoX models: logits for (K, n, C) token ids in one pass."""

    def __init__(self, model, params: dict):
        cfg = model.config
        self.p = params
        self.L = cfg.num_hidden_layers
        self.d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.hd = self.d // self.heads
        self.eps = cfg.layer_norm_eps
        self.parallel = cfg.use_parallel_residual
        self.V = cfg.vocab_size
        from transformers.activations import ACT2FN
        self.act = ACT2FN[cfg.hidden_act]
        self.inv_freq = model.gpt_neox.rotary_emb.inv_freq.detach().float().clone()
        self.rot = 2 * self.inv_freq.numel()
        self._rope = {}

    def rope(self, C, device):
        key = (C, str(device))
        if key not in self._rope:  # as GPTNeoXRotaryEmbedding, positions 0..C-1
            pos = torch.arange(C, device=device).float()
            freqs = pos[:, None] * self.inv_freq.to(device)[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            self._rope[key] = (emb.cos(), emb.sin())
        return self._rope[key]

    def _linear(self, x, name):
        return _blinear(x, self.p[name + ".weight"], self.p.get(name + ".bias"))

    def _norm(self, x, name):
        x = F.layer_norm(x, (self.d,), eps=self.eps)
        return torch.addcmul(self.p[name + ".bias"].unsqueeze(1), x,
                             self.p[name + ".weight"].unsqueeze(1))

    def _attention(self, x, pre, n, C, mask4):
        K = x.shape[0]
        qkv = self._linear(x, pre + "query_key_value")  # (K, n·C, 3d)
        qkv = qkv.view(K * n, C, self.heads, 3 * self.hd).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        cos, sin = self.rope(C, x.device)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        r = self.rot

        def rotate(t):
            t_rot, t_pass = t[..., :r], t[..., r:]
            half = r // 2
            rotated = torch.cat((-t_rot[..., half:], t_rot[..., :half]), dim=-1)
            return torch.cat([t_rot * cos + rotated * sin, t_pass], dim=-1)

        q, k = rotate(q), rotate(k)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask4, is_causal=mask4 is None, scale=self.hd ** -0.5)
        out = out.transpose(1, 2).reshape(K, n * C, self.d)
        return self._linear(out, pre + "dense")

    def logits(self, ids, mask4=None, embed=None):
        """ids (K, n, C) → logits (K·n, C, V). `embed`: (rows (K, U, d), local ids
        (K, n, C)) to read the embedding from a subset of its rows."""
        x = self.hidden(ids, mask4, embed)
        return _blinear(x, self.p["lm_head.weight"]).view(ids.numel() // ids.shape[-1],
                                                          ids.shape[-1], -1)

    def hidden(self, ids, mask4=None, embed=None):
        """ids (K, n, C) → final hidden states (K, n·C, d), after the final norm."""
        K, n, C = ids.shape
        if embed is None:
            table = self.p["gpt_neox.embed_in.weight"]
            local, rows = ids, table.shape[1]
        else:
            table, local = embed
            rows = table.shape[1]
        offset = torch.arange(K, device=ids.device).view(K, 1, 1) * rows
        h = F.embedding(local + offset, table.reshape(K * rows, self.d))
        x = h.view(K, n * C, self.d)
        for i in range(self.L):
            pre = f"gpt_neox.layers.{i}."
            attn = self._attention(self._norm(x, pre + "input_layernorm"),
                                   pre + "attention.", n, C, mask4)
            if self.parallel:
                mlp = self._mlp(self._norm(x, pre + "post_attention_layernorm"), pre)
                x = mlp + attn + x
            else:
                attn = attn + x
                x = self._mlp(self._norm(attn, pre + "post_attention_layernorm"),
                              pre) + attn
        return self._norm(x, "gpt_neox.final_layer_norm")

    @torch.no_grad()
    def eval_nll(self, ids, labels, mask4=None, block_bytes=2**23):
        """lm_loss without grad, (K, n): the log-sum-exp over the vocabulary is taken
        in blocks of columns (online), so the (K·n·C, V) logits and their log-softmax
        are never written out (at a 50k vocabulary they are GBs per evaluation)."""
        K, n, C = ids.shape
        x = self.hidden(ids, mask4)
        w = self.p["lm_head.weight"]
        if torch.is_autocast_enabled(x.device.type):
            dt = torch.get_autocast_dtype(x.device.type)
            x, w = x.to(dt), w.to(dt)
        rows, V = x.shape[1], w.shape[1]
        step = int(min(V, max(16, block_bytes // (4 * K * rows))))
        m = torch.full((K, rows), -math.inf, device=x.device)
        s = torch.zeros(K, rows, device=x.device)
        for v0 in range(0, V, step):
            blk = torch.bmm(x, w[:, v0:v0 + step].transpose(1, 2)).float()
            m_new = torch.maximum(m, blk.amax(dim=-1))
            s = s * torch.exp(m - m_new) + blk.sub_(m_new.unsqueeze(-1)).exp_().sum(-1)
            m = m_new
        target = F.pad(labels[..., 1:], (0, 1), value=-100).reshape(K, rows)
        valid = target != -100
        picked = w.gather(1, target.clamp(min=0).unsqueeze(-1).expand(-1, -1, self.d))
        t_logit = torch.bmm(x.reshape(K * rows, 1, self.d),
                            picked.reshape(K * rows, self.d, 1)).view(K, rows).float()
        nll = ((m + s.log() - t_logit) * valid).view(K, n, C)
        return nll.sum(dim=-1) / valid.view(K, n, C).sum(dim=-1).clamp(min=1)

    def _mlp(self, x, pre):
        return self._linear(self.act(self._linear(x, pre + "mlp.dense_h_to_4h")),
                            pre + "mlp.dense_4h_to_h")


def _nll(logits, labels):
    """lm_loss's per-document mean next-token NLL on (N, C, V) logits → (N,)."""
    target = F.pad(labels[:, 1:], (0, 1), value=-100)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(),
                          ignore_index=-100, reduction="none").view(target.shape)
    return nll.sum(dim=1) / (target != -100).sum(dim=1).clamp(min=1)


def _mask4(mask):
    """(…, C) 0/1 padding mask → (…·, 1, C, C) bool causal-and-padding mask, or None
    when nothing is padded (then attention is plain causal, as in HF's own skip)."""
    if mask is None or bool((mask != 0).all()):
        return None
    C = mask.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=mask.device).tril()
    return causal & (mask != 0).reshape(-1, 1, 1, C)


# ---- the generic vmap engine -----------------------------------------------------------


class _Bound:
    """A stand-in for one run's model inside vmap: calls the skeleton with its weights."""

    def __init__(self, skeleton, params, buffers):
        self._s, self._p, self._b = skeleton, params, buffers

    def __call__(self, *args, **kwargs):
        return torch.func.functional_call(self._s, (self._p, self._b), args, kwargs)

    def __getattr__(self, name):
        return getattr(self._s, name)


class _Vmap:
    def __init__(self, model, params, buffers, loss_fn):
        self.skeleton = copy.deepcopy(model).to("meta")
        self.p, self.b, self.loss_fn = params, buffers, loss_fn
        # HF causal LMs read a 2-D padding mask with data-dependent Python control
        # flow, which vmap cannot trace: give them the equivalent 4-D mask instead
        self.mask_4d = loss_fn is lm_loss and hasattr(model, "config")

        def one(p, b, x, y, m):
            return loss_fn(_Bound(self.skeleton, p, b), x, y, m)

        self.one = one

    def losses(self, x, y, m):
        """(K, n, …) inputs → (K, n) losses."""
        if m is not None and self.mask_4d:
            K, n = x.shape[:2]
            m4 = _mask4(m)
            m = None if m4 is None else m4.view(K, n, 1, *m4.shape[-2:])
        dims = (0, 0, 0, 0, None if m is None else 0)
        return torch.func.vmap(self.one, in_dims=dims)(self.p, self.b, x, y, m)


# ---- the loop -------------------------------------------------------------------------


def _digest(params: dict) -> list:
    """Cheap fingerprint of the starting weights (sums and sums of squares, on device)."""
    with torch.no_grad():
        s = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()])
                         for p in params.values()])
    return [round(float(v), 6) for v in s.flatten().cpu()]


def _fingerprint(orders, steps_per_doc, optimizer, lr, lr_schedule, precision, inputs,
                 labels, attention_mask, params) -> str:
    h = hashlib.sha1()
    parts = [orders, inputs.cpu().numpy(), labels.cpu().numpy()]
    if attention_mask is not None:
        parts.append(attention_mask.cpu().numpy())
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(repr((steps_per_doc, optimizer, float(lr), lr_schedule, precision,
                   attention_mask is None,
                   [(n, tuple(p.shape)) for n, p in params.items()],
                   _digest(params))).encode())
    return h.hexdigest()


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def _make_opt(name, params, lr):
    if not params:
        return None
    if name == "sgd":  # vanilla GD, as trainer._make_optimizer
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    # Adam as trainer._make_optimizer, with the fused kernel: one pass over each
    # tensor instead of ~10 (on CPU the default implementation spends 6× longer,
    # 37 % of a pythia-70m step at a 50k vocabulary); same update up to rounding
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def train_many(
    models,
    inputs,
    labels,
    orders,
    *,
    steps_per_doc: int,
    optimizer: str = "sgd",
    lr: float = 1e-3,
    lr_schedule: str = "constant",
    attention_mask=None,
    loss_fn=lm_loss,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    precision: str = "fp32",
    engine: str = "auto",
    eval_batch: int | None = None,
    on_episode_end=None,
    checkpoint_every: float = 0.0,
    keep_checkpoint: bool = False,
    overlap_eval: bool | None = None,
) -> list[Run]:
    """Train K runs in lockstep; `[Run]` equal to `trainer.train` run by run.

    models: K models of one architecture (each its own weights); trained in place, as
    `train` does (their weights hold the final ones when this returns).
    inputs, labels: (K, T, …) tensors, run k's documents in inputs[k] (token ids
    (K, T, C) for LMs); attention_mask: (K, T, C) or None.
    orders: (K, E·T) document index of each episode, one row per run.
    precision: "fp32", or "bf16" (autocast, fp32 master weights; recorded in meta).
    engine: "auto" | "neox" | "vmap" (see the module docstring).
    eval_batch: documents per run per evaluation pass (default: fit EVAL_BUDGET).
    on_episode_end(k, runs_eval_loss_row): called after episode k's evaluation with
    the (K, T) losses, k = 0..E·T, in this process only (tests use it to simulate a
    kill).
    checkpoint: file written atomically after every episode; if it exists the runs
    resume from it and end with the same arrays as uninterrupted runs.
    checkpoint_every: seconds; write the checkpoint only after an episode that ends at
    least this long after the last write (0: every episode, as `train`). A paper-size
    model on a GPU trains an episode in less time than it takes to write its weights.
    keep_checkpoint: leave the final checkpoint for the caller to delete once the
    results are saved (a kill before that then resumes without training).
    overlap_eval: evaluate episode k's weights (a copy) in a second thread while
    episode k+1 trains ("neox" engine only). Default: on a CPU with ≥ 2 threads,
    where a batch-1 step of a small model gains nothing from a second thread
    (measured: slower) and evaluation is a third of the work; the torch thread count
    is halved between the two meanwhile (restored on return). Same arrays as without
    (each evaluation reads exactly the weights after its episode); a checkpoint may
    then hold the weights of an episode whose evaluation was still running, and a
    resume evaluates it first.
    """
    orders = _check_args(models, inputs, labels, orders, attention_mask, steps_per_doc,
                         optimizer, lr_schedule, precision, engine)
    K, n_docs, n_episodes = len(models), inputs.shape[1], orders.shape[1]
    why_not = neox_unsupported(models[0], loss_fn)
    if engine == "auto":
        engine = "neox" if why_not is None else "vmap"
    elif engine == "neox" and why_not is not None:
        raise ValueError(f"engine='neox' cannot train {why_not}; use engine='vmap'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision='bf16' needs a cpu or cuda device, got {device}")

    with torch.no_grad():
        names = [n for n, _ in models[0].named_parameters()]
        trainable = {n for n, p in models[0].named_parameters() if p.requires_grad}
        params = {}
        for n in names:
            stacked = torch.stack([dict(m.named_parameters())[n].detach() for m in models])
            params[n] = stacked.to(device).requires_grad_(n in trainable)
        buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models]).to(device)
                   for n, _ in models[0].named_buffers()}
    inputs, labels = inputs.to(device), labels.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    fp = _fingerprint(orders, steps_per_doc, optimizer, lr, lr_schedule, precision,
                      inputs, labels, attention_mask, params)

    if engine == "neox":
        net = _Neox(models[0], params)
        # rows of the input embedding a step does not touch: skipped where exact
        embed_name = "gpt_neox.embed_in.weight"
        sparse = optimizer in ("sgd", "adam_reset") and embed_name in trainable
    else:
        net = _Vmap(models[0], params, buffers, loss_fn)
        sparse = False
    dense = [p for n, p in params.items() if n in trainable
             and not (sparse and n == embed_name)]
    opt = _make_opt(optimizer, dense, lr)

    def autocast():  # a fresh context each time: two threads may be inside one
        return torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "bf16")

    def losses(x, y, m, embed=None):
        with autocast():
            if engine == "neox":
                K_, n = x.shape[:2]
                logits = net.logits(x, _mask4(m), embed)
                return _nll(logits, y.reshape(K_ * n, -1)).view(K_, n)
            return net.losses(x, y, m)

    cfg = getattr(models[0], "config", None)
    if eval_batch is None:
        if engine == "neox":  # no logits are kept: activations of ~12 (C, d) per doc
            per_doc = K * inputs.shape[2] * cfg.hidden_size * 4 * 12
        else:
            vocab = getattr(cfg, "vocab_size", None)
            per_doc = K * 2 * inputs.shape[2] * vocab * 4 if vocab and inputs.ndim == 3 else 0
        eval_batch = n_docs if per_doc == 0 else max(1, min(n_docs, EVAL_BUDGET // per_doc))
    block_bytes = 2**23 if device.type == "cpu" else 2**28  # a cache's worth of logits

    def evaluate(weights):
        """(K, T) losses of every document under `weights` (params or a copy)."""
        ev = copy.copy(net)
        ev.p = weights
        out = []
        with torch.no_grad(), autocast():
            for i in range(0, n_docs, eval_batch):
                x, y = inputs[:, i:i + eval_batch], labels[:, i:i + eval_batch]
                m = None if attention_mask is None else attention_mask[:, i:i + eval_batch]
                if engine == "neox":
                    out.append(ev.eval_nll(x, y, _mask4(m), block_bytes).float())
                else:
                    out.append(ev.losses(x, y, m).float())
        return torch.cat(out, dim=1).double().cpu().numpy()

    total_steps = n_episodes * steps_per_doc
    eval_loss = np.full((K, n_episodes + 1, n_docs), np.nan)
    train_loss = np.full((K, total_steps), np.nan)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    done, evaluated = 0, -1  # episodes trained; the last row of eval_loss filled
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("fingerprint") != fp:
            raise RuntimeError(f"checkpoint {ckpt} belongs to other runs; delete it")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["params"][n])
        if opt is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"].cpu())
        eval_loss = state["eval_loss"].numpy().copy()
        train_loss = state["train_loss"].numpy().copy()
        done = int(state["done"])
        evaluated = int(state.get("evaluated", done))

    if overlap_eval is None:
        overlap_eval = (engine == "neox" and device.type == "cpu"
                        and torch.get_num_threads() >= 2)
    elif overlap_eval and engine != "neox":  # functional_call is not thread-safe
        raise ValueError("overlap_eval=True needs the 'neox' engine; this call uses "
                         f"'{engine}'")
    threads = torch.get_num_threads()
    pool = None
    if overlap_eval:
        from concurrent.futures import ThreadPoolExecutor

        if engine == "neox":  # filled once here, not by two threads at once
            net.rope(inputs.shape[-1], device)
        torch.set_num_threads(max(1, threads // 2))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lockstep-eval")

    copy_of = {}  # the weights being evaluated: one buffer, reused (at most one
    # evaluation is in flight, and it has finished before the next copy is written)

    def submit(k):
        """Start evaluating the weights after episode k (row k of eval_loss)."""
        if pool is None:
            return k, evaluate(params)
        with torch.no_grad():
            for n, p in params.items():
                if n in copy_of:
                    copy_of[n].copy_(p)
                else:
                    copy_of[n] = p.detach().clone()
        return k, pool.submit(evaluate, copy_of)

    def finish(job):
        """Wait for a submitted evaluation and file its row; returns its episode."""
        k, row = job
        eval_loss[:, k] = row if pool is None else row.result()
        if on_episode_end is not None:
            on_episode_end(k, eval_loss[:, k])
        return k

    def save(k):
        nonlocal last_save
        _save_atomic({
            "fingerprint": fp,
            "params": {n: p.detach() for n, p in params.items()},
            # Adam-reset starts the next episode with a fresh optimizer: no state
            "optimizer": (None if opt is None or optimizer == "adam_reset"
                          else opt.state_dict()),
            "rng": torch.get_rng_state(),
            "eval_loss": torch.from_numpy(eval_loss),
            "train_loss": torch.from_numpy(train_loss),
            "done": k,
            "evaluated": evaluated,  # < k: row k is evaluated first on resume
        }, ckpt)
        last_save = time.perf_counter()

    t0 = last_save = time.perf_counter()
    bar = tqdm(total=n_episodes, initial=done, desc=f"{K} runs in lockstep",
               disable=not progress)
    runs_k = torch.arange(K, device=device)
    orders_t = torch.as_tensor(orders, device=device)

    def train_episode(k):
        """Episode k: M steps on each run's document orders[:, k-1]; fills train_loss."""
        nonlocal opt
        d = orders_t[:, k - 1]
        x, y = inputs[runs_k, d].unsqueeze(1), labels[runs_k, d].unsqueeze(1)
        m = None if attention_mask is None else attention_mask[runs_k, d].unsqueeze(1)
        if optimizer == "adam_reset":  # a fresh Adam for every run's next document
            opt = _make_opt("adam", dense, lr)
        embed, sub_opt = None, None
        if sparse:  # this episode's rows of each run's input embedding, as a leaf
            ids = x.reshape(K, -1)
            uniq = [torch.unique(ids[r], return_inverse=True) for r in range(K)]
            U = max(u.numel() for u, _ in uniq)
            rows = torch.zeros(K, U, dtype=torch.long, device=device)
            valid = torch.zeros(K, U, dtype=torch.bool, device=device)
            local = torch.empty_like(ids)
            for r, (u, inv) in enumerate(uniq):
                rows[r, :u.numel()], valid[r, :u.numel()], local[r] = u, True, inv
            table = params[embed_name]
            sub = table.detach()[runs_k[:, None], rows].clone().requires_grad_(True)
            embed = (sub, local.view_as(x))
            sub_opt = _make_opt("adam" if optimizer == "adam_reset" else "sgd", [sub], lr)
        step_losses = torch.empty(K, steps_per_doc, device=device)
        for j in range(steps_per_doc):
            step = (k - 1) * steps_per_doc + j
            lr_now = _lr_at(step, total_steps, lr, lr_schedule)
            for o in (opt, sub_opt):
                if o is not None:
                    for group in o.param_groups:
                        group["lr"] = lr_now
                    o.zero_grad(set_to_none=True)
            loss = losses(x, y, m, embed).squeeze(1).float()  # (K,)
            loss.sum().backward()  # run k's gradient is its own loss's gradient
            for o in (opt, sub_opt):
                if o is not None:
                    o.step()
            step_losses[:, j] = loss.detach()
        if sparse:  # write the trained rows back
            with torch.no_grad():
                table = params[embed_name]
                table[runs_k[:, None].expand_as(rows)[valid], rows[valid]] = sub.detach()[valid]
        train_loss[:, (k - 1) * steps_per_doc:k * steps_per_doc] = step_losses.cpu().numpy()

    try:
        job = submit(done) if evaluated < done else None
        if pool is None and job is not None:
            evaluated, job = finish(job), None
        for k in range(done + 1, n_episodes + 1):  # episode k trains orders[:, k-1]
            train_episode(k)
            if job is not None:  # episode k-1's evaluation ran while k trained
                evaluated, job = finish(job), None
            job = submit(k)
            if pool is None:
                evaluated, job = finish(job), None
            if ckpt is not None and k < n_episodes and (
                    time.perf_counter() - last_save >= checkpoint_every):
                save(k)
            bar.update(1)
        if job is not None:
            evaluated, job = finish(job), None
        if ckpt is not None and n_episodes > done:  # the last episode is always saved
            save(n_episodes)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)
    bar.close()
    wall = time.perf_counter() - t0
    if ckpt is not None and ckpt.exists() and not keep_checkpoint:
        ckpt.unlink()
    with torch.no_grad():  # the models hold their final weights, as after `train`
        for r, mdl in enumerate(models):
            for n, p in mdl.named_parameters():
                p.copy_(params[n][r].to(p.device))
    runs = []
    for r in range(K):
        meta = {"wall_s": wall / K, "lockstep_wall_s": wall, "lockstep": K,
                "lockstep_engine": engine, "precision": precision, "resumed_at": done,
                "overlap_eval": bool(overlap_eval),
                "device": str(device)}
        runs.append(Run(None, eval_loss[r], train_loss[r], orders[r], meta))
    return runs


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
        checkpoint_every=checkpoint_every, keep_checkpoint=keep_checkpoint)
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


def run_cached_many(configs, experiment: str, device="cpu", *, k: int = 16,
                    budget: int | None = None, progress=True) -> list[Run]:
    """`results.run_cached` for many configs: saved runs are loaded, the missing ones
    trained in lockstep groups of at most k (capped by memory) and saved exactly as
    `run_cached` saves them (same stems and keys; provenance notes "lockstep": K)."""
    from . import results

    configs = [c.validate() for c in configs]
    items = [(experiment, c, results.load_run(c, experiment) is not None) for c in configs]
    for exp, group in plan_groups(items, k, budget, device):
        _compute_group(exp, group, device, progress=progress)
    # a run another process was computing: run_cached waits for it, then loads it
    return [results.load_run(c, experiment) or results.run_cached(c, experiment, device)
            for c in configs]


def _try_lock(stack, path: Path) -> bool:
    """Take `results.run_cached`'s lock on one run without waiting (POSIX flock);
    False when another process holds it. Released when `stack` closes."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, as run_cached
        return True
    f = stack.enter_context(open(path, "a+"))
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    stack.callback(fcntl.flock, f, fcntl.LOCK_UN)
    return True


def _compute_group(exp, group, device="cpu", *, progress=True,
                   checkpoint_every=0.0) -> list:
    """Train one group in lockstep and save each run as `run_cached` would; returns
    the configs computed here. Each run's `run_cached` lock is held meanwhile: a run
    locked by another process, or saved meanwhile, is left out of the group. The
    group's checkpoint is deleted only once every run is saved and loads back."""
    import contextlib
    import warnings

    from . import results

    for c in group:  # before any folder is made or any weights load
        prepare_check(c, device)
    _, ckpt_dir = results.writable_folders(exp)
    with contextlib.ExitStack() as stack:
        mine = [c for c in group
                if _try_lock(stack, ckpt_dir / f"{results.run_stem(c)}.lock")
                and results.find_run(c, exp) is None]
        if not mine:
            return []
        ckpt = _checkpoint_path(exp, mine)
        runs = train_configs(mine, device, checkpoint=ckpt, progress=progress,
                             checkpoint_every=checkpoint_every, keep_checkpoint=True)
        for run in runs:
            results.save_run(run, exp)
        if all(results.load_run(c, exp) is not None for c in mine):
            ckpt.unlink(missing_ok=True)
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
