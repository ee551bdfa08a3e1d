"""Image GPT of chapter 5 (Fig. 7a): colour clusters, pixel tokens, and the small Image GPT pre-trained here."""

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import files, paths, trainer
from .config import IGPT_HERE, INITS, IGPTRecipe
from .images import open_rgb, foolbox_dir, igpt_images
from .provenance import provenance, sha256

# ---- Image GPT -----------------------------------------------------------------------


def kmeans(points: torch.Tensor, k: int, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """k centres of points (N, D): Lloyd's algorithm from k distinct random points.

    An empty cluster keeps its previous centre. Deterministic for a given seed.
    """
    g = torch.Generator().manual_seed(seed)
    pts = points.float()
    uniq = torch.unique(pts, dim=0)
    if len(uniq) < k:
        raise ValueError(f"k-means needs at least k={k} distinct points, got {len(uniq)}")
    centres = uniq[torch.randperm(len(uniq), generator=g)[:k]].clone()
    for _ in range(iters):
        assign = torch.cdist(pts, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, pts)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def igpt_processor(clusters, image_size: int):
    """transformers' ImageGPT image processor with the given colour clusters (in [-1, 1])."""
    from transformers import ImageGPTImageProcessor

    return ImageGPTImageProcessor(clusters=torch.as_tensor(clusters, dtype=torch.float32),
                                  size={"height": image_size, "width": image_size})


def tokenize_images(processor, images, image_size: int) -> torch.Tensor:
    """(T, image_size²) colour-cluster ids of uint8 images (3, H, W): resized, quantised."""
    out = processor(list(images), size={"height": image_size, "width": image_size},
                    return_tensors="pt")
    return out["input_ids"].long()


def pretraining_photos() -> list[torch.Tensor]:
    """The embedded photos the igpt-here stand-ins pre-train on (never the CIFAR-10 ones
    they are fine-tuned on): foolbox's 20 ImageNet and 20 CIFAR-100 images and
    matplotlib's sample photo of Grace Hopper; uint8 (3, H, W)."""
    import matplotlib
    from torchvision.transforms.functional import pil_to_tensor

    files = sorted(foolbox_dir().glob("imagenet_*.jpg")) + sorted(
        foolbox_dir().glob("cifar100_*.png"))
    files.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    return [pil_to_tensor(open_rgb(f)) for f in files]


def _crops(photos, n: int, size: int, g: torch.Generator) -> list[torch.Tensor]:
    """n random square-ish crops (2–100 % of a photo's area), flipped at random, resized."""
    from torchvision.transforms.v2 import functional as TF

    out = []
    for _ in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=g))]
        _, h, w = img.shape
        area = float(torch.empty(1).uniform_(0.02, 1.0, generator=g)) * h * w
        side = int(min(h, w, max(4, round(math.sqrt(area)))))
        top = int(torch.randint(h - side + 1, (1,), generator=g))
        left = int(torch.randint(w - side + 1, (1,), generator=g))
        crop = TF.resized_crop(img, top, left, side, side, [size, size], antialias=True)
        if float(torch.rand(1, generator=g)) < 0.5:
            crop = TF.horizontal_flip(crop)
        out.append(crop)
    return out


