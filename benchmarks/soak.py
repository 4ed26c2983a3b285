"""Soak: back-to-back runs of the `smoke` deployment through one worker on a fresh server.

    python -m benchmarks.soak [--runs 20] [--db sqlite|postgres] [--fresh] [--out artifacts/soak.json]

Everything as an operator runs it: ``make server`` (a free port, a temporary
SERVER_HOME), ``make deploy``, ``make worker``, then one run of `smoke` at a time (its
parameters from prefect.yaml, outputs in a temporary folder), each waited for before
the next is created; ``make stop`` at the end. Every run must complete. After each run
it records the server database's size, the worker's RSS and its descendants' (count and
RSS, once the run's process has exited or a minute has passed: none should be left),
how long the run's process took to exit after its run was Completed, the peak RSS of
the run's processes, and whether every task run of the run reached the server
Completed (no dropped events); throughout, every API call a prober makes twice a
second (the slowest, and how many took over 5 s); at the end, the largest tables and
the "database is locked" lines in the server's log. With the same parameters
every run after the first finds its stages cached, as an hourly schedule would;
``--fresh`` gives each run another seed, so each computes everything.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from benchmarks import SLOW_SECONDS, Prober, free_port, task_runs_of, write_json

ROOT = Path(__file__).resolve().parent.parent


def _make(*args: str, env: dict) -> str:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"make {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0  # gone, or a zombie


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if stat[0] != "Z":
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _database_bytes(home: Path, db: str) -> int:
    if db == "sqlite":
        return sum(f.stat().st_size for f in home.glob("prefect.db*"))
    # PostgreSQL: the size of the `prefect` database as the server reports it
    psql = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1]
    command = [str(psql), "-X", "-h", str(home / "pg"), "-U", "prefect", "-d", "prefect", "-tAc"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    out = subprocess.run([*command, "SELECT pg_database_size('prefect')"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _largest_tables(home: Path, db: str, top: int = 8) -> dict[str, int]:
    """Bytes per table (indexes included), largest first: what the runs make grow."""
    if db == "sqlite":
        import sqlite3

        with sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True, timeout=30) as con:
            rows = con.execute(
                "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d"
                " LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
    else:
        psql = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1]
        command = [str(psql), "-X", "-h", str(home / "pg"), "-U", "prefect", "-d", "prefect", "-tAF", "|", "-c"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        query = "SELECT relname, pg_total_relation_size(relid) FROM pg_catalog.pg_statio_user_tables ORDER BY 2 DESC"
        out = subprocess.run([*command, query], capture_output=True, text=True, check=True).stdout
        rows = [(name, int(size)) for name, size in (line.split("|") for line in out.split())]
    return dict(rows[:top])


class _PatientClient(httpx.Client):
    """The soak's own API calls: retried on a timeout or a 503 (as Prefect's client
    does), with the slowest answer and the retries counted, since a stalled server is
    one of the things a soak is for."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.slowest, self.retries = 0.0, 0

    def request(self, *args, **kwargs) -> httpx.Response:
        for attempt in range(5):
            t0 = time.time()
            try:
                response = super().request(*args, **kwargs)
            except httpx.TimeoutException:
                self.retries += 1
                continue
            finally:
                self.slowest = max(self.slowest, time.time() - t0)
            if response.status_code != 503 or attempt == 4:
                return response
            self.retries += 1
            time.sleep(2**attempt)
        raise httpx.ReadTimeout(f"no answer in 5 attempts: {args}")


