"""The active-learning experiment as one Prefect flow, and its command line.

    python -m flows.active_learning [--rounds N] [--grid-size G] [--seed S]
        [--acquisition max_std|sampled] [--artifacts-dir DIR] [--refresh] [--status] ...

The flow: data -> initial training -> calibration -> rounds (acquire, label, retrain,
evaluate) -> report, with the passive baseline as a subflow running beside the loop.
Every stage is cached by (configuration hash, stage, round, code version): the same
command after an interruption resumes from the first unfinished stage.
"""

import os
import sys

# This machine has no internet: the server's telemetry would only log errors.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

if __name__ == "__main__":
    # Validate the input first (light imports), then start Prefect's temporary server
    # before the heavy imports below, so it boots while they run (flows/local_server.py).
    from flows import cli, local_server

    if not cli.parse_config()[1].status:
        local_server.start_early()

import json
import logging
import time

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

from alcore.config import ExperimentConfig
from alcore.experiment import precompile
from flows import local_server, resilience  # resilience: lost-server handling (flows/resilience.py)
from flows.cli import parse_config
from tasks import stages, storage
from tasks.report import artifact_key, report
from tasks.workspace import Workspace, check_writable, enable_compilation_cache


@flow(name="passive-baseline", flow_run_name="passive-{config.seed}", log_prints=True)
def passive_baseline(config: ExperimentConfig) -> dict:
    """Train on uniform random points with the active loop's label and epoch budget."""
    ws = Workspace.for_config(config)
    path = ws.passive_file(config)
    reason = storage.verify(path)
    if reason not in (None, "missing"):
        get_run_logger().warning("damaged result file %s: %s; recomputing the passive baseline", path, reason)
    result = stages.passive_train.with_options(refresh_cache=reason is not None)(config)
    get_run_logger().info("passive baseline: %d points, accuracy %.2f %%", config.n_passive, 100 * result["accuracy"])
    return result


@task(name="passive-baseline", task_run_name="passive/subflow", cache_policy=NO_CACHE)
def run_passive_baseline(config: ExperimentConfig) -> dict:
    """Runs the subflow from a task so it can be submitted beside the active loop."""
    return passive_baseline(config)


def _first_invalid(ws: Workspace, rounds: int) -> tuple[int, list[str]]:
    """Index into [data, initial, calibration, round 1..R] of the first stage whose file
    is missing or damaged (len if none), and a warning for each damaged file."""
    files = [ws.stage_file("data"), ws.stage_file("initial"), ws.stage_file("calibration")]
    files += [ws.round_file(r) for r in range(1, rounds + 1)]
    warnings = []
    for i, path in enumerate(files):
        reason = storage.verify(path)
        if reason is None:
            continue
        if reason != "missing":
            warnings.append(f"damaged result file {path}: {reason}; recomputing it and every stage after it")
        return i, warnings
    return len(files), warnings


DEFAULT_CONFIG = ExperimentConfig()


