"""Shared fixtures: one real Prefect server per test session (for the slow tier only:
``tests/tiers.py`` fails a fast test that asks for it). Shared helpers are in
``tests/helpers.py``."""

import os
import tempfile
from pathlib import Path

# The tests and their subprocesses share one JAX compilation cache of their own (kept
# between sessions, so later sessions start warm), never the user's ~/.cache: most of
# the fast tier's time is XLA compiling the same programs. (What compiles is still
# logged: tests that count compilations are unaffected.) Set before alcore configures
# the cache (alcore/compile_cache.py).
os.environ.setdefault("BAL_JAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "bal-tests-jax-cache"))

import alcore  # noqa: F401, E402, I001 - first: the numeric settings before NumPy and JAX load (alcore/numerics.py)
import pytest  # noqa: E402

from runtime.local_server import PrefectServer  # noqa: E402

# tiers: the fast tier's rule (no process, no sleep, no server), enforced
pytest_plugins = ("tests.tiers", "pytester")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """``prefect server start`` (UI included) on a free loopback port with its own
    PREFECT_HOME, started as the CLI starts its own (``runtime.local_server``).

    Yields a dict with ``api_url``, ``ui_url`` and ``env`` (the environment for
    subprocesses that should talk to it). Stopped at the end of the session.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    server = PrefectServer(home)
    server.start()
    env = {**server.env, "PREFECT_UI_API_URL": server.api_url, "PREFECT_LOGGING_LEVEL": "INFO"}
    yield {"api_url": server.api_url, "ui_url": server.ui_url, "env": env, "home": home, "port": server.port}
    server.stop()
