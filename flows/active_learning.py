"""The active-learning experiment as one Prefect flow, and its command line.

    python -m flows.active_learning [--rounds N] [--grid-size G] [--seed S]
        [--acquisition max_std|sampled] [--artifacts-dir DIR] [--refresh] [--status] ...

The flow: data -> initial training -> calibration -> rounds (acquire, label, retrain,
evaluate) -> report, with the passive baseline as a subflow running beside the loop.
Every stage's record is a file in the experiment's folder, keyed by the fields the
stage reads and the code version (``store/experiment.py``): the same command after an
interruption restores the finished stages from the folder (one ``restore`` task in
the run graph) and computes from the first unfinished one.
"""

import os
import sys

import sources

# This machine has no internet: the server's telemetry would only log errors.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect reads its settings at import: a loaded machine may need longer than 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

if __name__ == "__main__":
    # Validate the input first (light imports), then start Prefect's temporary server
    # before the heavy imports below, so it boots while they run (runtime/local_server.py).
    from runtime import cli, local_server

    _config, _args = cli.parse_config()
    if not _args.status and _config.oracle == "truth":  # a human oracle needs a real server (checked in main)
        local_server.start_early()

import contextvars
import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import httpx
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run, task_run
from prefect.settings import temporary_settings
from prefect.states import Crashed, Failed, State
from prefect.utilities.annotations import quote

import oracles
from alcore import stages as st
from alcore.config import ExperimentConfig
from flows import signals
from flows.faults import fault_point
from flows.loop import REFUSALS, Loop, StageCannotWrite, StagePlatformMix, passive_of
from flows.progress import Progress
from oracles import forms
from runtime import local_server, resilience  # resilience: lost-server handling (runtime/resilience.py)
from runtime.cli import parse_config
from store import files
from store.experiment import PlatformMix, Store, print_status
from tasks import stages


@flow(name="passive-baseline", flow_run_name="passive-{config.seed}", log_prints=True)
def passive_baseline(
    config: ExperimentConfig, refresh: bool = False, labels: list[int] | None = None, accept_platform_mix: bool = False
) -> st.Passive:
    """Train on uniform random points with the active loop's label and epoch budget
    (or restore the result from its file, shared by experiments with this budget).
    ``labels``: a person's labels of the points (human oracle). The data come from
    the experiment's folder when the parent flow has saved them, else they are drawn
    here (the same draws): with the truth as oracle the subflow starts with its parent,
    before the rounds' task runs keep Prefect's client busy (a subflow created later
    waited up to 15 s for it)."""
    _record_run_id("flow", flow_run.id)
    if (beside := _BESIDE.get()) is not None:
        beside.started.set()
    log = get_run_logger()
    store = Store(config, accept_platform_mix=accept_platform_mix)

    def data():  # the parent's saved data, or the same draws made here
        state, saved, _ = store.check(st.DATA)
        return saved if state == "ok" else sources.draw(config)

    def train(store, data, labels):
        trained = stages.passive_train(store, quote(data), labels, return_state=True)
        if trained.is_failed() and trained.name in REFUSALS:
            raise REFUSALS[trained.name](trained.message)
        return trained.result()

    result = passive_of(store, data, labels, refresh=refresh, train=train, log=log)
    accuracy = "n/a" if result.accuracy is None else f"{100 * result.accuracy:.2f} %"
    log.info("passive baseline: %d points, accuracy %s", len(result.y), accuracy)
    return result


