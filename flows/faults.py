"""Injected faults, for testing retries and resume for real (a no-op outside tests)."""

import gc
import os
import signal
from pathlib import Path

FAULT_ENV = "BAL_FAULT_ONCE"
SIGTERM_IN_GC = "sigterm-in-gc:"


def fault_point(folder: Path, name: str) -> None:
    """Fail once at a named point.

    With ``BAL_FAULT_ONCE=after-round-3`` the flow raises after round 3 the first time
    it gets there in this experiment folder (a marker file remembers it), as a crash
    would; a retry or a re-run then passes. With ``BAL_FAULT_ONCE=sigterm-in-gc:after-round-3``
    the process sends itself SIGTERM there instead, received during a garbage
    collection, where Python swallows the exception a handler raises
    (``flows/signals.py``). Unset (always, outside tests): a no-op.
    """
    wanted = os.environ.get(FAULT_ENV)
    if wanted not in (name, SIGTERM_IN_GC + name):
        return
    marker = Path(folder) / f".fault-{name}"
    if marker.exists():
        return
    marker.touch()
    if wanted.startswith(SIGTERM_IN_GC):
        _sigterm_during_gc()
        return
    raise RuntimeError(f"injected fault at {name} ({FAULT_ENV})")


def _sigterm_during_gc() -> None:
    sent = []

    def callback(phase, info):
        if phase == "start" and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            # The Python handler runs at this thread's next bytecode: inside this callback,
            # whose exceptions the collector prints and ignores.
            sum(range(1000))

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
