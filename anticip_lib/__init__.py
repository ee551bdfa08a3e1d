"""anticip_lib: the library behind "Anticipatory recovery, reproduced".

A reproduction of Yang, Jones, Mozer & Ren, "Reawakening knowledge: Anticipatory
recovery from catastrophic interference via structured training" (NeurIPS 2024).
Notebooks import from here; see the book's notation page for the symbols.

Nothing is imported until it is first used (PEP 562): `import anticip_lib.metrics`
costs numpy only, and torch loads with the first name that needs it (`train_run`,
`run_cached`, `models`, …). Every submodule is an attribute (`anticip_lib.plots`), and
the names below come from the submodule that defines them.
"""

import importlib
import importlib.util

_NAMES = {  # name → the submodule that defines it
    "RunConfig": "config",
    "mean_sd": "metrics",
    "load_run": "results",
    "run_cached": "results",
    "Run": "trainer",
    "train": "trainer",
    "train_run": "trainer",
}

__all__ = [
    "RunConfig", "Run", "metrics", "orders", "plots", "presets", "toy", "widgets",
    "train", "train_run", "run_cached", "load_run", "mean_sd",
]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