class Beside:
    """The passive subflow running beside the loop, in a daemon thread of its own.

    Not in the flow's task runner: a termination signal (``make stop``, a cancelled
    deployment run) makes Prefect's engine shut its task runner down, waiting for the
    threads' work, before it records the run's crash, and a passive training (one
    uninterruptible JAX program) held the process that long (30 s and more in CI).
    Here the run ends at once: :meth:`abandon` records the subflow and its task run as
    crashed, and the thread dies with the process. Any other end of the run waits for
    the subflow (:meth:`settle`), as the task runner did.
    """

    def __init__(self, run: Callable[[], st.Passive]):
        self.future: Future = Future()
        self.run_ids: dict[str, str] = {}  # "flow"/"task": the subflow's and its task run's ids
        # Set when the subflow's run exists and its body starts. The loop waits for it
        # (about 0.1-0.3 s) before its rounds begin: created later, during the rounds'
        # stream of task-run events, the subflow's run waited for the server up to 15 s,
        # often until the rounds were over (measured on the temporary server).
        self.started = threading.Event()
        self.abandoned = False
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._work, run), name="passive-baseline", daemon=True
        )

    def _work(self, run: Callable[[], st.Passive]) -> None:
        _BESIDE.set(self)
        try:
            self.future.set_result(run())
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the result
            self.future.set_exception(e)

    def result(self) -> st.Passive:
        return self.future.result()

    def settle(self) -> None:
        """Wait for the subflow, unless the run was terminated."""
        if not self.abandoned:
            self.thread.join()

    def abandon(self, why: str) -> None:
        """The run ends on a signal: the subflow's run and its task run, if they still
        run, are recorded as crashed (so the UI does not show them running forever)."""
        self.abandoned = True
        if not self.thread.is_alive():
            return
        try:
            with get_client(sync_client=True) as client:
                if "task" in self.run_ids:
                    client.set_task_run_state(self.run_ids["task"], Crashed(message=why), force=True)
                if "flow" in self.run_ids:
                    client.set_flow_run_state(self.run_ids["flow"], Crashed(message=why), force=True)
        except httpx.HTTPError:  # the server may be going too; the run itself records its end
            pass


# In a Beside's thread: the Beside, where the task and the subflow record their run ids
# and the subflow says it started.
_BESIDE: contextvars.ContextVar[Beside | None] = contextvars.ContextVar("passive_beside", default=None)


def _record_run_id(kind: str, run_id) -> None:
    if (beside := _BESIDE.get()) is not None:
        beside.run_ids[kind] = str(run_id)


def start_passive(
    config: ExperimentConfig, refresh: bool, accept_mix: bool, labels: list[int] | None, started: list[Beside]
) -> Beside:
    """Start the passive subflow beside the loop, added to ``started`` at once (the
    run may end while it waits); returns once its run has started."""
    beside = Beside(lambda: run_passive_baseline(config, refresh, labels, accept_mix))
    started.append(beside)
    beside.thread.start()
    beside.started.wait(timeout=60)
    return beside


@task(name="passive-baseline", task_run_name="passive/subflow", cache_policy=NO_CACHE, persist_result=False)
def run_passive_baseline(
    config: ExperimentConfig, refresh: bool, labels: list[int] | None = None, accept_platform_mix: bool = False
) -> st.Passive:
    """Runs the subflow from a task, whose run the graph draws beside the loop's (started
    by :func:`start_passive` in a thread of its own).

    The subflow sends no heartbeats of its own: its parent's already tell the server
    the process is alive, and a heartbeat thread costs up to a second at exit.
    """
    _record_run_id("task", task_run.id)
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        return passive_baseline(config, refresh, labels, accept_platform_mix)


DEFAULT_CONFIG = ExperimentConfig()


@flow(name="active-learning", log_prints=True)
def active_learning(
    config: ExperimentConfig = DEFAULT_CONFIG, refresh: bool = False, accept_platform_mix: bool = False
) -> dict:
    """Bayesian active learning with a Laplace posterior (the laplax 2D tutorial).

    Args:
        config: The experiment (defaults: the tutorial's).
        refresh: Ignore every stored result and recompute.
        accept_platform_mix: Resume from stages computed on another numeric platform
            (otherwise refused before compute; ``alcore/numerics.py``).
    """
    try:
        config = sources.resolve(config)  # a bad data file ends the run here, before any compute
    except sources.DataError as e:
        get_run_logger().error(str(e))
        return not_retried(Failed(message=str(e), name="BadData"))
    resilience.watch_deployment_run(Store(config).workspace.root, rounds=config.rounds)
    return experiment(config, refresh, accept_platform_mix)


