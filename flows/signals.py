"""A termination signal that is never lost.

Prefect's engine turns SIGTERM (``make stop``, a worker stopping, a cancelled run)
into an exception raised in the main thread, wherever it happens to be, and records the
run as crashed when it reaches the engine. An exception raised where Python ignores
exceptions is lost: in a garbage-collection callback (JAX installs one, and a round
collects often), a ``__del__`` or a weakref callback, Python prints "Exception ignored
in ..." and goes on. A run hit there kept computing its 400 rounds until the worker
killed it 30 s later (seen in CI; reproduced with SIGTERM sent 5 s after the start).

:func:`never_lost` notes every SIGTERM before passing it to the handler it found
(Prefect's), and :func:`checkpoint`, called between the stages, raises it again if it
was swallowed. Plain Python signal handling, no Prefect internals: the handler found is
called as it is, so Prefect's own handling (its exception, its crash record) is what
happens, only no longer by chance.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# SIGTERMs noted by never_lost's handler and not yet seen to reach the code (main thread only)
_pending: list[int] = []
_handler = None  # the handler never_lost found, while it is installed


@contextmanager
def never_lost() -> Iterator[None]:
    """Within: every SIGTERM reaches the code, at the latest at the next
    :func:`checkpoint` or when the block ends. Does nothing outside the main thread
    (signals are handled there only) or when SIGTERM has no Python handler (the
    default action ends the process; nothing to lose)."""
    global _handler
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or _handler is not None:
        yield
        return

    def note_then_pass_on(signum, frame):
        _pending.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGTERM, note_then_pass_on)
    _handler = previous
    _pending.clear()
    try:
        yield
        checkpoint()  # a signal swallowed after the last checkpoint
    finally:
        signal.signal(signal.SIGTERM, previous)
        _handler = None
        _pending.clear()


def checkpoint() -> None:
    """Raise a SIGTERM that arrived but was swallowed (see the module's docstring):
    the handler found by :func:`never_lost` is called again, here, where its exception
    propagates. A signal that did propagate never comes here: the code it interrupted
    is unwinding."""
    if _pending and _handler is not None and threading.current_thread() is threading.main_thread():
        signum = _pending.pop()
        _pending.clear()
        _handler(signum, None)
