"""The active-learning experiment as one Prefect flow, and its command line.

    python -m flows.active_learning [--rounds N] [--grid-size G] [--seed S]
        [--acquisition max_std|sampled] [--artifacts-dir DIR] [--refresh] [--status] ...

The flow: data -> initial training -> calibration -> rounds (acquire, label, retrain,
evaluate) -> report, with the passive baseline as a subflow running beside the loop.
Every stage's record is a file in the experiment's folder, keyed by the fields the
stage reads and the code version (``tasks/store.py``): the same command after an
interruption restores the finished stages from the folder (one ``restore`` task in
the run graph) and computes from the first unfinished one.
"""

import os
import sys

# This machine has no internet: the server's telemetry would only log errors.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect reads its settings at import: a loaded machine may need longer than 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

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
from prefect.settings import temporary_settings
from prefect.utilities.annotations import quote

from alcore import stages as st
from alcore.config import ExperimentConfig
from flows import local_server
from flows.cli import parse_config
from tasks import stages
from tasks.report import artifact_key, report
from tasks.store import Restored, Store
from tasks.workspace import check_writable, enable_compilation_cache


@flow(name="passive-baseline", flow_run_name="passive-{config.seed}", log_prints=True)
def passive_baseline(config: ExperimentConfig, refresh: bool = False) -> st.Passive:
    """Train on uniform random points with the active loop's label and epoch budget
    (or restore the result from its file, shared by experiments with this budget)."""
    log = get_run_logger()
    store = Store(config)
    state, _, message = ("missing", None, None) if refresh else store.check(st.PASSIVE)
    if state == "damaged":
        log.warning(message)
    elif state == "stale":
        log.info(message)
    result = stages.passive_restore(store) if state == "ok" else stages.passive_train(store)
    log.info("passive baseline: %d points, accuracy %.2f %%", len(result.y), 100 * result.accuracy)
    return result


@task(name="passive-baseline", task_run_name="passive/subflow", cache_policy=NO_CACHE, persist_result=False)
def run_passive_baseline(config: ExperimentConfig, refresh: bool) -> st.Passive:
    """Runs the subflow from a task so it can be submitted beside the active loop.

    The subflow sends no heartbeats of its own: its parent's already tell the server
    the process is alive, and a heartbeat thread costs up to a second at exit.
    """
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        return passive_baseline(config, refresh)


DEFAULT_CONFIG = ExperimentConfig()


