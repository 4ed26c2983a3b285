"""Shared fixtures: one real Prefect server per test session, tiny configurations."""

import alcore  # noqa: F401, I001 - first: the numeric settings before NumPy and JAX load (alcore/numerics.py)
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from runtime.local_server import PrefectServer, free_port  # noqa: F401 - free_port: the tests' import

ROOT = Path(__file__).resolve().parent.parent

# The tests' subprocesses share one JAX compilation cache of their own (kept between
# sessions, so later sessions start warm), never the user's ~/.cache.
os.environ.setdefault("BAL_JAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "bal-tests-jax-cache"))
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


# A configuration small enough for seconds-long flows.
TINY = {
    "rounds": 3,
    "grid_size": 20,
    "n_initial": 12,
    "n_calibration": 10,
    "initial_epochs": 60,
    "epochs_per_round": 5,
    "calibration_grid_size": 8,
    "mc_samples": 8,
}


def cli_args(config: dict) -> list[str]:
    args = []
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


def run_flow(env: dict, config: dict, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (a real process, as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "flows.active_learning", *cli_args(config), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
