"""One way to start a Prefect server here: ``prefect server start`` as a child process.

The CLI's temporary server, the tests' session server and the benchmarks' servers
are all :class:`PrefectServer` (the public command, on a loopback port, with its own
log file), so they start, wait and stop the same way.

The CLI starts its server early. When no API URL is configured, Prefect would start
a temporary server on the first API call: after the flow's own imports (about 3 s
here), it imports Prefect's server (about 2 s), then starts it and waits for it
(migrations, app start-up: 5-8 s). :func:`start_early` starts ``prefect server start
--no-ui`` before anything heavy is imported, so it boots on the second core while
this process imports JAX, flax, laplax and Prefect and compiles its JAX programs;
:func:`connected` then waits for it and points Prefect at it.

If the configuration turns out to name an API after all (a profile's
``PREFECT_API_URL``, which only Prefect can read), the early server is stopped and
Prefect's configuration is used. The server dies with this process (also on SIGKILL:
``PR_SET_PDEATHSIG``). This module imports nothing heavy (no Prefect, no httpx).
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
from pathlib import Path

PR_SET_PDEATHSIG = 1
# The CLI's server runs at a lower priority than the flow: on a 2-core machine it
# otherwise takes half a core for the task runs' events while the rounds compute, which
# slowed a round by about a third (measured: round median 183 -> 126 ms at nice 10).
NICE = int(os.environ.get("BAL_SERVER_NICE", "10"))
_RESTARTS = 3  # a server that exits at once on a free port (taken meanwhile) is moved this often
_LOG_LIMIT = 10 * 2**20  # a log file bigger than this is started afresh
_server: "PrefectServer | None" = None


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: stop() and the atexit handler still stop it
        pass


class PrefectServer:
    """``prefect server start`` on 127.0.0.1, in its own process group, with its log in a file.

    Args:
        home: Its ``PREFECT_HOME`` (database, settings); None: this process's.
        port: The port; None: a free one, chosen again if the first start exits
            at once (the port was taken meanwhile). Once it has answered, a
            restart (:meth:`start` after :meth:`kill` or :meth:`stop`) comes back
            on the same port, with the same database.
        ui: Serve the UI too. Its browser code is pointed at this port's API
            (``PREFECT_UI_API_URL``): without it, it calls port 4200.
        log_path: Where the server's output goes (default: ``home/server.log``).
        nice: Added to the server's niceness.
        die_with_parent: The server gets SIGTERM when this process ends, even by
            SIGKILL (``PR_SET_PDEATHSIG``). This runs Python in the forked child: only
            for a process that has no threads yet (JAX warns of deadlocks otherwise).
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        port: int | None = None,
        ui: bool = True,
        log_path: Path | None = None,
        nice: int = 0,
        die_with_parent: bool = False,
    ):
        if home is None and log_path is None:
            raise ValueError("a server needs a home or a log path")
        self.home = Path(home) if home is not None else None
        self.port = port or free_port()
        self._movable = port is None  # until it has answered once: a restart comes back on its port
        self.ui = ui
        self.log_path = Path(log_path) if log_path is not None else self.home / "server.log"
        self.nice = nice
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict:
        """The environment of a client of this server."""
        env = {**os.environ, "PREFECT_API_URL": self.api_url}
        if self.home is not None:
            env["PREFECT_HOME"] = str(self.home)
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        return env

    def launch(self) -> None:
        """Start the process; :meth:`wait_ready` waits for it to answer."""
        env = {**os.environ}
        env.pop("PREFECT_API_URL", None)  # the server's own settings, not a client's
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no internet here: errors only
        if self.home is not None:
            env["PREFECT_HOME"] = str(self.home)
        if self.ui:
            env["PREFECT_UI_API_URL"] = self.api_url
        # Prefect creates its home folder but not the folders above it: a home in a
        # folder that does not exist yet would stop the server with a database error
        home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
        home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        big = self.log_path.exists() and self.log_path.stat().st_size > _LOG_LIMIT
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        if not self.ui:
            command.append("--no-ui")
        with open(self.log_path, "wb" if big else "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: port {self.port}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() and kill() signal the group
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        if self.nice:
            os.setpriority(os.PRIO_PROCESS, self.process.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)

    def start(self, timeout: float = 120) -> float:
        """Start it and wait until it answers; returns the seconds that took."""
        self.launch()
        self.wait_ready(timeout)
        return time.monotonic() - self.started_at

    def healthy(self) -> bool:
        """Whether ``/api/health`` answers now."""
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> float:
        """Block until ``/api/health`` answers; returns the seconds waited here.

        A server on a port of its own choosing that exits at its first start (the
        port was taken meanwhile) is started again on another port, up to three times.

        Raises:
            RuntimeError: it exited (the end of its log is in the message), or did not
                answer within ``timeout`` seconds of its start (it is stopped then).
        """
        t0 = time.monotonic()
        deadline = self.started_at + timeout
        restarts = 0
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                if not self._movable or restarts == _RESTARTS:
                    raise RuntimeError(
                        f"the Prefect server exited with code {code} ({restarts} restarts); "
                        f"the end of its log, {self.log_path}:\n{self.log_tail()}"
                    )
                restarts += 1
                self.port = free_port()
                self.launch()
                continue
            if self.healthy():
                self._movable = False
                return time.monotonic() - t0
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; see {self.log_path}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(unreadable)"

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        if self.process is None:
            return
        process = self.process
        self._signal_group(signal.SIGKILL)
        process.wait()
        self.process = None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (the server shuts down its services), SIGKILL after ``timeout`` s."""
        if self.process is None:
            return
        process = self.process
        if process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                process.wait()
        self.process = None


def start_early() -> None:
    """Start the CLI's temporary server now unless ``PREFECT_API_URL`` is set in the environment."""
    global _server
    if _server is None and not os.environ.get("PREFECT_API_URL"):
        home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
        # its output goes to a file, not between the run's lines
        _server = PrefectServer(ui=False, log_path=home / "temporary-server.log", nice=NICE, die_with_parent=True)
        _server.launch()
        atexit.register(_server.stop, 5)  # registered before Prefect's own exit hooks: runs after them


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
        server.stop(5)  # a profile names the API: use it
        server = _server = None
    if server is None:
        yield
        return
    if while_waiting is not None:
        while_waiting()
    try:
        waited = server.wait_ready(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    except RuntimeError as e:
        raise RuntimeError(
            f"Prefect's temporary server: {e} (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        ) from None
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
