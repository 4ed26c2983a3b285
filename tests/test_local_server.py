"""The CLI's early temporary Prefect server (runtime/local_server.py), with real processes."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY, cli_args, run_flow

pytestmark = pytest.mark.slow


def _env_without_server(tmp_path: Path) -> dict:
    # a PREFECT_HOME whose parent does not exist yet: the CLI creates it
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "not-yet" / "home"), "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("PREFECT_API_URL", None)
    return env


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_cli_without_an_api_url_runs_on_its_own_temporary_server_and_stops_it(tmp_path):
    config = {**TINY, "artifacts_dir": str(tmp_path / "a")}
    proc = run_flow(_env_without_server(tmp_path), config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"Temporary server on http://127\.0\.0\.1:(\d+)/api \(started", proc.stderr + proc.stdout)
    assert found, proc.stderr[-3000:]
    assert not _listening(int(found.group(1))), "the temporary server outlived the CLI"
    assert "View at" not in proc.stderr + proc.stdout  # it serves no UI to link to
    log = tmp_path / "not-yet" / "home" / "temporary-server.log"  # its own output, not the run's
    assert f"port {found.group(1)}" in log.read_text()
    results = json.loads(next((tmp_path / "a").glob("al-*/results.json")).read_text())
    assert len(results["active_accuracy"]) == TINY["rounds"]
    assert results["run"]["flow_run_id"]


def test_temporary_server_dies_with_a_killed_cli(tmp_path):
    config = {**TINY, "artifacts_dir": str(tmp_path / "a")}
    cli = subprocess.Popen(
        [sys.executable, "-m", "flows.active_learning", *cli_args(config)],
        cwd=ROOT,
        env=_env_without_server(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while not (servers := _children(cli.pid)) and time.time() < deadline:
            time.sleep(0.05)
        assert servers, "the CLI started no server process"
        cli.send_signal(signal.SIGKILL)  # the CLI only: no atexit, no cleanup of its own
        cli.wait(timeout=10)
        deadline = time.time() + 15
        while any(_alive(pid) for pid in servers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in servers), "the server survived its killed parent"
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
