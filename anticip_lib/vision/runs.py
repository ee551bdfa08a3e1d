"""One vision run: build, train, save and load it (the results cache of chapter 5)."""

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import orders, paths, trainer
from ..run import Run
from .classifiers import (build_classifier, classification_loss, lite_weights_path,
                          top1)
from .config import IGPT_HERE, LITE, VISION_RESULTS_VERSION, VisionConfig
from .igpt import load_igpt, pretrain_record, tokenize_images
from .images import check_images, classification_images, igpt_images
from .provenance import provenance

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


def _stem(cfg: VisionConfig, experiment: str) -> Path:
    return paths.results_dir() / experiment / cfg.stem()


def save_run(run, experiment: str) -> Path:
    """Write the run's .npz, then its .json (whose presence marks completion), through
    the one results store (`results.write_files`)."""
    from ..results import write_files

    stem = _stem(run.config, experiment)
    stem.parent.mkdir(parents=True, exist_ok=True)
    def meta():  # after the npz is written, as for language runs
        return {"config": run.config.to_dict(), "key": run.config.key_dict(),
                "results_version": VISION_RESULTS_VERSION, **provenance(), **run.meta,
                "diverged": bool(not np.isfinite(run.eval_loss).all())}

    return write_files(stem, dict(eval_loss=run.eval_loss, train_loss=run.train_loss,
                                  order=run.order), meta)


def load_run(cfg: VisionConfig, experiment: str):
    """The saved run for `cfg`, or None when missing or failing a check (with a warning)."""
    from ..results import read_files

    def check(meta):
        problems = []
        if meta.get("results_version") != VISION_RESULTS_VERSION:
            problems.append("results version")
        if meta.get("key") != json.loads(json.dumps(cfg.key_dict())):
            problems.append("config")
        return problems

    got = read_files(_stem(cfg, experiment), check, (cfg.n_docs * cfg.n_epochs, cfg.n_docs))
    if got is None:
        return None
    arr, meta = got
    return Run(cfg, arr["eval_loss"], arr["train_loss"], arr["order"], meta)


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
    from ..results import compute_once, result_bytes

    cfg.validate()
    run = load_run(cfg, experiment)
    if run is not None:
        return run
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_inputs(cfg)  # before any folder is made or any weights load
    n_ep = cfg.n_docs * cfg.n_epochs
    return compute_once(
        experiment, cfg.stem(), find=lambda: find_run(cfg, experiment),
        need_bytes=result_bytes(n_ep, cfg.n_docs, n_ep * cfg.steps_per_doc),
        train=lambda ckpt: train_vision(cfg, device, experiment=experiment,
                                        progress=progress, checkpoint=ckpt),
        save=lambda run: save_run(run, experiment),
        load=lambda: load_run(cfg, experiment))