@flow(name="active-learning", log_prints=True)
def active_learning(config: ExperimentConfig = DEFAULT_CONFIG, refresh: bool = False) -> dict:
    """Bayesian active learning with a Laplace posterior (the laplax 2D tutorial).

    Args:
        config: The experiment (defaults: the tutorial's).
        refresh: Ignore every cached result and recompute.
    """
    log = get_run_logger()
    t_start = time.perf_counter()
    enable_compilation_cache()
    ws = Workspace.for_config(config)
    check_writable(ws.root)
    ws.write_config(config)
    first_bad, warnings = (0, []) if refresh else _first_invalid(ws, config.rounds)
    for message in warnings:
        log.warning(message)
    opts = lambda i: {"refresh_cache": refresh or i >= first_bad}  # noqa: E731

    passive_future = run_passive_baseline.submit(config) if config.passive else None

    timings, cached = {}, {}

    def run(stage_task, index, *args, **kwargs):
        t0 = time.perf_counter()
        state = stage_task.with_options(**opts(index))(*args, return_state=True, **kwargs)
        result = state.result()
        name = (
            stage_task.name if "round_index" not in kwargs else f"round-{kwargs['round_index']:02d}/{stage_task.name}"
        )
        timings[name] = time.perf_counter() - t0
        cached[name] = state.name == "Cached"
        return result

    data = run(stages.generate_data, 0, config)
    initial = run(stages.initial_training, 1, config, data)
    calibration = run(stages.calibrate, 2, config, data, initial)
    log.info("prior precision %.4f (calibrated by ECE on %d points)", calibration["prior_prec"], config.n_calibration)

    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key(config, "progress"), description="Active-learning rounds finished"
    )
    state = initial["state"]
    x, y = data.x_initial, data.y_initial
    rounds = []
    for r in range(1, config.rounds + 1):
        i = 2 + r
        acquired = run(
            stages.acquire,
            i,
            config,
            round_index=r,
            data=data,
            state=state,
            x_labelled=x,
            y_labelled=y,
            prior_prec=calibration["prior_prec"],
        )
        labels = run(stages.label, i, config, round_index=r, points=acquired["points"])
        x = _append(x, acquired["points"])
        y = _append(y, labels)
        retrained = run(stages.retrain, i, config, round_index=r, state=state, x_labelled=x, y_labelled=y)
        summary = run(
            stages.evaluate,
            i,
            config,
            round_index=r,
            data=data,
            acquired=acquired,
            labels=labels,
            retrained=retrained,
            x_labelled=x,
            y_labelled=y,
        )
        state = retrained["state"]
        rounds.append(summary)
        was_cached = all(cached[f"round-{r:02d}/{s}"] for s in ("acquire", "label", "retrain", "evaluate"))
        picked = ", ".join(
            f"({px:.3f}, {py:.3f}) -> class {c}" for (px, py), c in zip(acquired["points"], labels, strict=True)
        )
        log.info(
            "round %d/%d: labelled %s; accuracy %.2f %%%s",
            r,
            config.rounds,
            picked,
            100 * summary["accuracy"],
            " (cached)" if was_cached else "",
        )
        update_progress_artifact(progress_id, progress=100.0 * r / config.rounds)
        _fault_point(ws, f"after-round-{r}")
    if config.rounds == 0:
        update_progress_artifact(progress_id, progress=100.0)

    passive = passive_future.result() if passive_future is not None else None
    run_info = {
        "flow_run_id": str(get_run_context().flow_run.id),
        "wall_seconds": {**timings, "total_before_report": time.perf_counter() - t_start},
        "cached": cached,
        "warnings": warnings,
    }
    document = report(config, data, initial, calibration, rounds, passive, run_info)
    log.info(
        "active %.2f %% vs passive %s after %d rounds; outputs in %s",
        100 * (document["final_active_accuracy"] or float("nan")),
        "n/a" if passive is None else f"{100 * passive['accuracy']:.2f} %",
        config.rounds,
        ws.root,
    )
    return {
        "folder": str(ws.root),
        "final_active_accuracy": document["final_active_accuracy"],
        "passive_accuracy": document["passive_accuracy"],
        "prior_precision": document["prior_precision"],
    }


FAULT_ENV = "BAL_FAULT_ONCE"


def _fault_point(ws: Workspace, name: str) -> None:
    """Fail once at a named point, for testing retries and resume for real.

    With ``BAL_FAULT_ONCE=after-round-3`` the flow raises after round 3 the first time
    it gets there in this experiment folder (a marker file remembers it), as a crash
    would; a retry or a re-run then passes. Unset (always, outside tests): a no-op.
    """
    if os.environ.get(FAULT_ENV) != name:
        return
    marker = ws.root / f".fault-{name}"
    if marker.exists():
        return
    marker.touch()
    raise RuntimeError(f"injected fault at {name} ({FAULT_ENV})")


def _append(a, rows):
    return np.concatenate([np.asarray(a), np.asarray(rows, dtype=np.asarray(a).dtype)])


# ---------------------------------------------------------------- command line


def _precompile(config: ExperimentConfig) -> None:
    """Compile ahead while the server boots; a failure here only costs that time
    (the stages compile what they need themselves), so it is logged, not raised."""
    log = logging.getLogger("prefect")
    t0 = time.perf_counter()
    try:
        count = precompile(config)
    except Exception as e:  # noqa: BLE001 - never fail a run over an optimisation
        log.warning("ahead-of-time compilation failed (%s: %s); the stages compile on demand", type(e).__name__, e)
        return
    log.info("compiled %d JAX programs in %.1f s while the server started", count, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    config, args = parse_config(argv)
    ws = Workspace.for_config(config)
    if args.status:
        print(json.dumps(ws.status_for(config), indent=2))
        return 0
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    run = active_learning.with_options(retries=args.retries, retry_delay_seconds=1) if args.retries else active_learning
    enable_compilation_cache()
    with local_server.connected(while_waiting=lambda: _precompile(config)):
        with resilience.guard(ws.root, rounds=config.rounds, argv=argv):  # resilience: see flows/resilience.py
            result = run(config, refresh=args.refresh)
    print(json.dumps(result, indent=2))
    print(f"experiment folder: {result['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
