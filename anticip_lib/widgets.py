"""Widgets for a live kernel (STYLE §18): sliders over cached runs, redrawn on change.

The static book shows each widget's controls and its first figure; every widget also
executes under papermill in the tests so it cannot rot. Figures are plain outputs
replaced in place through a display handle (`LiveFigure`), never captured into an
`Output` widget: capturing output into a widget while a notebook is executed can
deadlock the executor (jupyter/nbclient#312), which stalled book builds here.
"""

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

from . import plots, toy_plots


class LiveFigure:
    """A figure shown once below the controls and replaced in place on every redraw."""

    def __init__(self):
        self._handle = None

    def show(self, fig) -> None:
        if self._handle is None:
            self._handle = display(fig, display_id=True)  # None outside IPython
        else:
            self._handle.update(fig)
        plt.close(fig)


def _shape(runs_by_label: dict) -> tuple[int, int]:
    """(T, E) of a choice's runs: documents per epoch and epochs."""
    first = next(iter(runs_by_label.values()))[0]
    n_rows, n_docs = first.eval_loss.shape
    return n_docs, (n_rows - 1) // n_docs


def explore_doc_curves(runs_by_label: dict, *, unit: str = "document",
                       pick_label: str = "point"):
    """Pick a document and an epoch window; redraw its loss curve (Fig. 1a style).

    `runs_by_label`: {label: [runs]} (one curve per label), or {choice: {label: [runs]}}
    (the points of an axis): then a drop-down picks the choice first, and the sliders
    follow the chosen runs' T and E (a point with T = 40 or E = 10 is shown whole).
    Each control has its own row, wide enough for its label and track.
    """
    nested = isinstance(next(iter(runs_by_label.values())), dict)
    choices = runs_by_label if nested else {"": runs_by_label}
    n_docs, n_epochs = _shape(next(iter(choices.values())))
    wide = {"style": {"description_width": "90px"}, "layout": W.Layout(width="520px")}
    pick = W.Dropdown(options=list(choices), description=pick_label, **wide)
    doc = W.IntSlider(value=1, min=1, max=n_docs, description=unit, **wide)
    epochs = W.IntRangeSlider(value=(1, n_epochs), min=1, max=n_epochs,
                              description="epochs", **wide)
    shape = W.HTML()
    live = LiveFigure()

    def follow(*_):
        """Give the sliders the chosen runs' T and E (keeping what still fits)."""
        T, E = _shape(choices[pick.value])
        doc.max, doc.value = T, min(doc.value, T)
        lo, hi = epochs.value
        full = hi == epochs.max
        epochs.max = E
        epochs.value = (min(lo, E), E if full else min(hi, E))
        shape.value = f"these runs: T = {T} per epoch, E = {E} epochs"

    def redraw(*_):
        T, _E = _shape(choices[pick.value])
        fig = plots.doc_curve(choices[pick.value], doc=min(doc.value, T) - 1)
        lo, hi = epochs.value
        fig.axes[0].set_xlim((lo - 1) * T - 0.5, hi * T + 0.5)
        fig.axes[0].set_ylabel(f"loss on {unit} {doc.value}")
        live.show(fig)

    pick.observe(follow, "value")
    for w in (pick, doc, epochs):
        w.observe(redraw, "value")
    follow()
    box = W.VBox(([pick, shape] if nested else []) + [doc, epochs])
    display(box)
    redraw()
    return box


def toy_explorer(n_tasks=25, dim_in=100, dim_embed=100, lr=0.01, n_epochs=50,
                 variant="target", seed=0, order="cyclic"):
    """Re-run the toy model (chapter 7) live and redraw its loss, RS and PCA circle.

    Each change re-trains from scratch; a run with T = 25, N = M = 100 and 50 epochs
    takes a few hundredths of a second.
    """
    from . import toy

    dims = [5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    lay = {"style": {"description_width": "100px"}, "layout": W.Layout(width="340px")}
    c = {
        "n_tasks": W.IntSlider(n_tasks, 3, 200, description="tasks T", **lay),
        "n_epochs": W.IntSlider(n_epochs, 2, 300, description="epochs E", **lay),
        "dim_in": W.SelectionSlider(options=dims, value=dim_in, description="input dim N",
                                    **lay),
        "dim_embed": W.SelectionSlider(options=dims, value=dim_embed,
                                       description="embed dim M", **lay),
        "lr": W.FloatLogSlider(lr, base=10, min=-4, max=0, step=0.1, readout_format=".1e",
                               description="step size α", **lay),
        "seed": W.BoundedIntText(seed, min=0, max=10**6, description="seed", **lay),
        "variant": W.ToggleButtons(options=list(toy.VARIANTS), value=variant,
                                   description="f_i(w)", style=lay["style"]),
        "order": W.ToggleButtons(options=["cyclic", "shuffled"], value=order,
                                 description="order", style=lay["style"]),
    }
    for w in c.values():
        if hasattr(w, "continuous_update"):
            w.continuous_update = False
    note, live = W.HTML(), LiveFigure()

    def redraw(*_):
        kw = {k: w.value for k, w in c.items()}
        r = toy.run(**kw)
        beta = kw["lr"] * kw["dim_in"] / 3
        crit = toy.critical_lr(kw["dim_in"], kw["n_tasks"])
        note.value = (
            f"α‖x‖² ≈ {beta:.2f}; critical α ≈ {crit:.2g} (α‖x‖² = T/(T−1))"
            + ("; <b>diverged</b>" if r.diverged else "")
        )
        toy_plots.summary(r)
        live.show(plt.gcf())

    for w in c.values():
        w.observe(redraw, "value")
    pairs = [("n_tasks", "n_epochs"), ("dim_in", "dim_embed"), ("lr", "seed")]
    rows = [W.HBox([c[a], c[b]]) for a, b in pairs] + [c["variant"], c["order"]]
    box = W.VBox(rows + [note])
    display(box)
    redraw()
    return box