class _PeakSampler:
    """Samples the summed RSS of the worker's descendants (the run's processes)."""

    def __init__(self, worker_pid: int):
        self.worker_pid, self.peak_kb = worker_pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(0.25):
            total = sum(_rss_kb(p) for p in _descendants(self.worker_pid))
            self.peak_kb = max(self.peak_kb, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--fresh", action="store_true", help="another seed per run: every run computes every stage")
    p.add_argument("--timeout", type=float, default=600, help="seconds one run may take")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "soak.json"))
    args = p.parse_args(argv)

    smoke = next(d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"] if d["name"] == "smoke")
    home = Path(tempfile.mkdtemp(prefix="bal-soak-"))
    home.chmod(0o755)  # PostgreSQL runs as `postgres` when this runs as root
    outputs = home / "artifacts"
    port = free_port()
    make_args = [f"PORT={port}", f"SERVER_HOME={home / 'server'}", f"DB={args.db}"]
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MAKEFLAGS")}
    env.update(PREFECT_HOME=str(home / "client-home"), PREFECT_WORKER_QUERY_SECONDS="2")
    api = _PatientClient(base_url=f"http://127.0.0.1:{port}/api", timeout=30)
    doc = {
        "runs_requested": args.runs,
        "db": args.db,
        "fresh": args.fresh,
        "deployment": "smoke",
        "parameters": smoke["parameters"]["config"],
        "runs": [],
    }
    t_start = time.time()
    prober = Prober(f"http://127.0.0.1:{port}/api")
    try:
        _make("server", *make_args, env=env)
        _make("deploy", *make_args, env=env)
        _make("worker", *make_args, env=env)
        worker_pid = int((home / "server" / "worker.pid").read_text().split()[0])
        server_pid = int((home / "server" / "server.pid").read_text().split()[0])
        deployment = api.get("/deployments/name/active-learning/smoke").raise_for_status().json()["id"]
        doc["before"] = {
            "database_bytes": _database_bytes(home / "server", args.db),
            "worker_rss_kb": _rss_kb(worker_pid),
            "server_rss_kb": _rss_kb(server_pid),
        }
        prober.__enter__()
        for i in range(args.runs):
            config = {**smoke["parameters"]["config"], "artifacts_dir": str(outputs)}
            if args.fresh:
                config["seed"] = 1000 + i
            sampler = _PeakSampler(worker_pid)
            api.slowest, api.retries = 0.0, 0
            t0 = time.time()
            run_id = api.post(f"/deployments/{deployment}/create_flow_run", json={"parameters": {"config": config}})
            run_id = run_id.raise_for_status().json()["id"]
            while True:
                run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
                if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                if time.time() - t0 > args.timeout:
                    raise RuntimeError(f"run {i + 1} ({run_id}) not finished after {args.timeout:.0f} s")
                time.sleep(0.5)
            wall = time.time() - t0
            peak = sampler.stop()
            # The run's process reports Completed before it exits (Prefect joins its
            # threads at exit): give it up to a minute, and record how long it took.
            t_done = time.time()
            while (left := _descendants(worker_pid)) and time.time() - t_done < 60:
                time.sleep(0.2)
            exit_lag = time.time() - t_done
            task_runs = task_runs_of(f"http://127.0.0.1:{port}/api", run_id)
            record = {
                "run": i + 1,
                "state": run["state_type"],
                "wall_seconds": round(wall, 2),
                "flow_run_seconds": round(run["total_run_time"], 2),
                "database_bytes": _database_bytes(home / "server", args.db),
                "worker_rss_kb": _rss_kb(worker_pid),
                "run_process_exit_after_completed_seconds": round(exit_lag, 2),
                "worker_children_left": len(left),
                "worker_children_rss_kb": sum(_rss_kb(p) for p in left),
                "run_processes_peak_rss_kb": peak,
                "server_rss_kb": _rss_kb(server_pid),
                "api_slowest_answer_seconds": round(api.slowest, 2),
                "api_retries": api.retries,
                "task_runs": len(task_runs),
                "task_runs_not_completed": sum(t["state_type"] != "COMPLETED" for t in task_runs),
            }
            doc["runs"].append(record)
            print(json.dumps(record), flush=True)
            if run["state_type"] != "COMPLETED":
                raise RuntimeError(f"run {i + 1} ({run_id}) ended {run['state_type']}: {run['state']['message']}")
        doc["largest_tables_bytes"] = _largest_tables(home / "server", args.db)
        server_log = home / "server" / "server.log"
        log_lines = server_log.read_text(errors="replace").splitlines() if server_log.exists() else None
        locked = None if log_lines is None else [i for i, line in enumerate(log_lines) if "database is locked" in line]
        doc["database_is_locked_lines"] = None if locked is None else len(locked)
        # where they came from: the lines before each (the logger, the service)
        doc["database_is_locked_context"] = [log_lines[max(0, i - 60) : i + 1] for i in (locked or [])[:2]]
    except Exception as e:
        doc["error"] = f"{type(e).__name__}: {e}"
        for name in ("server.log", "worker.log"):
            log = home / "server" / name
            if log.exists():
                doc[f"{name.replace('.', '_')}_tail"] = log.read_text(errors="replace").splitlines()[-60:]
        raise
    finally:
        prober.__exit__(None, None, None)
        doc["api_prober"] = prober.summary()
        doc["stop"] = _make("stop", *make_args, env=env).strip().splitlines()
        doc["total_seconds"] = round(time.time() - t_start, 1)
        runs = doc["runs"]
        if runs:
            first, last = runs[0], runs[-1]
            doc["summary"] = {
                "completed": sum(r["state"] == "COMPLETED" for r in runs),
                "database_growth_bytes_per_run_after_the_first": (
                    (last["database_bytes"] - first["database_bytes"]) / (len(runs) - 1) if len(runs) > 1 else None
                ),
                "worker_rss_kb_first_last": [first["worker_rss_kb"], last["worker_rss_kb"]],
                "server_rss_kb_first_last": [first["server_rss_kb"], last["server_rss_kb"]],
                "max_worker_children_left": max(r["worker_children_left"] for r in runs),
                "api_slowest_answer_seconds": max(r["api_slowest_answer_seconds"] for r in runs),
                "api_retries": sum(r["api_retries"] for r in runs),
                "median_wall_seconds": sorted(r["wall_seconds"] for r in runs)[len(runs) // 2],
                "task_runs_not_completed": sum(r["task_runs_not_completed"] for r in runs),
                "api_prober_slowest_seconds": doc["api_prober"]["slowest_seconds"],
                f"api_prober_calls_over_{SLOW_SECONDS:g}_s": doc["api_prober"][f"over_{SLOW_SECONDS:g}_s"],
                "database_is_locked_lines": doc.get("database_is_locked_lines"),
            }
        write_json(doc, args.out)
        api.close()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(doc.get("summary", {}), indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
