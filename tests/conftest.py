"""Shared fixtures: one real Prefect server per test session, tiny configurations."""

import alcore  # noqa: F401, I001 - first: the numeric settings before NumPy and JAX load (alcore/numerics.py)
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# The tests' subprocesses share one JAX compilation cache of their own (kept between
# sessions, so later sessions start warm), never the user's ~/.cache.
os.environ.setdefault("BAL_JAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "bal-tests-jax-cache"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
