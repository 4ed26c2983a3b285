"""Prefect's temporary local server, started before the command line's heavy imports.

When no API URL is configured, Prefect starts a temporary server on the first API
call: the process first imports Prefect's server (about 2 s here), then starts it in
a subprocess and waits for it (migrations, app start-up: 5-8 s), all after the
flow's own imports (about 3 s). This module starts the same server (the same
``uvicorn`` command and environment as ``prefect.server.api.server.
SubprocessASGIServer``) before anything heavy is imported, so it boots on the second
core while this process imports JAX, flax, laplax and Prefect and compiles its JAX
programs; :func:`connected` then waits for it and points Prefect at it.

If the configuration turns out to name an API after all (a profile's
``PREFECT_API_URL``, which only Prefect can read), the early server is stopped and
Prefect's configuration is used. The server dies with this process (also on SIGKILL:
``PR_SET_PDEATHSIG``).
"""

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

PR_SET_PDEATHSIG = 1
# The server runs at a lower priority than the flow: on a 2-core machine it otherwise
# takes half a core for the task runs' events while the rounds compute, which slowed
# a round by about a third (measured: round median 183 -> 126 ms at nice 10).
NICE = int(os.environ.get("BAL_SERVER_NICE", "10"))
_RESTARTS = 3
_server: "TemporaryServer | None" = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the atexit handler still stops it
        pass
    if NICE:
        os.nice(NICE)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """One ``uvicorn`` process serving Prefect's API (no UI) on a free loopback port."""

    def __init__(self, log_path: Path):
        self.port = 0
        self.process: subprocess.Popen | None = None
        # The server's own output (its services' errors under load, the tracebacks of
        # its shutdown) goes to a file, not between the run's lines
        self.log_path = log_path
        big = log_path.exists() and log_path.stat().st_size > 10 * 2**20
        self.log = open(log_path, "wb" if big else "ab")  # noqa: SIM115 - open for the server's lifetime
        self.started_at = time.monotonic()
        self._launch()
        atexit.register(self.stop)  # registered before Prefect's own exit hooks: runs after them

    def _launch(self) -> None:
        self.port = _free_port()
        spec = find_spec("prefect")
        if spec is None or spec.origin is None:
            raise RuntimeError("prefect is not installed")
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: port {self.port}\n".encode())
        self.log.flush()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(spec.origin).parent.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float) -> float:
        """Block until ``/api/health`` answers; returns the seconds waited here.

        A server that exits early (e.g. its port was taken meanwhile) is restarted on
        another port up to three times.
        """
        t0 = time.monotonic()
        restarts = 0
        while time.monotonic() - self.started_at < timeout:
            code = self.process.poll()
            if code is not None:
                if restarts == _RESTARTS:
                    raise RuntimeError(
                        f"Prefect's temporary server exited with code {code} ({restarts} restarts); "
                        f"the end of its log, {self.log_path}:\n{self._log_tail()}"
                    )
                restarts += 1
                self._launch()
                continue
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"Prefect's temporary server did not answer within {timeout:.0f} s "
            "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(unreadable)"

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.log.close()


def start_early() -> None:
    """Start the server now unless ``PREFECT_API_URL`` is set in the environment."""
    global _server
    if _server is None and not os.environ.get("PREFECT_API_URL"):
        # Prefect creates its home folder but not the folders above it: a PREFECT_HOME in
        # a folder that does not exist yet would stop the server with a database error
        home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
        home.mkdir(parents=True, exist_ok=True)
        _server = TemporaryServer(home / "temporary-server.log")


@contextmanager
def connected(while_waiting: Callable[[], object] | None = None) -> Iterator[None]:
    """Prefect pointed at the early server (waiting for it), or unchanged if there is
    none or Prefect's own configuration names an API.

    ``while_waiting`` runs first when there is a server to wait for: work worth doing
    while it boots (the CLI compiles its JAX programs there).
    """
    from prefect.logging import get_logger
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        PREFECT_UI_URL,
        temporary_settings,
    )

    global _server
    server = _server
    if server is not None and PREFECT_API_URL.value():
        server.stop()  # a profile names the API: use it
        server = _server = None
    if server is None:
        yield
        return
    if while_waiting is not None:
        while_waiting()
    waited = server.wait_ready(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    get_logger("prefect").info(
        "Temporary server on %s (started %.1f s ago, waited %.1f s for it)",
        server.api_url,
        time.monotonic() - server.started_at,
        waited,
    )
    # No UI is served (as with Prefect's own temporary server): no "View at" links to it.
    # No heartbeats either: they tell a server that a run's process is alive, and this
    # server dies with the process (the heartbeat thread cost up to 1 s at a run's end).
    updates = {PREFECT_API_URL: server.api_url, PREFECT_UI_URL: "", "flows.heartbeat_frequency": None}
    with temporary_settings(updates=updates):
        yield
