"""Models: a name → (model, tokenizer) registry (paper §2 "Models"; SPEC §2.2–2.3).

The paper fine-tunes Pythia (GPT-NeoX) checkpoints from the Hugging Face Hub, either
pre-trained or randomly initialised with Pythia's recipe. Offline we also have two
embedded GGUF models (SmolLM2-135M-Instruct, Gemma-3-270m; ASSETS.md B1–B2), which are
de-quantised once into an ordinary checkpoint folder `paths.cache_dir()/models/<name>`,
and `tiny-gpt` for smoke tests. Any other name is a local checkpoint folder or a Hub id
("org/name"). Every model comes back in fp32, on CPU, in eval mode.

Modules, in the order they build on each other:
- `hub`: loading from the local Hugging Face cache or the Hub, failing fast;
- `registry`: `ModelSpec`, `MODELS`, argument checks (`resolve`), `describe`,
  `max_context`;
- `random_init`: `shape`, `pythia_config`, `init_normal_`, `init_pythia_`,
  `random_model`;
- `tokenizer`: the byte tokenizer of tiny-gpt and the fixes every tokenizer gets;
- `gguf_conversion`: `convert_gguf`;
- `load`: the entry points `load_model` and `load_tokenizer`.
"""

from .. import paths
from .gguf_conversion import convert_gguf
from .load import load_model, load_tokenizer
from .random_init import (SMALL_INIT, WANG_INIT, init_normal_, init_pythia_,
                          pythia_config, random_model, shape)
from .registry import MODELS, ModelSpec, describe, max_context
from .tokenizer import EOT

__all__ = [
    "EOT", "MODELS", "SMALL_INIT", "WANG_INIT", "ModelSpec", "convert_gguf", "describe",
    "init_normal_", "init_pythia_", "load_model", "load_tokenizer", "max_context",
    "pythia_config", "random_model", "shape",
]


def __getattr__(attr):  # CACHE_DIR: an alias of paths.cache_dir(), read at access time
    if attr == "CACHE_DIR":
        return paths.cache_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