def experiment(config: ExperimentConfig, refresh: bool, accept_platform_mix: bool, *, graph: bool = True):
    """The algorithm: data, initial training, calibration, the rounds, the passive
    baseline beside them, the report. Returns the run's summary, or a Failed state
    that says why it stopped and how to continue.

    ``graph=False`` (an experiment inside a sweep) computes the same stages, in the
    same order, to the same files, as plain calls: no task runs, no passive subflow,
    no artifacts (``flows.loop.Loop``).

    A termination signal is never lost on the way (``flows/signals.py``).
    """
    with signals.never_lost():
        return _experiment(config, refresh, accept_platform_mix, graph)


def _experiment(config: ExperimentConfig, refresh: bool, accept_platform_mix: bool, graph: bool):
    log = get_run_logger()
    run = None
    besides: list[Beside] = []  # the passive subflow, when it runs beside the loop
    try:
        config = sources.resolve(config)
        run = Loop(config, refresh, accept_platform_mix, graph=graph)
        restored = run.restore()
        person = graph and config.oracle == "human"  # a person waits on each round
        warming = None
        if person:
            first = len(restored.rounds) + 1
            warming = warm_up(config, first, restored.data, log, when_idle=forms.resumed_after_suspension())
        oracle = oracles.for_config(config, run.folder, log)
        run.data(oracle)
        passive = run.passive(
            oracle, lambda labels: start_passive(config, refresh, accept_platform_mix, labels, besides)
        )
        initial, calibration = run.model()
        if person:
            # Python's full garbage collections went through every object of the
            # process (Prefect, JAX, the restored stages): 0.5 s, every 15 forms or
            # so, while a person waited. What exists now lives to the end of the run.
            gc.freeze()
        progress = Progress(config, done=len(restored.rounds)) if graph else None

        def after_round(r: int) -> None:  # the rounds' observers: progress in the UI, faults in tests
            if progress is not None:
                progress.update(r)
            fault_point(run.folder, f"after-round-{r}")

        rounds = run.loop(oracle, on_round=after_round)
        if progress is not None:
            progress.update(len(rounds), final=True)
        baseline = run.baseline(passive)
        document = run.report(oracle, initial, calibration, rounds, baseline)
        if warming is not None:  # no work of this run goes on in the process after it
            warming.finish()
    except (TerminationSignal, KeyboardInterrupt) as e:
        for beside in besides:
            beside.abandon(f"its parent run ended on {type(e).__name__}")
        raise
    except forms.Unanswered as e:
        message = f"{e}; every answer and finished stage is saved in {run.folder}: {forms.how_to_continue()}"
        log.error(message)
        return _failed(Failed(message=message, name="Unanswered"), graph)
    except (StageCannotWrite, files.CannotWrite) as e:
        log.error(str(e))
        return _failed(Failed(message=str(e), name="CannotWrite"), graph)
    except (StagePlatformMix, PlatformMix) as e:
        log.error(str(e))
        return _failed(Failed(message=str(e), name="PlatformMix"), graph)
    except sources.DataError as e:
        log.error(str(e))
        return _failed(Failed(message=str(e), name="BadData"), graph)
    finally:
        for beside in besides:
            beside.settle()
    log.info(
        "active %.2f %% vs passive %s after %d rounds; outputs in %s",
        100 * (document["final_active_accuracy"] if document["final_active_accuracy"] is not None else float("nan")),
        "n/a" if baseline is None or baseline.accuracy is None else f"{100 * baseline.accuracy:.2f} %",
        len(rounds),
        run.folder,
    )
    return {
        "folder": str(run.folder),
        "final_active_accuracy": document["final_active_accuracy"],
        "passive_accuracy": document["passive_accuracy"],
        "prior_precision": document["prior_precision"],
        "flow_seconds": time.perf_counter() - run.t_start,
    }


def _failed(failed: State, graph: bool) -> State:
    return not_retried(failed) if graph else failed


