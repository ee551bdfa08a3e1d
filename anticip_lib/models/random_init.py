"""Random initialisation of a pythia-* / tiny-gpt shape (SPEC §2.3, route 2; App. B.4)."""

import torch
from torch import nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from .registry import MODELS, family_names

# parameter-name keys of the Pythia recipe; the output layer is embed_out in
# transformers 4.x (the official code) and lm_head in 5.x
SMALL_INIT = ("query_key_value", "dense_h_to_4h", "embed_in", "embed_out", "lm_head")
WANG_INIT = ("attention.dense", "dense_4h_to_h")


def shape(name: str, width: int = 0, depth: int = 0, heads: int = 0) -> tuple:
    """(d, L, h) of a pythia-* / tiny-gpt entry, with any non-zero override applied.

    Raises ValueError naming the argument: unknown shape, or a width that the number
    of heads does not divide, or a head too narrow for the rotary part (¼ of it, even).
    """
    spec = MODELS.get(name)
    if spec is None or spec.family not in ("pythia", "tiny"):
        names = ", ".join(family_names("pythia", "tiny"))
        raise ValueError(f"model must be one of {names} for a random-init shape; "
                         f"got {name!r}")
    d, L, h = width or spec.d_model, depth or spec.n_layers, heads or spec.n_heads
    if d % h or (d // h) < 8:
        raise ValueError(f"heads={h} must divide width={d} into heads of at least 8 "
                         "dimensions (Pythia rotates a quarter of each head)")
    return d, L, h


def pythia_config(name: str, vocab_size: int | None = None, *, width: int = 0,
                  depth: int = 0, heads: int = 0) -> GPTNeoXConfig:
    """GPT-NeoX config with the shape of a pythia-* (or tiny-gpt) registry entry, with
    width d, depth L and heads h overridden where non-zero (FFN stays 4d)."""
    d, L, h = shape(name, width, depth, heads)
    spec = MODELS[name]
    # deviation: the official width sweep (train_interleave_scratch.py) keeps the FFN
    # at Pythia-1B's 8192 whatever the width; here it stays 4d, a Pythia shape.
    rope = dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25)
    return GPTNeoXConfig(
        vocab_size=vocab_size or (50304 if spec.family == "pythia" else 257),
        hidden_size=d, num_hidden_layers=L,
        num_attention_heads=h, intermediate_size=4 * d, hidden_act="gelu",
        max_position_embeddings=spec.max_context, rope_parameters=rope,
        use_parallel_residual=True, tie_word_embeddings=False, attention_bias=True,
        attention_dropout=0.0, hidden_dropout=0.0, layer_norm_eps=1e-5,
        initializer_range=0.02, bos_token_id=0, eos_token_id=0)


@torch.no_grad()
def init_normal_(model: nn.Module, std: float = 0.02) -> None:
    """Linear/Embedding weights ~ N(0, std²), biases 0, LayerNorm 1 and 0 (App. B.4)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.normal_(0.0, std)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def init_pythia_(model: nn.Module, d_model: int, n_layers: int) -> None:
    """Pythia recipe: N(0, 0.02²), then small_init √(2/(5d)) and wang_init 2/(L·√d)."""
    init_normal_(model, 0.02)
    # deviation: d and L are this model's own; the official train_interleave.py
    # hard-codes d=2048, L=16 (right only for Pythia-1B). We also redraw with the target
    # std instead of rescaling the N(0, 0.02²) draw: same distribution, other numbers.
    small, wang = (2 / (5 * d_model)) ** 0.5, 2 / (n_layers * d_model ** 0.5)
    for pname, p in model.named_parameters():
        if "norm" in pname or "bias" in pname:
            continue
        if any(k in pname for k in SMALL_INIT):
            p.normal_(0.0, small)
        elif any(k in pname for k in WANG_INIT):
            p.normal_(0.0, wang)


def random_model(name: str, vocab_size: int | None = None, *, init: str = "pythia",
                 seed: int = 0, width: int = 0, depth: int = 0,
                 heads: int = 0) -> GPTNeoXForCausalLM:
    """A randomly initialised pythia-* / tiny-gpt shape (width, depth, heads overridden
    where non-zero): Pythia's recipe with the shape's own width and depth, or isotropic
    N(0, 0.02²) for init="normal". The draw uses its own generator state (`seed`) and
    leaves the global one untouched."""
    if init not in ("pythia", "normal"):
        raise ValueError(f"init must be 'pythia' or 'normal' for a random model; got {init!r}")
    cfg = pythia_config(name, vocab_size=vocab_size, width=width, depth=depth,
                        heads=heads)  # also rejects non-Pythia names
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(cfg)
        if init == "pythia":
            init_pythia_(model, cfg.hidden_size, cfg.num_hidden_layers)
        else:
            init_normal_(model, 0.02)
    return model
