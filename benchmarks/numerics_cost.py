"""What the numeric settings (alcore/numerics.py) cost in speed, measured in one run.

    python -m benchmarks.numerics_cost [--pairs 3] [--pool 100000] [--out artifacts/numerics_cost.json]

Alternates fresh processes with the settings (the default) and without them
(``BAL_NUMERICS=host``: the host's own kernels and thread pools), so both see the
same machine load:

- the default experiment's stages end to end without Prefect (data, initial
  training, ECE calibration, 50 rounds, the passive baseline): what a ``make run``
  computes, with its three numbers (only the settings' run promises them);
- a round on a pool of 100,000 candidates (``benchmarks.pool_scale``: 20 features,
  5 classes), the median of the rounds after the first (which compiles).

Prints JSON: each process's seconds, the medians, and with/without ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sources
from benchmarks import ROOT, write_json

MODES = {"settings": {}, "host": {"BAL_NUMERICS": "host"}}


def default_experiment() -> dict:
    """The default experiment's stages in this process: seconds and its three numbers."""
    import numpy as np

    from alcore import stages as st
    from alcore.config import ExperimentConfig

    c = ExperimentConfig()
    t0 = time.perf_counter()
    data = sources.draw(c)
    passive = st.passive_baseline(c, data)
    initial = st.initial_training(c, data)
    calibration = st.calibrate(c, data, initial)
    state, x, y = initial.state, data.x_initial, data.y_initial
    record = None
    for r in range(1, c.rounds + 1):
        acquired = st.acquire(c, r, data, state, x, y, calibration.prior_prec)
        labels = st.labels_of(c, data, acquired)
        x, y = np.concatenate([x, acquired.points]), np.concatenate([y, np.asarray(labels, np.int32)])
        retrained = st.retrain(c, state, x, y, calibration.prior_prec)
        state = retrained.state
        record = st.evaluate(c, r, data, acquired, labels, retrained, x, y, calibration.prior_prec)
    return {
        "seconds": time.perf_counter() - t0,
        "prior_precision": round(calibration.prior_prec, 4),
        "active_accuracy_pct": round(100 * record.accuracy, 2),
        "passive_accuracy_pct": round(100 * passive.accuracy, 2),
    }


def _child(mode: str, args: list[str], out: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "BAL_NUMERICS"}
    env = {**env, **MODES[mode], "BAL_JAX_CACHE_DIR": "off"}  # every process compiles, as a first run does
    if mode == "host":  # the variables the settings put into this (parent) process
        from alcore import numerics

        for name in numerics.RECORDED:
            env.pop(name, None)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{mode} {args}: {proc.stderr[-2000:]}")
    return json.loads(out.read_text() if out else proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3, help="processes per mode for the default experiment")
    p.add_argument("--pool", type=int, default=100_000)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "numerics_cost.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(default_experiment()))
        return 0
    runs = {mode: [] for mode in MODES}
    for _ in range(args.pairs):
        for mode in MODES:
            runs[mode].append(_child(mode, ["-m", "benchmarks.numerics_cost", "--child"]))
    pool = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            out = Path(tmp) / f"{mode}.json"
            pool[mode] = _child(
                mode, ["-m", "benchmarks.pool_scale", "--pool", str(args.pool), "--rounds", "4", "--out", str(out)], out
            )
    medians = {mode: statistics.median(r["seconds"] for r in rs) for mode, rs in runs.items()}
    round_median = {mode: doc["round_seconds_after_the_first"] for mode, doc in pool.items()}
    result = {
        "default_experiment": {"runs": runs, "median_seconds": medians},
        "pool": {"size": args.pool, "round_median_seconds": round_median, "runs": pool},
        "ratios_settings_over_host": {
            "default_experiment": medians["settings"] / medians["host"],
            "pool_round": round_median["settings"] / round_median["host"],
        },
        "cpu_count": os.cpu_count(),
    }
    write_json(result, args.out)
    print(json.dumps({k: result[k] for k in ("ratios_settings_over_host", "cpu_count")} | {"medians": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
