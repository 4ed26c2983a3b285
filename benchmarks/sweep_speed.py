"""Sweep speed against its math, worker scaling, and the server under the sweep's load.

    python -m benchmarks.sweep_speed [--seeds 10] [--strategies max_std,...] [--label-budget 50]
        [--workers 2,1] [--set FIELD=VALUE ...] [--out artifacts/sweep_speed.json] [--probe-only]

In one invocation: the same sweep (the default one unless told otherwise: 10 seeds x
6 strategies, every stage recomputed) on a local Dask cluster of each worker count,
each against a fresh SQLite Prefect server started the way the command line starts
its temporary one (the one launcher, niced), and one default experiment through the
command line against it. Printed as JSON:

- per sweep: its wall time; the math inside it (every stage's compute seconds, summed)
  and the ratio; the CPU time of the sweep's processes, user and system (the system
  time gave away Dask's allocator setting: docs/sweeps.md#speed); the server while the
  sweep ran: every API call a prober made twice a second (``/health`` and a database
  read), the slowest and how many took over 5 s, "database is locked" lines in its
  log, and whether every experiment's task run reached it Completed (none dropped);
- the speed-up of the most workers over one, the same math's cost with every worker
  busy against one (``math_all_over_one``), and whether every count gave the same
  numbers;
- a core probe: one register-bound loop alone, then one per worker at once (about 2x
  slower: the vCPUs share execution units, and no worker count can scale; about 1x:
  they share only caches and memory);
- the single experiment: a round in the flow (its task runs and bookkeeping) against
  the round's compute, medians.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT, Prober, task_runs_of, write_json
from flows.sweep import DEFAULT_STRATEGIES
from runtime.local_server import NICE, PrefectServer

# An integer loop that stays in a core's registers and L1: no memory traffic.
_SPIN = (
    "import time\nt = time.perf_counter(); x = 0\n"
    "for _ in range(25_000_000): x = (x * 1103515245 + 12345) & 0xFFFFFFFF\n"
    "print(time.perf_counter() - t)"
)


def core_probe(processes: int) -> dict:
    """The same register-bound loop in one process, then in ``processes`` at once: the
    slowdown says whether the cores share execution units (SMT siblings: about 2x) or
    only caches and memory (about 1x). With about 1x, whatever the sweep's math loses
    with every worker busy (``math_all_over_one``) is cache and memory contention."""

    def spin(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(proc.communicate()[0]) for proc in procs]

    alone = spin(1)[0]
    together = spin(processes)
    return {"alone_seconds": alone, "together_seconds": together, "slowdown": max(together) / alone}


def math_seconds(experiment: dict) -> float:
    """Every stage's compute seconds of one experiment (restored stages count 0)."""
    c = experiment.get("compute_seconds") or {}
    parts = [c.get("initial_training"), c.get("calibration"), c.get("passive"), *(c.get("rounds") or [])]
    return sum(p for p in parts if p)


def run_sweep(tmp: Path, workers: int, args) -> dict:
    server = PrefectServer(tmp / f"server-{workers}", ui=False, nice=NICE)
    server.start()
    folder = tmp / f"sweep-{workers}"
    cmd = [sys.executable, "-m", "flows.sweep", "--seeds", str(args.seeds), "--strategies", args.strategies,
           "--label-budget", str(args.label_budget), "--artifacts-dir", str(folder), "--refresh",
           "--workers", str(workers), *[f"--set={s}" for s in args.set]]  # fmt: skip
    try:
        with Prober(server.api_url) as prober:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=server.env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
        doc = json.loads(next(folder.glob("sweep-*/results.json")).read_text())
        recorded = task_runs_of(server.api_url, doc["flow_run_id"])
    finally:
        server.stop()
    experiments = [e for e in recorded if e["name"].startswith("experiment/")]
    math = sum(math_seconds(e) for e in doc["experiments"])
    return {
        "workers": workers,
        "wall_seconds": wall,
        "experiments": len(doc["experiments"]),
        "rounds": sum(e["rounds"] for e in doc["experiments"]),
        "math_seconds": math,
        "wall_over_math_per_worker": wall / (math / workers) if math else None,
        # the sweep's processes (itself, its Dask workers): system time is the kernel's
        # work, e.g. page faults of memory mapped afresh every round
        "cpu_user_seconds": after.ru_utime - before.ru_utime,
        "cpu_system_seconds": after.ru_stime - before.ru_stime,
        "api": prober.summary(),
        "database_is_locked_lines": server.log_path.read_text(errors="replace").count("database is locked"),
        "experiment_task_runs_completed": sum(e["state_type"] == "COMPLETED" for e in experiments),
        "final": {f"{e['strategy']}/{e['seed']}": e["final_accuracy"] for e in doc["experiments"]},
    }


def single_experiment(tmp: Path) -> dict:
    """The default experiment through the command line: a round in the flow against its compute."""
    server = PrefectServer(tmp / "server-single", ui=False, nice=NICE)
    server.start()
    try:
        cmd = [sys.executable, "-m", "flows.active_learning", "--artifacts-dir", str(tmp / "single"), "--refresh"]
        proc = subprocess.run(cmd, cwd=ROOT, env=server.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    finally:
        server.stop()
    doc = json.loads(next((tmp / "single").glob("al-*/results.json")).read_text())
    in_flow = statistics.median(doc["run"]["round_seconds"].values())
    compute = statistics.median(doc["compute_seconds"]["rounds"])
    return {"round_in_flow_seconds": in_flow, "round_compute_seconds": compute, "ratio": in_flow / compute}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    p.add_argument("--label-budget", type=int, default=50)
    p.add_argument("--workers", default="2,1", help="worker counts, comma-separated")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--no-single", action="store_true", help="skip the single experiment")
    p.add_argument("--probe-only", action="store_true", help="only the core probe (a few seconds)")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "sweep_speed.json"))
    args = p.parse_args(argv)
    out = {
        "seeds": args.seeds,
        "strategies": args.strategies,
        "label_budget": args.label_budget,
        "cpus": os.cpu_count(),
    }
    counts = [int(w) for w in args.workers.split(",")]
    out["core_probe"] = core_probe(max(counts))
    print(json.dumps({"core_probe": out["core_probe"]}), flush=True)
    if args.probe_only:
        return
    with tempfile.TemporaryDirectory(prefix="bal-sweep-speed-") as tmp:
        sweeps = []
        for workers in counts:
            sweeps.append(run_sweep(Path(tmp), workers, args))
            print(json.dumps({k: v for k, v in sweeps[-1].items() if k != "final"}), flush=True)
        if not args.no_single:
            out["single_experiment"] = single_experiment(Path(tmp))
    out["sweeps"] = sweeps
    one = next((s for s in sweeps if s["workers"] == 1), None)
    most = max(sweeps, key=lambda s: s["workers"])
    if one is not None and most is not one:
        out["speedup"] = {f"{most['workers']}_over_1": one["wall_seconds"] / most["wall_seconds"]}
        # the same math, all workers busy against one: what sharing the machine costs it
        out["math_all_over_one"] = most["math_seconds"] / one["math_seconds"]
    out["same_results"] = all(s["final"] == sweeps[0]["final"] for s in sweeps)
    write_json(out, args.out)
    print(json.dumps({k: out[k] for k in out if k != "sweeps"}, indent=2))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
