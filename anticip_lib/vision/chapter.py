"""Chapter 5's presets, statistics, tables and widgets."""

from dataclasses import dataclass, replace

import numpy as np

from .. import metrics, stats, verdicts
from .config import IGPT_HERE, ORDERS, VisionConfig
from .runs import check_inputs, load_run

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


NOT_WHY = "no forgetting to recover from"
NOT_TESTED = f"not tested ({NOT_WHY})"
# Chapter 5's claims (issue 17: the book's one verdict rule, `verdicts.judge`), each on
# the contrast cyclic − shuffled RS(E−1) paired by seed, margin 0.05 RS (the book's);
# the paper's are figure-only (no magnitude). "weaker": the vision contrast minus the
# language model's (chapter 1's), two unpaired groups (Welch), the paper predicting it
# negative. RECOVERY judges any other setting (the random-init controls, every epoch).
CLAIMS = {
    "7a": verdicts.Claim("Fig. 7(a)", "Image GPT recovers before an image returns "
                         "(causal image modelling, CIFAR-10)", "cyclic − shuffled RS(E−1)",
                         margin=0.05),
    "7b": verdicts.Claim("Fig. 7(b)", "pre-trained classifiers (VGG-19, ViT) recover before "
                         "a batch returns (ImageNet)", "cyclic − shuffled RS(E−1)",
                         margin=0.05),
    "weaker": verdicts.Claim("§1", "the effect is weaker in vision than in language "
                             "models", "vision minus language model, cyclic − shuffled "
                             "RS(E−1) (unpaired)", direction=-1, margin=0.05),
}
RECOVERY = verdicts.Claim("—", "recovery in this setting", "cyclic − shuffled RS(n)",
                          margin=0.05)


def compare_orders(runs_by_order: dict, claim: verdicts.Claim = RECOVERY) -> dict:
    """RS(n) per epoch for cyclic and shuffled runs (paired by seed: same order in both
    lists), the t-interval of RS_cyclic − RS_shuffled per epoch, and the verdict.

    The verdict is the book's one rule (`verdicts.judge`, as every chapter) on `claim`
    with the last epoch's per-seed contrasts; *not tested* (`verdicts.not_tested`) when
    every cyclic run's RS at that epoch is degenerate (`metrics.recovery_is_degenerate`:
    less than 0.05 nats forgotten, or a loss ending below its post-training value),
    i.e. there was nothing to recover from. "judgement" is the `verdicts.Judgement`,
    "verdict" its word (or 'not tested (why)').
    """
    cyc, shu = rs_by_epoch(runs_by_order["cyclic"]), rs_by_epoch(runs_by_order["shuffled"])
    deg = {o: degenerate_by_epoch(rr) for o, rr in runs_by_order.items()}
    diffs = [stats.paired_interval(cyc[:, j], shu[:, j]) for j in range(cyc.shape[1])]
    j = (verdicts.not_tested(claim, NOT_WHY) if deg["cyclic"][:, -1].all()
         else verdicts.judge(claim, cyc[:, -1] - shu[:, -1]))
    verdict = j.text() if j.word == "not tested" else j.word
    div = {o: sum(not np.isfinite(r.eval_loss).all() for r in rr)
           for o, rr in runs_by_order.items()}
    return {"cyclic": cyc, "shuffled": shu, "diff": diffs, "verdict": verdict,
            "judgement": j, "epoch": cyc.shape[1], "diverged": div, "degenerate": deg,
            "n_seeds": len(cyc)}


def weaker_judgement(vis: dict, llm: dict) -> verdicts.Judgement:
    """Is the vision effect weaker than the language model's (paper §1)? `CLAIMS
    ["weaker"]` judged by `verdicts.judge_unpaired` on the last epoch's per-seed
    contrasts RS_cyclic − RS_shuffled of each (`compare_orders` results): vision minus
    language, two groups of different models and seeds (Welch), the paper predicting
    a negative difference."""
    per_seed = lambda c: c["cyclic"][:, -1] - c["shuffled"][:, -1]  # noqa: E731
    return verdicts.judge_unpaired(CLAIMS["weaker"], per_seed(vis), per_seed(llm))


def weaker_verdict(vis: dict, llm: dict) -> str:
    """The word of `weaker_judgement` (a word of `verdicts.VOCABULARY`)."""
    return weaker_judgement(vis, llm).word


def rs_table(comparisons: dict):
    """Markdown: per setting and epoch, RS (mean [95 % CI]) under both orders, the
    paired contrast cyclic − shuffled with its p and verdict (`verdicts.judge` of
    `RECOVERY` at that epoch), and the degenerate counts."""
    from IPython.display import Markdown

    lines = ["| setting | epoch n | RS cyclic | RS shuffled | cyclic − shuffled | verdict "
             "| degenerate (cyc/shu) |", "|---|---|---|---|---|---|---|"]
    for label, c in comparisons.items():
        for j, d in enumerate(c["diff"]):
            cells = [stats.t_interval(c[o][:, j]).text() for o in ("cyclic", "shuffled")]
            deg = "/".join(str(int(c["degenerate"][o][:, j].sum()))
                           for o in ("cyclic", "shuffled"))
            if c["degenerate"]["cyclic"][:, j].all():
                v = verdicts.not_tested(RECOVERY, NOT_WHY)
            else:
                v = verdicts.judge(RECOVERY, c["cyclic"][:, j] - c["shuffled"][:, j])
            text, word = (d.text(), v.text()) if v.word == "not tested" else \
                v.text().rsplit(" — ", 1)
            lines.append(f"| {label} | {j + 1} | {cells[0]} | {cells[1]} | {text} "
                         f"| {word} | {deg} |")
    return Markdown("\n".join(lines))


