"""A large pool: one round (acquire, retrain, evaluate) on 100,000 candidates, d = 20, C = 5.

    python -m benchmarks.pool_scale [--pool 100000] [--rounds 4] [--strategy max_std]

The stages' own functions (no Prefect), on a synthetic ``blobs`` problem whose pool
(after the seeded test split) has ``--pool`` points. The first round compiles;
later rounds must not (the pool never shrinks physically: labelled points are
excluded from the picks). Prints JSON: the seconds of each round and of its parts,
the compilations per round, and the process's peak resident memory, also measured
before the first round (what the data alone take).
"""

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

import sources
from alcore import stages
from alcore.config import ExperimentConfig
from benchmarks import write_json
from benchmarks.compiles import xla_compilations

ROOT = Path(__file__).resolve().parent.parent


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=int, default=100_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--strategy", default="max_std")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "pool_scale.json"))
    args = p.parse_args(argv)
    test_fraction = 0.2
    total = int(round((args.pool + 20) / (1 - test_fraction)))
    config = ExperimentConfig(
        data="blobs",
        pool_size=total,
        n_features=args.features,
        n_classes=args.classes,
        test_fraction=test_fraction,
        acquisition=args.strategy,
        initial_epochs=200,
        rounds=args.rounds,
    )
    t0 = time.perf_counter()
    data = sources.draw(config)
    out = {"pool": len(data.pool), "test": len(data.x_test), "features": data.n_features, "classes": data.n_classes}
    out["data_seconds"] = time.perf_counter() - t0
    out["peak_mb_with_data"] = peak_mb()
    t0 = time.perf_counter()
    initial = stages.initial_training(config, data)
    calibration = stages.calibrate(config, data, initial)
    out["initial_and_calibration_seconds"] = time.perf_counter() - t0
    state, x, y, labelled = initial.state, data.x_initial, data.y_initial, []
    rounds = []
    with xla_compilations() as compiled:
        for r in range(1, args.rounds + 1):
            before = len(compiled)
            t = [time.perf_counter()]
            acquired = stages.acquire(config, r, data, state, x, y, calibration.prior_prec, labelled)
            t.append(time.perf_counter())
            labels = stages.labels_of(config, data, acquired)
            x, y = np.concatenate([x, acquired.points]), np.concatenate([y, labels])
            retrained = stages.retrain(config, state, x, y, calibration.prior_prec)
            t.append(time.perf_counter())
            record = stages.evaluate(config, r, data, acquired, labels, retrained, x, y, calibration.prior_prec)
            t.append(time.perf_counter())
            state, labelled = retrained.state, [*labelled, *acquired.indices]
            rounds.append(
                {
                    "seconds": t[-1] - t[0],
                    "acquire": t[1] - t[0],
                    "retrain": t[2] - t[1],
                    "evaluate": t[3] - t[2],
                    "compilations": len(compiled) - before,
                    "test_accuracy": record.accuracy,
                }
            )
            print(json.dumps({"round": r, **rounds[-1]}), flush=True)
    out["rounds"] = rounds
    later = rounds[1:] or rounds
    out["round_seconds_after_the_first"] = float(np.median([r["seconds"] for r in later]))
    out["compilations_after_the_first_round"] = sum(r["compilations"] for r in rounds[1:])
    out["peak_mb"] = peak_mb()
    out["targets"] = {
        "one round <= 2 s": out["round_seconds_after_the_first"] <= 2.0,
        "no compilation after the first round": out["compilations_after_the_first_round"] == 0,
    }
    write_json(out, args.out)
    print(json.dumps({k: v for k, v in out.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
