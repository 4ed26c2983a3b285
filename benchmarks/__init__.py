"""Benchmarks (not tests): they print figures and write JSON."""

import json
from pathlib import Path


def write_json(document: dict, path: str | Path) -> None:
    """Write a benchmark's figures to ``path`` (folders created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")
