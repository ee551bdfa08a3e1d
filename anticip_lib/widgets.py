"""Widgets for a live kernel (STYLE §18): sliders over cached runs, redrawn on change.

The static book shows each widget's initial state; every widget also executes under
papermill in the tests so it cannot rot.
"""

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

from . import plots


def explore_doc_curves(runs_by_label: dict):
    """Pick a document and an epoch window; redraw its loss curve (Fig. 1a style)."""
    first = next(iter(runs_by_label.values()))[0]
    n_rows, n_docs = first.eval_loss.shape
    n_epochs = (n_rows - 1) // n_docs
    doc = W.IntSlider(value=1, min=1, max=n_docs, description="document")
    epochs = W.IntRangeSlider(value=(1, n_epochs), min=1, max=n_epochs, description="epochs")
    out = W.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig = plots.doc_curve(runs_by_label, doc=doc.value - 1)
            lo, hi = epochs.value
            fig.axes[0].set_xlim((lo - 1) * n_docs - 0.5, hi * n_docs + 0.5)
            plt.show()

    doc.observe(redraw, "value")
    epochs.observe(redraw, "value")
    redraw()
    box = W.VBox([W.HBox([doc, epochs]), out])
    display(box)
    return box
