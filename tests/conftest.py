"""Shared fixtures: one real Prefect server per test session (for the slow tier only:
``tests/tiers.py`` fails a fast test that asks for it). Shared helpers are in
``tests/helpers.py``."""

import alcore  # noqa: F401, I001 - first: the numeric settings before NumPy and JAX load (alcore/numerics.py)
import os
import tempfile
from pathlib import Path

import jax
import pytest

from runtime.jax_cache import enable_compilation_cache
from runtime.local_server import PrefectServer

# tiers: the fast tier's rule (no process, no sleep, no server), enforced
pytest_plugins = ("tests.tiers", "pytester")

# The tests' subprocesses share one JAX compilation cache of their own (kept between
# sessions, so later sessions start warm), never the user's ~/.cache.
os.environ.setdefault("BAL_JAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "bal-tests-jax-cache"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# This process uses that cache too: most of the fast tier's time is XLA compiling the
# same programs every session; from the second session on they are loaded instead.
# (What compiles is still logged: tests that count compilations are unaffected.) Here
# every program is kept, also the many small ones of code run op by op (the laplax and
# NumPy-style references), which the CLI's 0.1 s threshold would leave out.
enable_compilation_cache()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


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
