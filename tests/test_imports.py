"""The package's shape: light modules stay light, `anticip_lib` imports lazily, and no
module borrows another's private helpers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import anticip_lib

LIB = Path(anticip_lib.__file__).parent
# modules that must not import torch (numpy, matplotlib and the standard library only)
LIGHT = ["paths", "config", "orders", "metrics", "presets", "protocol", "toy", "plots",
         "toy_plots"]


def test_light_modules_do_not_import_torch():
    """One fresh interpreter imports them in turn and names the first that loads torch
    (or transformers, which imports it)."""
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT!r}:\n"
        "    importlib.import_module('anticip_lib.' + name)\n"
        "    heavy = {'torch', 'transformers'} & set(sys.modules)\n"
        "    if heavy:\n"
        "        sys.exit(f'anticip_lib.{name} imported {sorted(heavy)}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_names_come_from_their_modules():
    from anticip_lib import (Run, RunConfig, load_run, mean_sd, metrics, plots, presets,
                             run_cached, toy, train, train_run, widgets)
    from anticip_lib import config, results, trainer

    assert RunConfig is config.RunConfig and mean_sd is metrics.mean_sd
    assert (run_cached, load_run) == (results.run_cached, results.load_run)
    assert (Run, train, train_run) == (trainer.Run, trainer.train, trainer.train_run)
    assert plots.__name__ == "anticip_lib.plots" and toy.__name__ == "anticip_lib.toy"
    assert widgets.__name__ == "anticip_lib.widgets"
    assert presets.__name__ == "anticip_lib.presets"
    assert set(anticip_lib.__all__) <= set(dir(anticip_lib))
    for name in anticip_lib.__all__:
        assert getattr(anticip_lib, name) is not None


@pytest.mark.parametrize("name", ["no_such_module", "_private", "RESULTS"])
def test_unknown_names_raise_attribute_error(name):
    with pytest.raises(AttributeError, match=name):
        getattr(anticip_lib, name)


def _sibling_modules(tree: ast.Module, package: str) -> dict[str, str]:
    """Local names bound to anticip_lib modules by `from . import x` / `from .. import x`
    / `import anticip_lib.x as y`, mapped to the module's dotted name."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{base}.{node.module}" if node.module else base
            for a in node.names:
                bound[a.asname or a.name] = f"{base}.{a.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "anticip_lib"):
            for a in node.names:
                bound[a.asname or a.name] = f"{node.module}.{a.name}"
    return bound


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _borrowed(path: Path) -> list[str]:
    """`module._name` or `from .module import _name` in `path`, where the module is
    another anticip_lib module; dunders are public."""
    rel = path.relative_to(LIB.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    package = ".".join(rel.parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = ".".join(parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                 .startswith("anticip_lib")):
            found += [f"{path.name}:{node.lineno} imports {a.name}"
                      for a in node.names if _private(a.name)]
    modules = _sibling_modules(tree, package)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules
                and modules[node.value.id] != here):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_the_private_helper_check_catches_borrowing(tmp_path, monkeypatch):
    """The checker below, on a hand-written module that borrows in both ways."""
    pkg = tmp_path / "anticip_lib"
    pkg.mkdir()
    bad = pkg / "bad.py"
    bad.write_text("from . import models\nfrom .results import _tmp, save_run\n"
                   "from .plots import __doc__\n\n"
                   "def f():\n    return models._offline() or models.load_model\n")
    monkeypatch.setattr(sys.modules[__name__], "LIB", pkg)
    assert _borrowed(bad) == ["bad.py:2 imports _tmp", "bad.py:6 uses models._offline"]


def test_no_module_borrows_private_helpers():
    found = [f for p in sorted(LIB.rglob("*.py")) for f in _borrowed(p)]
    assert not found, "private helpers used across modules: " + "; ".join(found)
