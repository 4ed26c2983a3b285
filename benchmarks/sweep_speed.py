"""Sweep wall time: a 2-worker local Dask cluster against the same experiments one
after another, on one real Prefect server, in one invocation; where the time goes.

    python -m benchmarks.sweep_speed [--seeds 2] [--strategies ...] [--label-budget 50]
        [--db sqlite|postgres] [--set FIELD=VALUE ...] [--out artifacts/sweep_speed.json]

Each mode is a whole ``python -m flows.sweep`` process (cluster start included),
every stage recomputed (``--refresh``), against one server this benchmark starts
with ``make server`` (SQLite, or PostgreSQL with ``--db postgres``) and stops. Per
mode: the wall time; the experiments' own flow time (summed, and per worker); and
the profile of what is outside the experiments' flows: the sweep's start until the
first experiment starts (process and cluster start, imports), each experiment's
time outside its flow run (subflow creation and teardown, worker-side imports and
compilation), the workers' idle time, and the end (aggregation, report, cluster
shutdown). The server's log is searched for "database is locked".
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import free_port, write_json

ROOT = Path(__file__).resolve().parent.parent


def make(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def profile(doc: dict, wall: float, started: float, workers: int) -> dict:
    """Where the sweep's wall time goes outside the experiments' own flows."""
    exps = doc["experiments"]
    first = min(e["started_at"] for e in exps)
    last = max(e["finished_at"] for e in exps)
    flows = sum(e["flow_seconds"] for e in exps)
    in_tasks = sum(e["finished_at"] - e["started_at"] for e in exps)
    by_worker: dict[int, list] = {}
    for e in exps:
        by_worker.setdefault(e["worker_pid"], []).append(e)
    busy = {pid: sum(e["finished_at"] - e["started_at"] for e in es) for pid, es in by_worker.items()}
    span = last - first
    return {
        "wall_seconds": wall,
        "experiments": len(exps),
        "workers_used": len(by_worker),
        "experiments_flow_seconds_sum": flows,
        "experiments_flow_seconds_per_worker": flows / max(1, workers),
        "start_until_first_experiment_seconds": first - started,
        "outside_the_flow_inside_the_experiment_task_seconds_sum": in_tasks - flows,
        "workers_idle_between_experiments_seconds": sum(span - b for b in busy.values()),
        "after_the_last_experiment_seconds": wall - (last - started),
    }


def run_mode(env: dict, tmp: Path, mode: str, args) -> dict:
    folder = tmp / mode
    cmd = [sys.executable, "-m", "flows.sweep", "--seeds", str(args.seeds), "--strategies", args.strategies,
           "--label-budget", str(args.label_budget), "--artifacts-dir", str(folder), "--refresh",
           *[f"--set={s}" for s in args.set]]  # fmt: skip
    cmd += ["--sequential"] if mode == "sequential" else ["--workers", str(args.workers)]
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    doc = json.loads(next(folder.glob("sweep-*/results.json")).read_text())
    return {
        **profile(doc, wall, started, 1 if mode == "sequential" else args.workers),
        "final": {f"{e['strategy']}/{e['seed']}": e["final_accuracy"] for e in doc["experiments"]},
        "temporary_servers_started": (proc.stdout + proc.stderr).count("Temporary server on"),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--strategies", default="max_std,sampled,entropy,bald,margin,random")
    p.add_argument("--label-budget", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "sweep_speed.json"))
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bal-sweep-speed-"))
    os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user and must reach its folder
    port = free_port()
    server_args = [f"PORT={port}", f"SERVER_HOME={tmp / 'server'}", f"DB={args.db}"]
    env = {**os.environ, "PREFECT_HOME": str(tmp / "client")}
    env.pop("PREFECT_API_URL", None)
    up = make("server", *server_args, env=env)
    if up.returncode != 0:
        raise RuntimeError(up.stdout + up.stderr)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    out = {"db": args.db, "seeds": args.seeds, "strategies": args.strategies, "label_budget": args.label_budget,
           "workers": args.workers, "cpus": os.cpu_count()}  # fmt: skip
    try:
        for mode in ("dask", "sequential"):
            out[mode] = run_mode(env, tmp, mode, args)
            print(mode, json.dumps({k: v for k, v in out[mode].items() if k != "final"}), flush=True)
    finally:
        make("stop", *server_args, env=env)
        log = (tmp / "server" / "server.log").read_text() if (tmp / "server" / "server.log").exists() else ""
        out["database_is_locked_lines"] = log.count("database is locked")
        shutil.rmtree(tmp, ignore_errors=True)
    out["speedup"] = out["sequential"]["wall_seconds"] / out["dask"]["wall_seconds"]
    out["same_results"] = out["dask"]["final"] == out["sequential"]["final"]
    out["throughput_experiments_per_minute"] = {
        mode: 60 * out[mode]["experiments"] / out[mode]["wall_seconds"] for mode in ("dask", "sequential")
    }
    write_json(out, args.out)
    print(json.dumps({k: out[k] for k in ("speedup", "same_results", "database_is_locked_lines")}, indent=2))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
