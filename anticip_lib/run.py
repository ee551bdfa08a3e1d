"""`Run`: one run's config and recorded arrays (numpy only: reading results costs no torch)."""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Run:
    """One run: a config (or None for the low-level loop) and its recorded losses."""

    config: object
    eval_loss: np.ndarray  # (E·T+1, T); row k = after k episodes, row 0 = before training
    train_loss: np.ndarray  # (E·T·M,), before each update
    order: np.ndarray  # (E·T,) document of each episode
    meta: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)  # {recorder name: {key: (E·T+1, …)}}
