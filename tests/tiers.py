"""The fast tier's rule, checked rather than hoped for (a pytest plugin, loaded by
``tests/conftest.py``).

``make test-fast`` runs the tests not marked ``slow`` and must stay fast: such a test
starts no process, never sleeps and uses no Prefect server. While one runs (its
set-up and call), starting a process (``subprocess``, ``os.system``,
``os.fork``, ``os.posix_spawn``; Prefect's temporary server is one too) or calling
``time.sleep`` raises :class:`FastTierViolation`, and the test fails naming what it
did; asking for the ``prefect_server`` fixture or the ``server`` mark fails its set-up.
Threads that were already running before the test (a library's own workers) may
do both; threads the test starts may not. Tests marked ``slow`` are not watched.
Teardowns are not either: the last test's teardown also stops the session's
fixtures (the Prefect server, waited for).
"""

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

SERVER_FIXTURES = ("prefect_server",)
_PROCESS_FUNCTIONS = ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp")
_HOW = "mark it @pytest.mark.slow (make test runs it) or make it fast without it"


class FastTierViolation(Exception):
    """A test of the fast tier started a process or slept."""


def _is_slow(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None


@contextlib.contextmanager
def _refused(nodeid: str) -> Iterator[list[str]]:
    """Within the block, starting a process or sleeping raises; yields the list of
    what was refused (also what threads of the test tried: their exceptions are
    theirs, the test is failed for them afterwards)."""
    refused: list[str] = []
    before = {t.ident for t in threading.enumerate() if t is not threading.current_thread()}
    real_sleep, real_init = time.sleep, subprocess.Popen.__init__
    real_os = {name: getattr(os, name) for name in _PROCESS_FUNCTIONS if hasattr(os, name)}

    def refuse(what: str) -> FastTierViolation:
        refused.append(what)
        return FastTierViolation(f"{nodeid} {what}: the fast tier starts no process and never sleeps; {_HOW}")

    def theirs() -> bool:  # a thread that predates the test (a library's worker)
        return threading.get_ident() in before

    def sleep(seconds):
        if theirs():
            return real_sleep(seconds)
        raise refuse(f"calls time.sleep({seconds!r})")

    def popen_init(self, args, *rest, **kwargs):
        if theirs():
            return real_init(self, args, *rest, **kwargs)
        raise refuse(f"starts a process: {args!r}")

    def process_function(name: str):
        def refused_call(*args, **kwargs):
            if theirs():
                return real_os[name](*args, **kwargs)
            raise refuse(f"calls os.{name}{args!r}")

        return refused_call

    time.sleep, subprocess.Popen.__init__ = sleep, popen_init
    for name in real_os:
        setattr(os, name, process_function(name))
    try:
        yield refused
    finally:
        time.sleep, subprocess.Popen.__init__ = real_sleep, real_init
        for name, function in real_os.items():
            setattr(os, name, function)


def _watched(item: pytest.Item) -> Iterator[None]:
    if _is_slow(item):
        return (yield)
    with _refused(item.nodeid) as refused:
        outcome = yield
    if refused:
        pytest.fail(f"{item.nodeid} " + "; ".join(dict.fromkeys(refused)) + f": {_HOW}", pytrace=False)
    return outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    if not _is_slow(item):
        servers = [name for name in SERVER_FIXTURES if name in getattr(item, "fixturenames", ())]
        if servers or item.get_closest_marker("server"):
            what = f"uses the fixture {servers[0]}" if servers else "is marked server"
            pytest.fail(f"{item.nodeid} {what}: the fast tier uses no Prefect server; {_HOW}", pytrace=False)
    return (yield from _watched(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _watched(item))
