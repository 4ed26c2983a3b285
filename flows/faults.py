"""Injected faults, for testing retries and resume for real (a no-op outside tests)."""

import os
from pathlib import Path

FAULT_ENV = "BAL_FAULT_ONCE"


def fault_point(folder: Path, name: str) -> None:
    """Fail once at a named point.

    With ``BAL_FAULT_ONCE=after-round-3`` the flow raises after round 3 the first time
    it gets there in this experiment folder (a marker file remembers it), as a crash
    would; a retry or a re-run then passes. Unset (always, outside tests): a no-op.
    """
    if os.environ.get(FAULT_ENV) != name:
        return
    marker = Path(folder) / f".fault-{name}"
    if marker.exists():
        return
    marker.touch()
    raise RuntimeError(f"injected fault at {name} ({FAULT_ENV})")
