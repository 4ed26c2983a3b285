"""Where a Prefect task run's time goes: the stage tasks before and after the lean redesign.

    python -m benchmarks.task_overhead [--tasks 200] [--out artifacts/task_overhead.json]

One process, Prefect's temporary server, tasks that do no work, fed the stages' real
inputs (the tutorial's data, a model state with its Adam state, the labelled set):

- ``before``: the landed main's stage tasks: a ``cache_key_fn`` key, a persisted
  result (the stage's state, as the round tasks returned it), the big inputs passed
  as they are (Prefect traverses them to find upstream results), one retry;
- ``before_cached``: the same tasks again in a second flow run: every key hits, the
  persisted payload is read back (what a resume paid per stage);
- ``after``: this project's tasks: ``NO_CACHE``, no persisted result, big inputs
  wrapped in ``quote`` and the graph edge given by ``wait_for``.

Per variant: the median and mean wall time of a task call in the flow, and a
profile (cProfile, main thread) of where it goes, grouped by what Prefect does.
"""

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import sources
from benchmarks import write_json

ROOT = Path(__file__).resolve().parent.parent

# Prefect functions whose cumulative time is one part of a task run's cost.
PARTS = {
    "create the task run": ("_create_task_run_locally",),
    "traverse the parameters": ("collect_task_run_inputs_sync", "_resolve_parameters", "_infer_parent_task_runs"),
    "cache key and lookup": ("compute_transaction_key", "transaction_context"),
    "persist the result": ("handle_success",),
    "state events": ("emit_task_run_state_change_event",),
    "concurrency slots (tags)": ("concurrency",),
    "log lines": ("log_finished_message",),
}


def _inputs():
    from alcore import stages
    from alcore.config import ExperimentConfig

    cfg = ExperimentConfig(initial_epochs=2)
    data = sources.draw(cfg)
    state = stages.initial_training(cfg, data).state
    return data, state, data.x_initial, data.y_initial


def _profile_parts(stats: pstats.Stats, n: int) -> dict[str, float]:
    """Milliseconds per task run in each part (cumulative time of its functions)."""
    out = {}
    for part, names in PARTS.items():
        total = 0.0
        for (_, _, func), (_, _, _, cumulative, _) in stats.stats.items():
            if func in names:
                total += cumulative
        out[part] = 1000 * total / n
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "task_overhead.json"))
    p.add_argument("--variant", choices=("before", "after"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        return measure(args.variant, args.tasks)
    # Each variant in a process of its own, with its own temporary server (the
    # server's backlog of one variant's events must not slow the next), alternating.
    runs = {"before": [], "before_cached": [], "after": []}
    for _ in range(args.repeats):
        for variant in ("after", "before"):
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.task_overhead", "--variant", variant, "--tasks", str(args.tasks)],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )  # fmt: skip
            for name, figures in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                runs[name].append(figures)
    out = {"tasks_per_variant": args.tasks, "repeats": args.repeats, "variants": {}}
    for name, figures in runs.items():
        out["variants"][name] = {
            "median_ms": float(np.median([f["median_ms"] for f in figures])),
            "runs": figures,
        }
    v = out["variants"]
    out["after_over_before"] = v["after"]["median_ms"] / v["before"]["median_ms"]
    out["after_over_before_cached"] = v["after"]["median_ms"] / v["before_cached"]["median_ms"]
    write_json(out, args.out)
    print(json.dumps(out, indent=2))


def measure(variant: str, n_tasks: int) -> None:
    """One variant (``before`` also measures ``before_cached``) in this process."""
    tmp = tempfile.mkdtemp()
    os.environ["PREFECT_HOME"] = str(Path(tmp) / "home")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.utilities.annotations import quote

    data, state, x, y = _inputs()
    run_id = str(time.time())

    @task(
        name="before",
        task_run_name="round-{round_index:02d}/retrain",
        cache_key_fn=lambda ctx, params: f"bench-{run_id}-{params['round_index']}",
        persist_result=True,
        retries=1,
    )
    def before(round_index, data, state, x, y):
        return {"state": state, "losses": np.zeros(35), "seconds": 0.0}

    @task(name="after", task_run_name="round-{round_index:02d}/retrain", cache_policy=NO_CACHE, persist_result=False)
    def after(round_index, data, state, x, y):
        return {"state": state, "losses": np.zeros(35), "seconds": 0.0}

    @flow(name="task-overhead")
    def run(variant: str, n: int) -> list[float]:
        times, previous = [], None
        for r in range(1, n + 1):
            t0 = time.perf_counter()
            if variant == "after":
                previous = after(r, quote(data), quote(state), quote(x), quote(y), return_state=True,
                                 wait_for=[previous] if previous is not None else None)  # fmt: skip
                previous.result()
            else:
                before(r, data, state, x, y)
            times.append(time.perf_counter() - t0)
        return times

    # the temporary server starts, first calls warm up; always with the "after" tasks:
    # "before" warm-up calls would store the cache keys its measured calls then hit
    run("after", 3)
    out = {}
    names = ("before", "before_cached") if variant == "before" else ("after",)
    for name in names:
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.enable()
        times = run(variant, n_tasks)
        profile.disable()
        out[name] = {
            "median_ms": 1000 * float(np.median(times)),
            "mean_ms": 1000 * float(np.mean(times)),
            "flow_seconds": time.perf_counter() - t0,
            "profile_ms_per_task": _profile_parts(pstats.Stats(profile), n_tasks),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