def overview(settings: dict, *, unit: str = "batch"):
    """One row per setting ({label: {order: [Run]}}): the loss on x_1 under both orders,
    the cyclic shift-average, and RS(n) per epoch; mean ± 1 sd bands over seeds (the
    shift-average's over seeds and documents). Diverged runs are left out of the rows
    (counted in `compare_orders`); a setting with only diverged runs is drawn as is."""
    import matplotlib.pyplot as plt

    from .. import plots

    units = "batches" if unit == "batch" else f"{unit}s"
    # the book's column width (plots.COLUMN_IN), so no text is shrunk below 8 px
    fig, axes = plt.subplots(len(settings), 3,
                             figsize=(plots.COLUMN_IN, 2.9 * len(settings)),
                             width_ratios=[1.4, 1, 1], layout="constrained", squeeze=False)
    for ax, (label, runs_by_order) in zip(axes, settings.items()):
        finite = {o: [r for r in rr if np.isfinite(r.eval_loss).all()] or rr
                  for o, rr in runs_by_order.items()}
        plots.doc_curve(finite, doc=0, ax=ax[0])
        ax[0].set_ylabel(f"loss on {unit} 1")
        ax[0].set_xlabel(f"episode k ({units} trained)")
        ax[0].set_title(label, loc="left", fontsize=9)
        ax[0].legend(frameon=False, fontsize=8, loc="upper right")
        plots.shift_averaged({"cyclic": finite["cyclic"]}, ax=ax[1])
        ax[1].set_xlabel("epochs since first trained")
        ax[1].get_legend().remove()
        plots.recovery_by_epoch({o: rs_by_epoch(rr) for o, rr in finite.items()}, ax=ax[2])
        ax[2].get_legend().remove()  # the colours are the left panel's
    return fig


def overview_caption(fig_no: str, subject: str, settings: dict, *,
                     unit: str = "batch") -> str:
    """The caption of an `overview` figure (`plots.caption`): the subject, what each
    panel shows, the settings (one row each), the models and n."""
    from .. import plots

    n = min(len(rr) for s in settings.values() for rr in s.values())
    what = (f"{subject}, one row per setting ({'; '.join(settings)}), cyclic vs "
            f"shuffled order. "
            f"Left: loss on {unit} 1, mean ± 1 sd over seeds (circles: just before each "
            f"revisit); middle: shift-averaged loss of the cyclic runs (band ±1 sd over "
            f"seeds and {unit}s); right: RS(n) per epoch, mean ± 1 sd over seeds "
            f"(triangles: seeds whose RS is outside [0, 1], degenerate and left out)")
    return plots.caption(fig_no, what, n=f"n = {n} seeds per order and setting",
                         model="the stand-in named in each row (see 'What stands in "
                               "for what' above), pre-trained or with random weights")


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
    stand-ins' RS(E−1) contrast, cyclic − shuffled, judged on `CLAIMS` (interval, p,
    the verdict word; the judgement for the scorecard's Holm correction)."""
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
            rows.append(dict(item=item, paper=paper, verdict="not tested (not yet computed)",
                             measured=f"{missing} runs missing", where=where))
            continue
        c = compare_orders(runs, CLAIMS["7a" if task == "igpt" else "7b"])
        j = c["judgement"]
        label = runs["cyclic"][0].meta.get("model_label", model)
        unit = f"batches of {base.batch_size}" if task == "classify" else "images"
        px = (f"{base.image_size} px" if task == "classify"
              else f"{base.image_size}×{base.image_size} px")
        shape = (f"{what}; T = {base.n_docs} {unit} at {px}, M = "
                 f"{base.steps_per_doc}, E = {base.n_epochs}, {base.optimizer} {base.lr:g}; "
                 f"{len(plan.seeds)} seeds per order")
        stat = f"RS({c['epoch']}) cyclic − shuffled"
        text = (c["diff"][-1].text() if j.word == "not tested"
                else j.text().rsplit(" — ", 1)[0])
        rows.append(dict(item=item, paper=paper, verdict=c["verdict"],
                         measured=f"{stat}: {text}", scale=f"{label}; {shape}",
                         where=where, judgement=j, label=stat))
    return rows


def explore_batch_curves(runs_by_setting: dict, *, unit: str = "batch"):
    """Widget: pick a setting, a batch (image) and an epoch window; redraw its curve
    (`widgets.explore_doc_curves`: one control per row, sliders following the
    setting's T and E)."""
    from .. import widgets

    return widgets.explore_doc_curves(runs_by_setting, unit=unit, pick_label="setting")


def llm_reference(epoch: int | None = None) -> dict | None:
    """Chapter 1's committed cpu-preset runs ({order: [Run]}), for comparison on the same
    metric; None when they are not (yet) there."""
    try:
        from .. import presets, results

        cfgs = presets.configs("01_phenomenon", "cpu", "main")
        found = {o: [r for c in cfgs if c.order == o
                     for r in [results.find_run(c, "01_phenomenon")] if r is not None]
                 for o in ORDERS}
    except Exception:  # chapter 1's presets or results not available here
        return None
    return found if all(found.values()) else None
