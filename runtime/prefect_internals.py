"""The Prefect internals this project relies on, all in one place, checked against one version.

Prefect has no public hook for these; each is what keeps a run alive through a
short server restart or ends it cleanly when the server is gone
(``runtime/resilience.py`` says when they are used). ``tests/test_prefect_internals.py``
fails when the installed Prefect is not :data:`CHECKED_VERSION` or no longer has
what is used here: read the named Prefect source again before changing the version.
"""

import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

CHECKED_VERSION = "3.9.1"  # prefect/client/base.py is the same as in 3.8.8

# Loggers of Prefect's background delivery (events and logs sent to the server):
# they report every event and log batch they could not send (the event in full),
# then again at exit.
DELIVERY_LOGGERS = ("prefect._internal.concurrency", "prefect.events.clients", "EventsWorker", "APILogWorker")


class _WithSleep:
    """Stands in for a module (``time``, ``anyio``) in ``prefect.client.base``: all of
    it is the module's, except ``sleep``."""

    def __init__(self, module, sleep):
        self._module = module
        self.sleep = sleep

    def __getattr__(self, name):
        return getattr(self._module, name)


@contextmanager
def client_retry_sleeps(sleep: Callable[[float], None], asleep: Callable[[float], Awaitable[None]]) -> Iterator[None]:
    """Prefect's HTTP clients wait between retries with ``time.sleep`` (sync) and
    ``anyio.sleep`` (async), names they look up in ``prefect.client.base`` at each
    retry (``_send_with_retry``): while this holds, they call ``sleep`` and
    ``asleep`` instead (the rest of both modules is unchanged). The retry settings
    (``PREFECT_CLIENT_MAX_RETRIES``, ``..._RETRY_JITTER_FACTOR``) fix the number of
    retries and the back-off, but nothing can end a back-off early."""
    import anyio
    import prefect.client.base as client_base

    saved = client_base.time, client_base.anyio
    client_base.time = _WithSleep(time, sleep)
    client_base.anyio = _WithSleep(anyio, asleep)
    try:
        yield
    finally:
        client_base.time, client_base.anyio = saved


@contextmanager
def clients_count_as_connected() -> Iterator[None]:
    """Prefect's HTTP clients retry a refused connection only once the instance has
    connected (``_has_connected``, set after its first answer: a wrong URL fails at
    once). While this holds, every new client counts as connected, so a refused
    connection is retried like any other failure."""
    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

    originals = {cls: cls.__init__ for cls in (PrefectHttpxAsyncClient, PrefectHttpxSyncClient)}

    def connected_init(original):
        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self._has_connected = True

        return __init__

    for cls, original in originals.items():
        cls.__init__ = connected_init(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.__init__ = original


def before_exit_flush(fn: Callable, *args) -> None:
    """Call ``fn(*args)`` at interpreter exit before Prefect drains its event and log
    workers: they register their drains with ``threading._register_atexit`` (at their
    start, ``prefect/_internal/concurrency/services.py``), and those hooks run
    last-registered first. Does nothing on a Python without it."""
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(fn, *args)


def exit_without_flush(code: int) -> None:
    """End the process now, without exit handlers: Prefect's would send every queued
    event and log to the server first, ~7 s per event when it is gone."""
    os._exit(code)
