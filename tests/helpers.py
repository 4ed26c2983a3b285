"""What several tests share: tiny configurations, the CLI in a subprocess, a run's
results, a worker's start and stop, the functions XLA compiles.

Tests import no benchmark module (``tests/test_tiers.py`` checks it): a benchmark is
free to change what it measures. The benchmarks import these helpers from here.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from runtime.local_server import free_port  # noqa: F401 - the one copy, for the tests

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")

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


def folder_of(proc: subprocess.CompletedProcess) -> Path:
    """The experiment folder a successful CLI run printed."""
    assert proc.returncode == 0, f"flow failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("experiment folder: ")][-1]
    return Path(line.split(": ", 1)[1])


def results(folder: str | Path) -> dict:
    """An experiment folder's ``results.json``."""
    return json.loads((Path(folder) / "results.json").read_text())


def comparable(doc: dict) -> dict:
    """What must be identical between runs of one configuration (timings and paths aside:
    the artifact keys' prefix is a hash of the folder's path)."""
    doc = {k: v for k, v in doc.items() if k not in ("run", "files", "compute_seconds", "artifact_prefix")}
    doc["config"] = {k: v for k, v in doc["config"].items() if k != "artifacts_dir"}
    return doc


def start_worker(env: dict, log: str | Path, cwd: str | Path = ROOT) -> subprocess.Popen:
    """``prefect worker start --pool bal-pool`` in a session of its own (so
    :func:`stop_worker` reaches its flow runs too), its output in ``log``. SIGINT is
    restored to its default: a shell running this in the background ignores it."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "bal-pool"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def stop_worker(worker: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a ``prefect worker`` started in a session of its own: SIGINT to its process
    group (a worker ignores SIGTERM while it runs flows), SIGKILL after ``timeout`` s."""
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGINT)
    try:
        worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


class _Listener(logging.Handler):
    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Finished XLA compilation of" in message:
            self.names.append(message.split(" of ", 1)[1].split(" in ")[0])


@contextlib.contextmanager
def xla_compilations() -> Iterator[list[str]]:
    """Yield a list that fills with the names (``jit(f)``) of the functions XLA compiles
    until the block ends, from JAX's ``jax_log_compiles`` records."""
    import jax

    names: list[str] = []
    listener = _Listener(names)
    logger = logging.getLogger("jax")
    logger.addHandler(listener)
    jax.config.update("jax_log_compiles", True)
    try:
        yield names
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(listener)
