"""Shared fixtures: one real Prefect server per test session (for the slow tier only:
``tests/tiers.py`` fails a fast test that asks for it). Shared helpers are in
``tests/helpers.py``."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jax
import pytest

from tasks.workspace import enable_compilation_cache

# cli_args: benchmarks/lost_server.py still imports it from here (it is being changed
# on another branch); benchmarks/__init__.py has its own copy for the others.
from tests.helpers import cli_args, free_port  # noqa: F401

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
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME.

    Yields a dict with ``api_url``, ``ui_url`` and ``env`` (the environment for
    subprocesses that should talk to it). Stopped by PID at the end of the session.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    proc = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited early:\n{(home / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("prefect server did not become healthy within 120 s")
    client_env = {**env, "PREFECT_API_URL": api}
    yield {"api_url": api, "ui_url": f"http://127.0.0.1:{port}", "env": client_env, "home": home, "port": port}
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()
