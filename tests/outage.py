"""A real Prefect server lost in the middle of a CLI run: the slow tests of
``tests/test_resilience.py``.

``python -m benchmarks.lost_server`` measures the same scenarios; this is the tests'
own copy of its driver (tests import no benchmark module), taken from
``benchmarks/lost_server.py``: keep the two in step when Prefect's start-up changes.
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers import ROOT, cli_args, free_port, results

# Tiny problem, many epochs per round: the loop lasts long enough (30+ s on 2 cores) to
# lose the server in the middle of it.
CONFIG = {
    "seed": 7,
    "rounds": 40,
    "grid_size": 20,
    "n_initial": 12,
    "n_calibration": 10,
    "initial_epochs": 60,
    "epochs_per_round": 1500,
    "calibration_grid_size": 8,
    "mc_samples": 8,
}


@dataclass
class PrefectServer:
    """``prefect server start`` in its own process group, restartable on the same port
    with the same PREFECT_HOME (so the same SQLite database)."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def env(self) -> dict:
        """The environment of a client of this server."""
        env = {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url}
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        return env

    def start(self, timeout: float = 120) -> float:
        """Start it and wait until healthy; returns the seconds that took."""
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "PREFECT_UI_API_URL": self.api_url}
        env.pop("PREFECT_API_URL")
        prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
        with open(self.home / "server.log", "a") as log:
            self.process = subprocess.Popen(
                [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while time.monotonic() - t0 < timeout:
            if self.process.poll() is not None:
                tail = (self.home / "server.log").read_text()[-3000:]
                raise RuntimeError(f"prefect server exited with {self.process.returncode}:\n{tail}")
            if self.healthy():
                return time.monotonic() - t0
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"prefect server did not become healthy within {timeout:.0f} s")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and its services), as a crash."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


class Cli:
    """The CLI in a subprocess, as a user runs it; its output goes to files (a pipe
    nobody reads while the run lasts could fill up and block it)."""

    def __init__(self, env: dict, config: dict, logs: Path):
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "stdout.txt", logs / "stderr.txt"
        self.started = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.active_learning", *cli_args(config)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = 600) -> float:
        """Wait for the exit; returns its time (monotonic). Kills the CLI on timeout."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        return time.monotonic()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


def wait_for_round(artifacts: Path, round_index: int, cli: Cli, timeout: float = 300) -> Path:
    """The experiment folder once ``round_index`` is saved (the CLI must still run)."""
    deadline = time.monotonic() + timeout
    name = f"round-{round_index:03d}.joblib"
    while time.monotonic() < deadline:
        found = list(artifacts.glob(f"al-*/rounds/{name}"))
        if found:
            return found[0].parent.parent
        if not cli.running():
            raise RuntimeError(f"the CLI exited ({cli.returncode}) before round {round_index}:\n{cli.stderr[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"round {round_index} not saved within {timeout:.0f} s")


def saved_rounds(folder: Path) -> int:
    return len(list((folder / "rounds").glob("round-*.joblib")))


def rounds_cached(doc: dict) -> int:
    """Rounds the run restored from the experiment folder instead of computing them."""
    return sum(name.startswith("round-") for name in doc["run"]["restored"])


def clean_run(workdir: Path, config: dict) -> dict:
    """An uninterrupted run on a server of its own: wall seconds and results."""
    server = PrefectServer(workdir / "clean" / "server")
    server.start()
    try:
        artifacts = workdir / "clean" / "artifacts"
        cli = Cli(server.env, {**config, "artifacts_dir": str(artifacts)}, workdir / "clean" / "cli")
        t_exit = cli.wait()
        assert cli.returncode == 0, cli.stderr[-3000:]
        return {"seconds": t_exit - cli.started, "results": results(next(artifacts.glob("al-*")))}
    finally:
        server.stop()


def restart_scenario(workdir: Path, config: dict, *, outage: float, kill_after_round: int = 3) -> dict:
    """Kill the server after round ``kill_after_round``; start it again ``outage`` s
    after the kill (on the same port and database) and let the CLI finish."""
    base = workdir / "restart"
    server = PrefectServer(base / "server")
    server.start()
    artifacts = base / "artifacts"
    try:
        cli = Cli(server.env, {**config, "artifacts_dir": str(artifacts)}, base / "cli")
        folder = wait_for_round(artifacts, kill_after_round, cli)
        t_kill = time.monotonic()
        server.kill()
        saved = saved_rounds(folder)
        time.sleep(max(0.0, outage - (time.monotonic() - t_kill)))
        restart_seconds = server.start()
        t_back = time.monotonic()
        # rounds report through Prefect's event stream, which buffers while the server
        # is down: the loop goes on, and only API calls that block (a subflow's end, the
        # flow run's own state) wait for the server. The next round file, if any, shows
        # when the loop moves again.
        at_back = saved_rounds(folder)
        while saved_rounds(folder) == at_back and cli.running():
            time.sleep(0.05)
        t_next = time.monotonic()
        t_exit = cli.wait()
        err = cli.stderr
        return {
            "api_url": server.api_url,
            "folder": str(folder),
            "returncode": cli.returncode,
            "seconds": t_exit - cli.started,
            "server_down_seconds": t_back - t_kill,
            "server_start_seconds": restart_seconds,
            "rounds_saved_at_kill": saved,
            "rounds_saved_while_down": at_back - saved,
            "next_round_after_server_back_seconds": t_next - t_back,
            # seen twice in ~10 restarts: the restarted SQLite server answers, then accepts
            # connections without answering for ~50 s ("database is locked" in its log)
            "server_busy_after_restart": "(no answer within" in err,
            "exit_after_server_back_seconds": t_exit - t_back,
            "stderr_lines": len(err.splitlines()),
            "stderr_tracebacks": err.count("Traceback"),
            "stderr": err,
            "stdout": cli.stdout,
            "results": results(folder) if (folder / "results.json").exists() else None,
        }
    finally:
        server.stop()


def lost_scenario(workdir: Path, config: dict, *, kill_after_round: int = 3, timeout: float = 600) -> dict:
    """Kill the server for good after round ``kill_after_round`` and time the CLI's
    exit; then start the server again and re-run the same command."""
    base = workdir / "lost"
    server = PrefectServer(base / "server")
    server.start()
    artifacts = base / "artifacts"
    conf = {**config, "artifacts_dir": str(artifacts)}
    try:
        cli = Cli(server.env, conf, base / "cli")
        folder = wait_for_round(artifacts, kill_after_round, cli)
        t_kill = time.monotonic()
        server.kill()
        t_exit = cli.wait(timeout)
        err = cli.stderr
        saved = saved_rounds(folder)
        server.start()
        again = Cli(server.env, conf, base / "cli-again")
        t_again = again.wait()
        return {
            "api_url": server.api_url,
            "folder": str(folder),
            "command": shlex.join([sys.executable, "-m", "flows.active_learning", *cli_args(conf)]),
            "returncode": cli.returncode,
            "exit_after_kill_seconds": t_exit - t_kill,
            "rounds_saved": saved,
            "stderr_lines": len(err.splitlines()),
            "stderr_tracebacks": err.count("Traceback"),
            "stderr_last_line": err.strip().splitlines()[-1] if err.strip() else "",
            "stderr": err,
            "resume_returncode": again.returncode,
            "resume_seconds": t_again - again.started,
            "resume_stderr": again.stderr,
            "results": results(folder) if again.returncode == 0 else None,
        }
    finally:
        server.stop()
