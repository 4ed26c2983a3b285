"""Sweep wall time: a 2-worker local Dask cluster vs the same experiments one after
another, in one invocation (both with every stage recomputed).

    python -m benchmarks.sweep_speed [--seeds 2] [--workers 2] [--out artifacts/sweep_speed.json]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks import write_json
from flows.sweep import DEFAULT_STRATEGIES, SweepConfig, sweep, task_runner_for

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "sweep_speed.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    out = {"experiments": len(DEFAULT_STRATEGIES) * args.seeds, "workers": args.workers, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        config = SweepConfig(seeds=list(range(args.seeds)), artifacts_dir=tmp, workers=args.workers)
        for mode, sequential in (("dask", False), ("sequential", True)):
            t0 = time.perf_counter()
            sweep.with_options(task_runner=task_runner_for(config, sequential=sequential))(config, refresh=True)
            out[f"{mode}_seconds"] = time.perf_counter() - t0
            print(f"{mode}: {out[f'{mode}_seconds']:.1f} s", flush=True)
    out["speedup"] = out["sequential_seconds"] / out["dask_seconds"]
    write_json(out, args.out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
