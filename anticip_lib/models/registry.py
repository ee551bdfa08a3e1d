"""The model registry: names, shapes and honest labels; argument checks (no weights).

`resolve` turns a model argument into (kind, what): a registry entry, a local checkpoint
folder or a Hub id "org/name". `describe` and `max_context` answer from the registry or
a config, never from weights.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig

from ..config import INITS
from .hub import from_hub


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "pythia" | "gguf" | "tiny" | "ours" (pre-trained here, pretrain.py)
    hub_id: str | None
    d_model: int
    n_layers: int
    n_heads: int
    max_context: int  # positions the model was trained for
    label: str  # honest human label for figures and provenance


def _pythia(size: str, d: int, L: int, h: int) -> ModelSpec:
    hub = f"EleutherAI/pythia-{size}"
    label = f"Pythia-{size.upper()} ({hub}, GPT-NeoX)"
    return ModelSpec(f"pythia-{size}", "pythia", hub, d, L, h, 2048, label)


MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    _pythia("14m", 128, 6, 4), _pythia("31m", 256, 6, 8),
    _pythia("70m", 512, 6, 8), _pythia("160m", 768, 12, 12),
    _pythia("410m", 1024, 24, 16), _pythia("1b", 2048, 16, 8),
    _pythia("1.4b", 2048, 24, 16), _pythia("2.8b", 2560, 32, 32),
    # deviation: no Pythia weights install offline, so two embedded GGUF models stand
    # in for pre-trained Pythia; their 4-bit weights are de-quantised to fp32, they are
    # not the original bf16 checkpoints, and SmolLM2 is an instruct model (ASSETS.md).
    ModelSpec("smollm2-135m", "gguf", None, 576, 30, 9, 8192,
              "SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to fp32), embedded"),
    ModelSpec("gemma3-270m", "gguf", None, 640, 18, 4, 32768,
              "Gemma-3-270m base (Q4_K_M GGUF de-quantised to fp32), embedded"),
    # deviation: Pythia's intermediate checkpoints (Fig. 16) do not install offline;
    # chapter 2 pre-trains this Pythia-14M shape itself (anticip_lib/pretrain.py).
    # The family pre-trained here under one recipe (chapter 1, Fig. 2(a)); non-embedding
    # parameters 100k, 448k, 1.19M (12× span).
    ModelSpec("news-xs", "ours", None, 64, 2, 2, 2048,
              "d=64, L=2 GPT-NeoX pre-trained here (bytes; 3.5k non-CNN news articles, "
              "2,000 steps of our recipe; 100k non-embedding parameters)"),
    ModelSpec("news-s", "ours", None, 96, 4, 3, 2048,
              "d=96, L=4 GPT-NeoX pre-trained here (bytes; 3.5k non-CNN news articles, "
              "2,000 steps of our recipe; 448k non-embedding parameters)"),
    ModelSpec("news-14m", "ours", None, 128, 6, 4, 2048,
              "Pythia-14M shape pre-trained here (bytes; 3.5k non-CNN news articles, "
              "2,000 steps of our recipe; 1.19M non-embedding parameters; "
              "not Pythia's weights)"),
    ModelSpec("news-tiny", "ours", None, 64, 2, 4, 2048,
              "tiny-gpt pre-trained here for 20 steps (smoke tests only)"),
    ModelSpec("tiny-gpt", "tiny", None, 64, 2, 4, 2048,
              "tiny-gpt (2-layer GPT-NeoX, width 64, random init, byte tokenizer; "
              "smoke tests / CI only, not a paper model)"),
]}

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def family_names(*families: str) -> list[str]:
    """Registry names whose family is one of `families`, in registry order."""
    return [n for n, s in MODELS.items() if s.family in families]


def resolve(name: str, init: str = "pretrained", revision: str = "main") -> tuple:
    """Validate arguments (no heavy work) and return (kind, spec | folder | hub id)."""
    if not isinstance(revision, str) or not revision:
        raise ValueError(f"revision must be a non-empty string, got {revision!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if name in MODELS:
        kind, what = "registry", MODELS[name]
    elif isinstance(name, str) and os.path.isdir(name):
        kind, what = "folder", Path(name).resolve()
    elif isinstance(name, str) and HUB_ID.match(name):
        kind, what = "hub", name
    else:
        raise ValueError(f"model must be a registry name ({', '.join(MODELS)}), an "
                         "existing checkpoint folder or a Hub id 'org/name'; "
                         f"got {name!r}")
    family = what.family if kind == "registry" else kind
    if init != "pretrained" and family not in ("pythia", "tiny"):
        raise ValueError(f"init={init!r} (random init) is defined only for pythia-* "
                         f"and tiny-gpt; {name!r} supports only init='pretrained'")
    if init == "pretrained" and family == "tiny":
        raise ValueError("init='pretrained' is impossible for tiny-gpt (it has no "
                         "pre-trained weights): use init='pythia' or init='normal'")
    if family == "ours":
        from ..pretrain import step_of
        step_of(name, revision)  # a checkpoint of the recipe, or ValueError
    elif revision != "main" and (init != "pretrained" or family not in ("pythia", "hub")):
        raise ValueError(f"revision={revision!r} applies only to pre-trained Hub "
                         "checkpoints (Pythia's own step-0 weights: init='pretrained', "
                         "revision='step0')")
    return kind, what


def describe(name: str, init: str = "pretrained", revision: str = "main",
             width: int = 0, depth: int = 0, heads: int = 0) -> str:
    """Honest label for figures and provenance; no weights are loaded. Non-zero width,
    depth, heads (a changed random-init shape) are named in the label."""
    kind, what = resolve(name, init, revision)
    changed = ", ".join(f"{k}={v}" for k, v in (("d", width), ("L", depth), ("h", heads))
                        if v)
    if kind == "folder":
        cfg = folder_config(what)
        return f"local checkpoint {what} ({cfg.get('model_type', 'unknown type')})"
    if kind == "hub":
        return f"{what} @ {revision}, pre-trained (Hub)"
    recipe = {"pythia": "Pythia recipe: small_init + wang_init",
              "normal": "isotropic N(0, 0.02²)"}
    if what.family == "pythia" and init == "pretrained":
        note = ", Pythia's own initial weights" if revision == "step0" else ""
        return f"{what.label} @ {revision}, pre-trained{note}"
    if what.family == "pythia":
        size = what.name.removeprefix("pythia-").upper()
        shape = f" with {changed}" if changed else ""
        return f"Pythia-{size} architecture{shape}, random init ({recipe[init]})"
    if what.family == "ours":
        return f"{what.label} @ {revision}"
    if what.family == "tiny":
        shape = f", {changed}" if changed else ""
        return f"{what.label}{shape}, init {recipe[init]}"
    return what.label


def folder_config(folder: Path) -> dict:
    """A checkpoint folder's config.json as a dict ({} when there is none)."""
    f = Path(folder) / "config.json"
    return json.loads(f.read_text()) if f.exists() else {}


def config_context(cfg: dict) -> int | None:
    """Max positions from a config dict (text_config first, for multimodal configs)."""
    cfg = {**cfg, **cfg.get("text_config", {})}
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        if cfg.get(key):
            return int(cfg[key])
    return None


def max_context(name: str) -> int:
    """Max positions of `name`: registry, a folder's config.json or the Hub config."""
    if name in MODELS:
        return MODELS[name].max_context
    kind, what = resolve(name)
    if kind == "folder":
        cfg = folder_config(what)
    else:
        cfg = from_hub(AutoConfig.from_pretrained, what, "main").to_dict()
    if (n := config_context(cfg)) is None:
        raise ValueError(f"model {name!r}: no max positions found in its config")
    return n
