"""environment.yml (conda) pins exactly what pyproject.toml (pip) pins."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins |= set(extra)
    env = set(re.findall(r"^\s+- ([\w.-]+==[\w.+-]+)\s*$", (ROOT / "environment.yml").read_text(), re.M))
    assert pins == env, f"only in pyproject: {pins - env}; only in environment.yml: {env - pins}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n\n")[1]  # the README's first lines
    assert ci.strip().splitlines()[-1] == "make test"
