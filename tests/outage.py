"""A real Prefect server lost in the middle of a CLI run: the slow tests of
``tests/test_resilience.py``.

``python -m benchmarks.lost_server`` measures the same scenarios with this driver (a
benchmark may import the tests' helpers; tests import no benchmark module).
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.local_server import PrefectServer  # the one launcher
from tests.helpers import ROOT, cli_args, results

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
