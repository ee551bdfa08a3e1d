"""The entry points: `load_model` → (model, tokenizer) and `load_tokenizer`."""

import os

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPTNeoXForCausalLM,
                          PreTrainedModel, PreTrainedTokenizerBase)

from .gguf_conversion import convert_gguf
from .hub import from_hub
from .random_init import random_model, shape
from .registry import (HUB_ID, MODELS, config_context, folder_config, max_context,
                       resolve)
from .tokenizer import byte_tokenizer, fix_tokenizer


def load_tokenizer(name: str, revision: str = "main") -> PreTrainedTokenizerBase:
    """The tokenizer of a registry name, checkpoint folder or Hub id (pad = eos when
    it has none, a finite model_max_length)."""
    spec = MODELS.get(name)
    if spec is not None and spec.family in ("tiny", "ours"):
        return byte_tokenizer(spec.max_context)
    if spec is not None and spec.family == "pythia":  # SPEC §2.2: model_max_length=2048
        tok = from_hub(AutoTokenizer.from_pretrained, spec.hub_id, revision,
                       model_max_length=2048)
        return fix_tokenizer(tok, 2048)
    if spec is not None:  # embedded GGUF, converted once
        tok = AutoTokenizer.from_pretrained(convert_gguf(name))
        return fix_tokenizer(tok, spec.max_context)
    kind, what = resolve(name)
    if kind == "hub":
        tok = from_hub(AutoTokenizer.from_pretrained, what, revision)
        return fix_tokenizer(tok, max_context(name))
    tok = AutoTokenizer.from_pretrained(what)
    return fix_tokenizer(tok, config_context(folder_config(what)))


def _check_tokenizer_arg(tokenizer, init: str) -> None:
    if tokenizer == "auto":
        return
    if init == "pretrained":
        raise ValueError(f"tokenizer={tokenizer!r}: a pre-trained model keeps its "
                         "own tokenizer; pass tokenizer='auto'")
    ok = isinstance(tokenizer, str) and (
        tokenizer in MODELS or os.path.isdir(tokenizer) or HUB_ID.match(tokenizer))
    if not ok:
        raise ValueError("tokenizer must be 'auto', a registry name, a folder or a "
                         f"Hub id; got {tokenizer!r}")


def load_model(name: str, *, init: str = "pretrained", revision: str = "main",
               seed: int = 0, tokenizer: str = "auto", width: int = 0, depth: int = 0,
               heads: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a registry name, folder or Hub id; fp32, CPU, eval.

    `init` = "pretrained" loads the weights; "pythia" / "normal" build a pythia-* or
    tiny-gpt shape with random weights drawn from `seed` (the global RNG is left
    alone), with the vocabulary of `tokenizer` ("auto": the model's own); `width`,
    `depth`, `heads` (0: the shape's own) change such a shape (Figs. 3, 14).
    """
    kind, what = resolve(name, init, revision)
    _check_tokenizer_arg(tokenizer, init)
    arch = dict(width=width, depth=depth, heads=heads)
    if any(arch.values()):
        if init == "pretrained":
            raise ValueError("width, depth and heads apply only to random-init shapes "
                             "(init='pythia' or 'normal')")
        shape(name, **arch)  # checked before the tokenizer loads
    if init != "pretrained":  # random init of a pythia-* / tiny-gpt shape
        tok = load_tokenizer(name if tokenizer == "auto" else tokenizer)
        model = random_model(name, len(tok), init=init, seed=seed, **arch)
        # deviation: vocab = len(tokenizer) from the start; the official code builds
        # 50,304 rows, then truncates them with resize_token_embeddings (kept rows have
        # the same distribution, but the random numbers differ).
        model.config.eos_token_id = model.config.bos_token_id = tok.eos_token_id
        model.config.pad_token_id = tok.pad_token_id
    elif kind == "registry" and what.family == "pythia":  # SPEC §2.2–2.3
        tok = load_tokenizer(name, revision)
        model = from_hub(GPTNeoXForCausalLM.from_pretrained, what.hub_id, revision,
                         dtype=torch.float32)
        model.resize_token_embeddings(len(tok))  # 50,304 rows → len(tok), as official
    elif kind == "hub":
        tok = from_hub(AutoTokenizer.from_pretrained, what, revision)
        model = from_hub(AutoModelForCausalLM.from_pretrained, what, revision,
                         dtype=torch.float32)
    elif kind == "registry" and what.family == "ours":  # pre-trained here: committed
        # or cached weights; a missing checkpoint fails naming the command (never
        # pre-trains silently)
        from ..pretrain import checkpoint
        tok = load_tokenizer(name)
        model = GPTNeoXForCausalLM.from_pretrained(checkpoint(name, revision),
                                                   dtype=torch.float32)
    else:  # embedded GGUF (converted once) or a local checkpoint folder
        folder = convert_gguf(name) if kind == "registry" else what
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    n_ctx = getattr(model.config, "max_position_embeddings", None)
    return model.float().to("cpu").eval(), fix_tokenizer(tok, n_ctx)
