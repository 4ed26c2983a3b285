"""The layers of docs/architecture.md, checked: what each package may import of the project.

Every import statement counts, at module level or inside a function. A package that
imports a layer above it fails here, naming the file and the import.
"""

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PROJECT = ("alcore", "sources", "store", "tasks", "oracles", "runtime", "flows", "benchmarks", "tests")
# What each package may import of the project (besides itself).
ALLOWED = {
    "alcore": set(),  # the math
    "sources": {"alcore"},  # the data: files, bundled sets
    "store": {"alcore", "sources"},  # the experiment folder
    "tasks": {"alcore", "sources", "store"},  # Prefect tasks, figures
    "oracles": {"alcore", "sources", "store", "tasks", "runtime"},  # who labels (a suspension starts a standby)
    "runtime": {"alcore", "sources", "store"},  # processes: command line, server, guards, Prefect's internals
    "flows": {"alcore", "sources", "store", "tasks", "oracles", "runtime"},  # the flows
    "benchmarks": {"alcore", "sources", "store", "tasks", "oracles", "runtime", "flows", "tests"},  # tests' labeller
    "tests": {"alcore", "sources", "store", "tasks", "oracles", "runtime", "flows"},  # and never benchmarks
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level project package, line) of every import in a file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add((node.module.split(".")[0], node.lineno))
    return {(name, line) for name, line in out if name in PROJECT}


@pytest.mark.parametrize("package", PROJECT)
def test_a_package_imports_only_the_layers_below_it(package):
    files = sorted((ROOT / package).glob("**/*.py"))
    assert files, f"no package {package}"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for name, line in sorted(imported_packages(path))
        if name != package and name not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)