class _Runner:
    """Runs the stage tasks: big inputs quoted, explicit graph edges, wall times."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, stage_task, *args, after=(), name: str, **kwargs):
        t0 = time.perf_counter()
        state = stage_task(*args, **kwargs, return_state=True, wait_for=[s for s in after if s is not None] or None)
        result = state.result()
        self.seconds[name] = time.perf_counter() - t0
        return result, state


@flow(name="active-learning", log_prints=True)
def active_learning(config: ExperimentConfig = DEFAULT_CONFIG, refresh: bool = False) -> dict:
    """Bayesian active learning with a Laplace posterior (the laplax 2D tutorial).

    Args:
        config: The experiment (defaults: the tutorial's).
        refresh: Ignore every stored result and recompute.
    """
    log = get_run_logger()
    t_start = time.perf_counter()
    enable_compilation_cache()
    store = Store(config)
    ws = store.workspace
    check_writable(ws.root)
    ws.write_config(config)
    passive_future = run_passive_baseline.submit(config, refresh) if config.passive else None
    run = _Runner()

    restored, restore_state = Restored(), None
    if not refresh and (found := store.probe()):
        what = _describe_prefix(found)
        restored, restore_state = run(stages.restore, store, what, name="restore")
        for message in restored.warnings:
            log.warning(message)
        for message in restored.notes:
            log.info(message)
        if restored.names:
            log.info("restored from %s: %s", ws.root, _describe_prefix(len(restored.names)))

    data, last = restored.data, restore_state
    if data is None:
        data, last = run(stages.generate_data, store, after=[last], name="data")
    initial = restored.initial
    if initial is None:
        initial, last = run(stages.initial_training, store, quote(data), after=[last], name="initial")
    calibration = restored.calibration
    if calibration is None:
        calibration, last = run(stages.calibrate, store, quote(data), quote(initial), after=[last], name="calibration")
    log.info(
        "prior precision %.4f (calibrated by %s on %d points)",
        calibration.prior_prec,
        calibration.objective.upper(),
        len(data.y_calibration),
    )

    progress = _Progress(config)
    rounds = list(restored.rounds)
    if restored.last_round is not None:
        state, x, y = restored.last_round.state, restored.last_round.x_labelled, restored.last_round.y_labelled
    else:
        state, x, y = initial.state, data.x_initial, data.y_initial
    progress.update(len(rounds))
    ret = None  # the previous round's retrain: the state the next acquisition scores with
    for r in range(len(rounds) + 1, config.rounds + 1):
        name = f"round-{r:02d}"
        acquired, acq = run(
            stages.acquire,
            store,
            r,
            quote(data),
            quote(state),
            quote(x),
            quote(y),
            calibration.prior_prec,
            after=[ret, last],
            name=f"{name}/acquire",
        )
        labels, lab = run(stages.label, store, r, quote(data), quote(acquired), after=[acq], name=f"{name}/label")
        x = _append(x, acquired.points)
        y = _append(y, labels)
        retrained, ret = run(
            stages.retrain, store, r, quote(state), quote(x), quote(y), after=[lab, last], name=f"{name}/retrain"
        )
        record, last = run(
            stages.evaluate,
            store,
            r,
            quote(data),
            quote(acquired),
            labels,
            quote(retrained),
            quote(x),
            quote(y),
            after=[acq, lab, ret],
            name=f"{name}/evaluate",
        )
        state = retrained.state
        rounds.append(record.summary())
        picked = ", ".join(
            f"({px:.3f}, {py:.3f}) -> class {c}" for (px, py), c in zip(acquired.points, labels, strict=True)
        )
        log.info("round %d/%d: labelled %s; accuracy %.2f %%", r, config.rounds, picked, 100 * record.accuracy)
        progress.update(r)
        _fault_point(ws, f"after-round-{r}")
    progress.update(config.rounds, final=True)

    passive = passive_future.result() if passive_future is not None else None
    run_info = {
        "flow_run_id": str(get_run_context().flow_run.id),
        "wall_seconds": {**run.seconds, "total_before_report": time.perf_counter() - t_start},
        "restored": restored.names,
        "computed": [n for n in run.seconds if n != "restore"],
        "warnings": restored.warnings,
    }
    document = report(config, quote(data), quote(initial), quote(calibration), rounds, quote(passive), run_info)
    log.info(
        "active %.2f %% vs passive %s after %d rounds; outputs in %s",
        100 * (document["final_active_accuracy"] or float("nan")),
        "n/a" if passive is None else f"{100 * passive.accuracy:.2f} %",
        config.rounds,
        ws.root,
    )
    return {
        "folder": str(ws.root),
        "final_active_accuracy": document["final_active_accuracy"],
        "passive_accuracy": document["passive_accuracy"],
        "prior_precision": document["prior_precision"],
    }


def _describe_prefix(count: int) -> str:
    """The first ``count`` stages of data, initial, calibration, round 1, ... in words."""
    names = ["data", "initial", "calibration"][:count]
    rounds = count - len(names)
    if rounds == 1:
        names.append("round 1")
    elif rounds > 1:
        names.append(f"rounds 1-{rounds}")
    return ", ".join(names) or "nothing"


class _Progress:
    """The rounds' progress artifact, updated at most once a second (an API call each)."""

    def __init__(self, config: ExperimentConfig):
        self.total = config.rounds
        self.last = 0.0
        self.id = create_progress_artifact(
            progress=0.0, key=artifact_key(config, "progress"), description="Active-learning rounds finished"
        )

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= 1.0:
            update_progress_artifact(self.id, progress=100.0 * done / self.total if self.total else 100.0)
            self.last = now


FAULT_ENV = "BAL_FAULT_ONCE"


def _fault_point(ws, name: str) -> None:
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


def _precompile(config: ExperimentConfig, refresh: bool) -> None:
    """Compile ahead, while the server boots, what the stages still to run will need
    (nothing for a finished experiment); a failure here only costs that time (the
    stages compile what they need themselves), so it is logged, not raised."""
    log = logging.getLogger("prefect")
    t0 = time.perf_counter()
    store = Store(config)
    found = 0 if refresh else store.probe()
    first_round = max(1, found - 2)
    passive = config.passive and (refresh or not store.file(st.PASSIVE).exists())
    try:
        count = st.precompile(config, first_round=first_round, passive=passive, initial=found < 2)
    except Exception as e:  # noqa: BLE001 - never fail a run over an optimisation
        log.warning("ahead-of-time compilation failed (%s: %s); the stages compile on demand", type(e).__name__, e)
        return
    if count:
        log.info("compiled %d JAX programs in %.1f s while the server started", count, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    config, args = parse_config(argv)
    if args.status:
        print(json.dumps(Store(config).status(), indent=2))
        return 0
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    run = active_learning.with_options(retries=args.retries, retry_delay_seconds=1) if args.retries else active_learning
    enable_compilation_cache()
    with local_server.connected(while_waiting=lambda: _precompile(config, args.refresh)):
        result = run(config, refresh=args.refresh)
    print(json.dumps(result, indent=2))
    print(f"experiment folder: {result['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