def not_retried(failed: State) -> State:
    """``failed``, as the run's final state even when the flow has ``retries``.

    Since Prefect 3.9 a flow run with retries that returns a Failed state is retried
    in its process (the server answers AwaitingRetry), and a retry resets the run's
    pause keys. A retry does not mend what these failures say (nobody answered the
    form; the disk is full or read-only): it would ask the same form again, or fail
    on the same disk. So the run's own retry count (its policy, through the API) is
    set to zero first: the server then accepts the failure. Flows take no
    ``retry_condition_fn`` (tasks do). Without an API (or one that refuses) the
    state is returned as it is.
    """
    flow_run_id = get_run_context().flow_run.id
    try:
        with get_client(sync_client=True) as client:
            policy = client.read_flow_run(flow_run_id).empirical_policy
            if policy.retries:
                client.update_flow_run(
                    flow_run_id, empirical_policy=policy.model_copy(update={"retries": 0, "max_retries": 0})
                )
    except httpx.HTTPError as e:  # PrefectHTTPStatusError is one
        get_run_logger().warning("the run may be retried (its retries could not be turned off: %s)", e)
    return failed


class WarmUp(threading.Thread):
    """See :func:`warm_up`; :meth:`finish` ends it (waiting for work under way)."""

    def __init__(self, work: Callable[[], None]):
        super().__init__(target=work, name="warm-up", daemon=True)
        self.stop = threading.Event()

    def finish(self) -> None:
        self.stop.set()
        self.join()


def warm_up(config: ExperimentConfig, first_round: int, data, log, *, when_idle: bool = False) -> WarmUp:
    """For a run a person answers: run once, in a background thread, the JAX programs
    of the rounds from ``first_round`` on (every padding they will reach), so that an
    answer's next form is not held up by a program's first call in the process (a
    trace and a load from the compilation cache, 0.1-0.3 s each; 0.3-0.9 s to compile).
    ``data``: the restored data (None: drawn here). A failure only costs that time.

    ``when_idle``: start only once a form waits for the person (the process idles
    while they read it): what a run resumed after a suspension does, since its replay
    up to the next form is on the person's clock and the warm-up only slowed it
    (round 49's acquisition 1.5 s instead of 1 s, measured). Otherwise it starts at
    once, while the run replays up to its first form."""

    def idle() -> bool:
        while not thread.stop.is_set():
            if forms.WAITING.wait(0.25):
                return True
        return False

    def work():
        if when_idle and not idle():
            return
        t0 = time.perf_counter()
        try:
            drawn = sources.draw(config) if data is None else data
            count = st.precompile(config, drawn, first_round=first_round, passive=False, initial=False, warm=True)
        except Exception as e:  # noqa: BLE001 - never fail a run over an optimisation
            log.warning(
                "warming up the rounds' programs failed (%s: %s); they compile on first use", type(e).__name__, e
            )
            return
        log.info("warmed up %d JAX programs of the rounds in %.1f s", count, time.perf_counter() - t0)

    thread = WarmUp(work)
    thread.start()
    return thread


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
    passive = config.passive and (refresh or not store.probe_passive())
    try:
        count = st.precompile(config, sources.draw(config), first_round=first_round, passive=passive, initial=found < 2)
    except Exception as e:  # noqa: BLE001 - never fail a run over an optimisation
        log.warning("ahead-of-time compilation failed (%s: %s); the stages compile on demand", type(e).__name__, e)
        return
    if count:
        log.info("compiled %d JAX programs in %.1f s while the server started", count, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    config, args = parse_config(argv)
    if args.status:
        print_status(config)
        return 0
    if config.oracle == "human":
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            print(f"error: {forms.NO_SERVER}", file=sys.stderr)
            return 2
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    run = active_learning.with_options(retries=args.retries, retry_delay_seconds=1) if args.retries else active_learning
    with local_server.connected(while_waiting=lambda: _precompile(config, args.refresh)):
        with resilience.guard(Store(config).workspace.root, rounds=config.rounds, argv=argv):
            t0 = time.perf_counter()
            state = run(config, refresh=args.refresh, accept_platform_mix=args.accept_platform_mix, return_state=True)
            seconds = time.perf_counter() - t0  # the flow run, creation and teardown included
    if not state.is_completed():
        print(f"{state.name}: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    result["flow_call_seconds"] = seconds
    print(json.dumps(result, indent=2))
    print(f"experiment folder: {result['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