def _recipe_key(name: str) -> str:
    blob = json.dumps({"name": name, **asdict(IGPT_HERE[name])}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def igpt_here_dir(name: str) -> Path:
    return paths.cache_dir() / "igpt_here" / f"{name}__{_recipe_key(name)}"


def igpt_here_clusters(name: str) -> torch.Tensor:
    """The recipe's colour clusters: k-means on pixels of 2,000 pre-training crops."""
    r, cached = IGPT_HERE[name], igpt_here_dir(name) / "clusters.pt"
    if cached.exists():
        return torch.load(cached, weights_only=True)
    g = torch.Generator().manual_seed(r.seed + 1)
    crops = torch.stack(_crops(pretraining_photos(), r.cluster_crops, r.image_size, g))
    pix = crops.permute(0, 2, 3, 1).reshape(-1, 3).float() / 127.5 - 1  # as the processor
    sub = pix[torch.randperm(len(pix), generator=g)[:100_000]]
    clusters = kmeans(sub, r.n_clusters, seed=r.seed)
    cached.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(cached, lambda f: torch.save(clusters, f), what="cache file")
    return clusters


def _igpt_config(r: IGPTRecipe, n_clusters: int):
    from transformers import ImageGPTConfig

    return ImageGPTConfig(vocab_size=n_clusters + 1, n_positions=r.image_size**2,
                          n_embd=r.n_embd, n_layer=r.n_layer, n_head=r.n_head,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def pretrain_igpt(name: str, experiment: str = "05_vision", progress: bool = True) -> Path:
    """Pre-train (once) the igpt-here model `name`; return its save_pretrained folder.

    Data: random crops of `pretraining_photos()`, resized to the recipe's size and
    quantised to its clusters; next-token loss. The record (recipe, data, steps, time,
    loss curve, loss on the 20 CIFAR-10 photos before and after) goes to
    `results_dir()/<experiment>/igpt_pretrain/`; the weights stay in the cache.
    """
    from tqdm.auto import tqdm
    from transformers import ImageGPTForCausalImageModeling

    r, folder = IGPT_HERE[name], igpt_here_dir(name)
    record = _pretrain_record_path(name, experiment)
    if (folder / "model.safetensors").exists() and record.with_suffix(".json").exists():
        return folder
    t0 = time.perf_counter()
    clusters = igpt_here_clusters(name)
    proc = igpt_processor(clusters, r.image_size)
    torch.manual_seed(r.seed)
    model = ImageGPTForCausalImageModeling(_igpt_config(r, len(clusters)))
    held_imgs, _ = igpt_images("foolbox-cifar10", 20, seed=0)
    held = tokenize_images(proc, held_imgs, r.image_size)
    held_before = float(trainer.evaluate(model, held, held).mean())
    photos, g = pretraining_photos(), torch.Generator().manual_seed(r.seed)
    opt = torch.optim.Adam(model.parameters(), lr=r.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / r.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * s / r.steps)))
    losses = np.zeros(r.steps)
    model.train()
    for step in tqdm(range(r.steps), desc="pre-training", disable=not progress):
        ids = tokenize_images(proc, _crops(photos, r.batch, r.image_size, g), r.image_size)
        loss = trainer.lm_loss(model, ids, ids).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses[step] = loss.item()
    held_after = float(trainer.evaluate(model, held, held).mean())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    weights_sha = sha256(folder / "model.safetensors")
    tail = max(1, r.steps // 20)
    meta = {
        "model": name, "recipe": asdict(r), "recipe_key": _recipe_key(name),
        "data": "random crops (2–100 % of the area, flipped at random) of foolbox's 20 "
                "ImageNet and 20 CIFAR-100 images and matplotlib's grace_hopper.jpg, "
                f"resized to {r.image_size}×{r.image_size}",
        "clusters": f"k-means (k={len(clusters)}) on up to 100,000 pixels of "
                    f"{r.cluster_crops} crops",
        "images_seen": r.steps * r.batch, "wall_s": time.perf_counter() - t0,
        "final_loss": float(losses[-tail:].mean()), "first_loss": float(losses[0]),
        "cifar10_loss_before": held_before, "cifar10_loss_after": held_after,
        "n_params": sum(p.numel() for p in model.parameters()),
        "weights_sha256": weights_sha, **provenance(),
    }
    record.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(record.with_suffix(".npz"),
                       lambda f: np.savez_compressed(f, train_loss=losses), suffix=".npz",
                       what="pre-training record")
    files.write_text(record.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True),
                     what="pre-training record")
    return folder


def _pretrain_record_path(name: str, experiment: str) -> Path:
    return paths.results_dir() / experiment / "igpt_pretrain" / f"{name}__{_recipe_key(name)}"


def pretrain_record(name: str, experiment: str = "05_vision") -> dict | None:
    """The saved pre-training record of an igpt-here model (with its loss curve), or None."""
    p = _pretrain_record_path(name, experiment)
    if not p.with_suffix(".json").exists():
        return None
    meta = json.loads(p.with_suffix(".json").read_text())
    with np.load(p.with_suffix(".npz")) as z:
        meta["train_loss"] = z["train_loss"]
    return meta


def load_igpt(name: str, init: str = "pretrained", seed: int = 0,
              experiment: str = "05_vision", progress: bool = True):
    """(model, processor, label) for causal image modelling, dropout off (App. A.2).

    name: an igpt-here stand-in (pre-trained here on first use), a Hub id (paper:
    "openai/imagegpt-small", "-medium") or a folder saved with `save_pretrained`
    holding the model and its image processor (with the colour clusters).
    init="random": the same architecture and clusters, seeded.
    """
    from transformers import (
        ImageGPTConfig,
        ImageGPTForCausalImageModeling,
        ImageGPTImageProcessor,
    )

    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if name in IGPT_HERE:
        r = IGPT_HERE[name]
        if init == "pretrained":
            folder = pretrain_igpt(name, experiment, progress)
            proc = ImageGPTImageProcessor.from_pretrained(folder)
            model = ImageGPTForCausalImageModeling.from_pretrained(folder, **no_dropout)
            return model, proc, f"{name} (Image GPT, {r.n_layer}×{r.n_embd}, pre-trained here)"
        clusters = igpt_here_clusters(name)
        torch.manual_seed(seed)
        model = ImageGPTForCausalImageModeling(_igpt_config(r, len(clusters)))
        return model, igpt_processor(clusters, r.image_size), f"{name} (random init)"
    if not Path(name).is_dir() and paths.hub_offline():
        raise FileNotFoundError(
            f"model {name!r} is not a folder and the Hub is offline: pass a folder saved "
            "with save_pretrained (model and image processor), or unset HF_HUB_OFFLINE")
    try:
        proc = ImageGPTImageProcessor.from_pretrained(name)
        if init == "pretrained":
            model = ImageGPTForCausalImageModeling.from_pretrained(name, **no_dropout)
        else:
            cfg = ImageGPTConfig.from_pretrained(name, **no_dropout)
            torch.manual_seed(seed)
            model = ImageGPTForCausalImageModeling(cfg)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load Image GPT {name!r} ({err}). Pass a Hub id with internet "
            "(openai/imagegpt-small) or a save_pretrained folder.") from err
    return model, proc, f"{name} ({'pre-trained' if init == 'pretrained' else 'random init'})"
