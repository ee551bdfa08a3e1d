"""Run records: per-episode quantities recorded during training and cached with the run.

The mechanism analyses (SPEC §7: gradient similarity, weight residuals, PCA of the
last layer, activations) need quantities after every episode, which the paper got from
per-episode checkpoints. Here a *recorder* computes them on the spot:

    rec = records.weights("embed_out.weight", rows=64)
    run = run_cached(config, "06_mechanisms", record=rec)
    run.records[rec.name]["value"]        # (E·T+1, 64, d): row k = after k episodes

A recorder is any object with

- `name`: a short identifier (letters, digits and `_ . : = -`), unique within a run;
- `version`: an integer, bumped whenever what it records changes (part of the cache key);
- `__call__(k, model) -> dict[str, np.ndarray]`: called after the evaluation of episode
  k = 0..E·T (0 = before training), every call returning arrays of the same shapes;
- optionally `bind(inputs, labels, attention_mask, loss_fn)`: called once before
  episode 0 (and again when a run resumes), for recorders that need the documents.

The trainer stacks the arrays over episodes (leading axis E·T+1, float; rows of
episodes that never ran, after a divergence, are NaN), keeps them in its checkpoints,
and `results` saves them in the run's .npz. A run's cache key includes the names and
versions of its recorders; a run without recorders keeps the key it always had.
Recorders must not change the model or the optimizer: they see the model in eval mode
and leave every parameter's `.grad` as they found it.
"""

import difflib
import re

import numpy as np

NAME = re.compile(r"^[A-Za-z0-9_.:=-]+$")


def as_tuple(record) -> tuple:
    """None, one recorder or several → a tuple sorted by name; names checked."""
    if record is None:
        return ()
    if hasattr(record, "name") or not isinstance(record, (list, tuple)):
        recs = (record,)
    else:
        recs = tuple(record)
    for r in recs:
        name = getattr(r, "name", None)
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"record: a recorder needs a `name` of letters, digits and "
                             f"_ . : = - ; got {name!r} ({type(r).__name__})")
        if not callable(r):
            raise ValueError(f"record: recorder {name!r} is not callable as r(k, model)")
        version = getattr(r, "version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"record: recorder {name!r} has version {version!r}; "
                             "it must be an integer")
    names = [r.name for r in recs]
    if len(set(names)) != len(names):
        raise ValueError(f"record: two recorders share a name: {sorted(names)}")
    return tuple(sorted(recs, key=lambda r: r.name))


def identity(record) -> dict[str, int]:
    """{name: version} of the recorders (what enters the cache key)."""
    return {r.name: int(getattr(r, "version", 1)) for r in as_tuple(record)}


def _param(model, name: str):
    params = dict(model.named_parameters())
    if name not in params:
        near = difflib.get_close_matches(name, list(params), n=4, cutoff=0.5)
        some = near or [*list(params)[:3], "…", *list(params)[-2:]]
        raise ValueError(f"param={name!r} is not a parameter of {type(model).__name__}; "
                         f"{'close names' if near else 'its names look like'}: "
                         f"{', '.join(some)}")
    return params[name]


class weights:
    """The values of one parameter after every episode (Fig. 9's PCA, Fig. 8(c)).

    rows: keep only the first `rows` rows (e.g. of `embed_out.weight`, 50k × d at
    paper scale), so that E·T+1 copies fit in memory. Output {"value": float32 array}.
    """

    version = 1

    def __init__(self, param: str, rows: int | None = None):
        if rows is not None and (not isinstance(rows, int) or rows < 1):
            raise ValueError(f"rows must be a positive integer or None, got {rows!r}")
        self.param, self.rows = param, rows
        self.name = f"weights:{param}" + (f":rows={rows}" if rows else "")

    def __call__(self, k, model) -> dict[str, np.ndarray]:
        p = _param(model, self.param).detach()
        if self.rows is not None:
            p = p[: self.rows]
        return {"value": p.float().cpu().numpy().copy()}


class grad_of_doc:
    """Gradient of document `doc`'s loss w.r.t. one parameter, after every episode.

    The loss is the trainer's own (`loss_fn`, the mean next-token NLL of the document,
    padding excluded) at the model as it is after episode k, in eval mode; SPEC §7.1
    (Fig. 8(a)) takes such gradients at one attention layer. Output {"grad": float32
    array shaped like the parameter, "loss": the loss}. Computed with
    `torch.autograd.grad`, so no parameter's `.grad` changes.
    """

    version = 1

    def __init__(self, doc: int, param: str):
        if not isinstance(doc, int) or doc < 0:
            raise ValueError(f"doc must be a non-negative document index, got {doc!r}")
        self.doc, self.param = doc, param
        self.name = f"grad:doc={doc}:{param}"
        self._data = None

    def bind(self, inputs, labels, attention_mask, loss_fn):
        if self.doc >= inputs.shape[0]:
            raise ValueError(f"doc={self.doc}: the run has only {inputs.shape[0]} "
                             "documents (0-based index)")
        d = slice(self.doc, self.doc + 1)
        mask = None if attention_mask is None else attention_mask[d]
        self._data = (inputs[d], labels[d], mask, loss_fn)

    def __call__(self, k, model) -> dict[str, np.ndarray]:
        if self._data is None:
            raise RuntimeError(f"recorder {self.name!r} was not bound to the documents; "
                               "pass it as train(..., record=...)")
        import torch  # here: `identity`, which the results cache needs, costs no torch

        x, y, mask, loss_fn = self._data
        p = _param(model, self.param)
        was_training = model.training
        model.eval()
        frozen = not p.requires_grad  # a frozen block's gradient is recorded too
        p.requires_grad_(True)
        try:
            with torch.enable_grad():
                loss = loss_fn(model, x, y, mask).mean()
                (g,) = torch.autograd.grad(loss, [p])
        finally:
            p.requires_grad_(not frozen)
            model.train(was_training)
        return {"grad": g.float().cpu().numpy(), "loss": np.float64(loss.item())}
