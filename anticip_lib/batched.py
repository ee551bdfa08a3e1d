"""K models of one architecture as one batched computation (the engines of `trainer.train_many`).

The paper's protocol trains with batch size 1, so one run leaves most of a machine idle
(a GPU almost entirely). Here K runs' weights are stacked (K, …) and every training
step and every evaluation is one batched computation over the K runs. The runs never
mix: each step's loss is the sum of the K runs' losses, whose gradient with respect to
run k's weights is run k's own gradient, and SGD and Adam are elementwise, so one
optimizer over the stacked weights is K independent optimizers.

Two engines compute the K forward passes:
- "neox": a batched GPT-NeoX forward written here (`torch.baddbmm` over the stacked
  weights, one `scaled_dot_product_attention` over K·n sequences) for
  `GPTNeoXForCausalLM` models (every pythia-* and tiny-gpt shape) with `lm_loss`. It
  also skips the embedding rows a step does not touch where that is exact (SGD, and
  Adam reset every episode: untouched rows have zero gradient and zero state, so their
  update is exactly 0); kept Adam updates every row. Evaluation takes the
  log-sum-exp over blocks of the vocabulary, never writing the full logits.
- "vmap": any model and loss, through `torch.func.functional_call` + `vmap` over the
  stacked weights (slower: generic batching rules, no sparse embedding; HF models
  run their eager attention inside vmap, which has batching rules, instead of SDPA,
  which falls back to a per-run loop with a warning).
`Stacked` holds the stacked weights and gives the training loop what it needs.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from .losses import lm_loss

ENGINES = ("neox", "vmap")
EVAL_BUDGET = 2**30  # bytes of fp32 logits (+ their log-softmax) per evaluation pass


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
        cfg = getattr(self.skeleton, "config", None)
        self.eager = getattr(cfg, "_attn_implementation", None) == "sdpa"
        if self.eager:
            # SDPA has no batching rule on CPU: vmap would loop over the K runs (and
            # warn); eager attention is matmuls and a softmax, which batch. Eager
            # adds its 4-D mask to the scores: it is given as 0 / -inf below
            cfg._attn_implementation = "eager"
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
            if m4 is not None and self.eager:
                m4 = torch.zeros(m4.shape, device=m4.device).masked_fill_(
                    ~m4, torch.finfo(torch.float32).min)
            m = None if m4 is None else m4.view(K, n, 1, *m4.shape[-2:])
        dims = (0, 0, 0, 0, None if m is None else 0)
        return torch.func.vmap(self.one, in_dims=dims)(self.p, self.b, x, y, m)




# ---- K stacked runs, as the training loop sees them -------------------------------------


def pick_engine(model, loss_fn, engine: str) -> str:
    """"auto" → "neox" where it applies, else "vmap"; a named engine is checked."""
    why_not = neox_unsupported(model, loss_fn)
    if engine == "auto":
        return "neox" if why_not is None else "vmap"
    if engine == "neox" and why_not is not None:
        raise ValueError(f"engine='neox' cannot train {why_not}; use engine='vmap'")
    return engine


class Stacked:
    """K models' weights stacked (K, …) on `device`, and the batched forward over them.

    The loop calls `begin_episode(docs)` (each run's document of this episode), then
    `losses()` M times ((K,) training losses with grad), `end_episode()`; and
    `evaluate(weights)` for the (K, T) losses of every document.
    """

    embed_name = "gpt_neox.embed_in.weight"

    def __init__(self, models, inputs, labels, attention_mask, *, loss_fn, engine,
                 optimizer, device, eval_batch=None, autocast=None):
        self.K, self.n_docs = len(models), inputs.shape[1]
        self.engine, self.device = engine, device
        self.inputs, self.labels, self.mask = inputs, labels, attention_mask
        self.autocast = autocast
        with torch.no_grad():
            trainable = {n for n, p in models[0].named_parameters() if p.requires_grad}
            per_model = [dict(m.named_parameters()) for m in models]
            self.params = {n: torch.stack([pm[n].detach() for pm in per_model])
                           .to(device).requires_grad_(n in trainable)
                           for n in per_model[0]}
            buffers = [dict(m.named_buffers()) for m in models]
            self.buffers = {n: torch.stack([b[n] for b in buffers]).to(device)
                            for n in buffers[0]}
        if engine == "neox":
            self.net = _Neox(models[0], self.params)
            # rows of the input embedding a step does not touch: skipped where exact
            self.sparse = optimizer in ("sgd", "adam_reset") and self.embed_name in trainable
        else:
            self.net = _Vmap(models[0], self.params, self.buffers, loss_fn)
            self.sparse = False
        self.dense = [p for n, p in self.params.items() if n in trainable
                      and not (self.sparse and n == self.embed_name)]
        cfg = getattr(models[0], "config", None)
        if eval_batch is None:
            C = inputs.shape[2] if inputs.ndim >= 3 else 1
            if engine == "neox":  # no logits are kept: activations of ~12 (C, d) per doc
                per_doc = self.K * C * cfg.hidden_size * 4 * 12
            else:
                vocab = getattr(cfg, "vocab_size", None)
                per_doc = self.K * 2 * C * vocab * 4 if vocab and inputs.ndim == 3 else 0
            eval_batch = (self.n_docs if per_doc == 0
                          else max(1, min(self.n_docs, EVAL_BUDGET // per_doc)))
        self.eval_batch = eval_batch
        self.block_bytes = 2**23 if torch.device(device).type == "cpu" else 2**28
        self.runs = torch.arange(self.K, device=device)
        self._copy = {}

    # -- training ----------------------------------------------------------------------

    def begin_episode(self, docs) -> list:
        """Set up the episode; returns the extra tensors it trains (the embedding rows
        of a sparse step), which need an optimizer of their own."""
        d = torch.as_tensor(docs, device=self.device)
        K, runs = self.K, self.runs
        self.x = self.inputs[runs, d].unsqueeze(1)
        self.y = self.labels[runs, d].unsqueeze(1)
        self.m = None if self.mask is None else self.mask[runs, d].unsqueeze(1)
        self.m4 = _mask4(self.m) if self.engine == "neox" else None
        self.embed = None
        if not self.sparse:
            return []
        ids = self.x.reshape(K, -1)  # this episode's rows of each run's embedding
        uniq = [torch.unique(ids[r], return_inverse=True) for r in range(K)]
        U = max(u.numel() for u, _ in uniq)
        rows = torch.zeros(K, U, dtype=torch.long, device=self.device)
        valid = torch.zeros(K, U, dtype=torch.bool, device=self.device)
        local = torch.empty_like(ids)
        for r, (u, inv) in enumerate(uniq):
            rows[r, :u.numel()], valid[r, :u.numel()], local[r] = u, True, inv
        table = self.params[self.embed_name]
        sub = table.detach()[runs[:, None], rows].clone().requires_grad_(True)
        self.embed = (sub, local.view_as(self.x))
        self._rows = (rows, valid)
        return [sub]

    def losses(self) -> torch.Tensor:
        """(K,) training losses of this episode's documents, with grad."""
        if self.engine == "neox":
            logits = self.net.logits(self.x, self.m4, self.embed)
            return _nll(logits, self.y.reshape(self.K, -1)).float()
        return self.net.losses(self.x, self.y, self.m).squeeze(1).float()

    def end_episode(self) -> None:
        if self.embed is not None:  # write the trained rows back
            rows, valid = self._rows
            with torch.no_grad():
                table = self.params[self.embed_name]
                sub = self.embed[0].detach()
                table[self.runs[:, None].expand_as(rows)[valid], rows[valid]] = sub[valid]
            self.embed = None

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, weights=None) -> np.ndarray:
        """(K, T) losses of every document under `weights` (the params, or a copy)."""
        ev = copy.copy(self.net)
        ev.p = self.params if weights is None else weights
        out = []
        with torch.no_grad(), self.autocast():
            for i in range(0, self.n_docs, self.eval_batch):
                sl = slice(i, i + self.eval_batch)
                x, y = self.inputs[:, sl], self.labels[:, sl]
                m = None if self.mask is None else self.mask[:, sl]
                if self.engine == "neox":
                    out.append(ev.eval_nll(x, y, _mask4(m), self.block_bytes).float())
                else:
                    out.append(ev.losses(x, y, m).float())
        return torch.cat(out, dim=1).double().cpu().numpy()

    def copy_weights(self) -> dict:
        """The current weights, copied into one reused buffer (for an evaluation that
        runs while training goes on; at most one is in flight)."""
        with torch.no_grad():
            for n, p in self.params.items():
                if n in self._copy:
                    self._copy[n].copy_(p)
                else:
                    self._copy[n] = p.detach().clone()
        return self._copy

    # -- one run's weights ------------------------------------------------------------------

    def weights_of(self, r: int, source=None) -> dict:
        """Run r's weights (copies), from the params or from `source` (a copy)."""
        source = self.params if source is None else source
        return {n: p[r].detach().clone() for n, p in source.items()}

    def current_weights(self, r: int) -> dict:
        """Run r's weights now (copies), mid-episode included: the embedding rows a
        sparse step trains live in their own tensor until the episode ends."""
        w = self.weights_of(r)
        if self.embed is not None:
            rows, valid = self._rows
            w[self.embed_name][rows[r][valid[r]]] = self.embed[0].detach()[r][valid[r]]
        return w

    def zero_grads(self, r: int) -> None:
        """Drop run r's gradient (a diverged run is not trained)."""
        tensors = list(self.params.values()) + ([self.embed[0]] if self.embed else [])
        with torch.no_grad():
            for p in tensors:
                if p.grad is not None:
                    p.grad[r].zero_()

    def set_weights(self, r: int, weights: dict) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                p[r].copy_(weights[n])

    def to_models(self, models, runs=None) -> None:
        """Copy run r's weights into models[r] (for every r in `runs`, default all)."""
        with torch.no_grad():
            for r in range(self.K) if runs is None else runs:
                for n, p in models[r].named_parameters():
                    p.copy_(self.params[n][r].to(p.device))
