"""The layers of the tree: every import runs downwards, no stage imports another, nothing imports the tests.

    core  <  schemas  <  ingest | streams | sinks  <  inferlog (tools, CLI)  <  inferlog_stack (dev only)

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "core": ROOT / "core",
    "schemas": ROOT / "schemas",
    "ingest": ROOT / "ingest",
    "streams": ROOT / "streams",
    "sinks": ROOT / "sinks",
    "inferlog": ROOT / "inferlog",
    "inferlog_stack": ROOT / "deploy" / "local" / "inferlog_stack",
}
# What each package may import of the project's packages (itself always).
ALLOWED = {
    "core": set(),
    "schemas": {"core"},
    "ingest": {"core", "schemas"},
    "streams": {"core", "schemas"},
    "sinks": {"core", "schemas"},
    "inferlog": {"core", "schemas", "ingest", "streams", "sinks"},
    "inferlog_stack": {"core", "schemas", "ingest", "streams", "sinks", "inferlog"},
}
PROJECT = {*PACKAGES, "tests", "bench"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out & PROJECT


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_run_downwards(package: str) -> None:
    bad = []
    for path in sorted(PACKAGES[package].rglob("*.py")):
        for target in sorted(_imports(path) - ALLOWED[package] - {package}):
            bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_test_support_in_production_packages() -> None:
    names = {p.name for pkg in PACKAGES.values() for p in pkg.rglob("*.py")}
    assert not names & {"testing.py", "examples.py", "fakes.py", "conftest.py"}


def test_the_wheel_does_not_carry_the_local_stack() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not (ROOT / "inferlog" / "stack").exists()
    assert all(not pattern.startswith("inferlog_stack") for pattern in include)
    assert not (ROOT / "inferlog_stack").exists(), "the local stack lives in deploy/local, its own distribution"
