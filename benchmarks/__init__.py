"""Benchmarks (not tests): they print figures and write JSON.

Tests import nothing from here; the helpers benchmarks share with the tests are the
tests' own (``tests/helpers.py``), imported below."""

import alcore  # noqa: F401, I001 - first: the numeric settings before NumPy and JAX load (alcore/numerics.py)
import json
from pathlib import Path

from tests.helpers import (  # noqa: F401 - the benchmarks import them from here
    PREFECT,
    ROOT,
    cli_args,
    comparable,
    free_port,
    results,
    start_worker,
    stop_worker,
)


def write_json(document: dict, path: str | Path) -> None:
    """Write a benchmark's figures to ``path`` (folders created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")
