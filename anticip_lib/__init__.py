"""anticip_lib: the library behind "Anticipatory recovery, reproduced".

A reproduction of Yang, Jones, Mozer & Ren, "Reawakening knowledge: Anticipatory
recovery from catastrophic interference via structured training" (NeurIPS 2024).
Notebooks import from here; see the book's notation page for the symbols.
"""

from . import metrics, orders, toy
from .config import RunConfig
from .results import load_run, mean_sd, run_cached
from .trainer import Run, train, train_run

__all__ = [
    "RunConfig", "Run", "metrics", "orders", "toy", "train", "train_run", "run_cached",
    "load_run", "mean_sd",
]
