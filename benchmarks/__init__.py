"""Benchmarks (not tests): they print figures and write JSON.

Tests import nothing from here (they have their own tests/helpers.py): the small
helpers below are the benchmarks' own copies."""

import alcore  # noqa: F401, I001 - first: the numeric settings before NumPy and JAX load (alcore/numerics.py)
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_args(config: dict) -> list[str]:
    """The command-line flags that give ``flows.active_learning`` this configuration."""
    args = []
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


def write_json(document: dict, path: str | Path) -> None:
    """Write a benchmark's figures to ``path`` (folders created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def results(folder: str | Path) -> dict:
    """An experiment folder's ``results.json``."""
    return json.loads((Path(folder) / "results.json").read_text())


def comparable(doc: dict) -> dict:
    """What must be identical between runs of one configuration (timings and paths aside)."""
    doc = {k: v for k, v in doc.items() if k not in ("run", "files", "compute_seconds")}
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
