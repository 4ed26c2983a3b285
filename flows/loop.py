"""The wiring of one experiment inside the ``active-learning`` flow.

:class:`Loop` restores what the folder holds and runs each stage still to run as a
task (big inputs quoted, the run graph's edges given explicitly), asking the oracle
(``oracles/``) for labels wherever a stage needs them, without knowing who answers.
It keeps the run's bookkeeping: wall times, what was restored and what computed.
The math is in ``alcore.stages``, the tasks in ``tasks.stages``; the flow
(``flows.active_learning``) reads like the algorithm and only calls this.
"""

import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
from prefect import get_run_logger
from prefect.context import get_run_context
from prefect.futures import PrefectConcurrentFuture
from prefect.states import Completed
from prefect.utilities.annotations import quote

import sources
from alcore import stages as st
from alcore import stopping
from alcore.config import ExperimentConfig
from flows import signals
from oracles import Oracle, RoundContext
from runtime import standby
from store.experiment import CHAIN, Restored, Store
from store.layout import check_writable
from tasks import stages
from tasks.report import report


def _edge(task_run_id) -> PrefectConcurrentFuture:
    """A finished task run as a graph edge, and nothing more.

    Given a task's *state* in ``wait_for``, Prefect walks the state, its result
    included (a round's whole record), twice per task run: about 20 ms a round of
    four tasks, measured. This future carries only the task run's id and an
    already-resolved bare completed state (``data=0``: "the edge is done", no
    payload), so the edge costs nothing to find or to wait for.
    """
    done: Future = Future()
    done.set_result(Completed(data=0))
    return PrefectConcurrentFuture(task_run_id, done)


class StageCannotWrite(Exception):
    """A stage could not write its file (the task's message says which and what to do)."""


class StagePlatformMix(Exception):
    """A stage to restore was computed on another numeric platform (the message says
    which and how to accept the mix)."""


REFUSALS = {"CannotWrite": StageCannotWrite, "PlatformMix": StagePlatformMix}


class Loop:
    """One experiment's run: restore, data, model, rounds, and what the report needs."""

    def __init__(
        self, config: ExperimentConfig, refresh: bool, accept_platform_mix: bool = False, *, graph: bool = True
    ):
        self.config = config
        self.refresh = refresh
        self.graph = graph
        self.log = get_run_logger()
        self.t_start = time.perf_counter()
        self.store = Store(config, accept_platform_mix=accept_platform_mix)
        self.folder = self.store.workspace.root
        check_writable(self.folder)
        self.store.workspace.write_config(config)
        self.seconds: dict[str, float] = {}
        self.round_seconds: dict[str, float] = {}
        self.restored = Restored()
        self.last = None  # the latest task's edge: the next one's in the run graph
        self.rounds: list[st.RoundSummary] = []
        self.stopped_after: int | None = None
        self.stopped_by = "oracle"  # who ended the rounds early: the oracle (a person) or the stop rule

    # ------------------------------------------------------------ running tasks
    def run(self, stage_task, *args, after=(), name: str, **kwargs):
        """Run one stage task; returns (result, edge): ``after`` takes the edges of
        the tasks it depends on (the run graph's arrows).

        Without a graph (``graph=False``: an experiment inside a sweep, where sixty
        experiments' per-round nodes would only load the server) the task's function
        runs as a plain call: no task run, no events, the same computation.
        """
        signals.checkpoint()
        t0 = time.perf_counter()
        if not self.graph:
            plain = stage_task.fn.__wrapped__  # the stage's body, its errors raised as they are
            result = plain(*(a.unwrap() if isinstance(a, quote) else a for a in args), **kwargs)
            self.seconds[name] = time.perf_counter() - t0
            return result, None
        edges = [e for e in after if e is not None]
        state = stage_task(*args, **kwargs, return_state=True, wait_for=edges or None)
        if state.is_failed() and state.name in REFUSALS:
            raise REFUSALS[state.name](state.message)
        result = state.result()
        self.seconds[name] = time.perf_counter() - t0
        return result, _edge(state.state_details.task_run_id)

    # ------------------------------------------------------------ restore
    def restore(self) -> Restored:
        """Load the finished stages (one ``restore`` task), unless refreshing."""
        found = 0 if self.refresh else self.store.probe()
        passive = not self.refresh and self.config.passive and self.store.probe_passive()
        if not found and not passive:
            return self.restored
        what = describe_prefix(found) + (", passive" if passive else "")
        self.restored, self.last = self.run(stages.restore, self.store, what, passive, name="restore")
        for message in self.restored.warnings:
            self.log.warning(message)
        for message in self.restored.notes:
            self.log.info(message)
        if self.restored.names:
            chain = [n for n in self.restored.names if n != "passive"]
            extra = ", passive" if self.restored.passive is not None else ""
            self.log.info("restored from %s: %s%s", self.folder, describe_prefix(len(chain)), extra)
        return self.restored

    # ------------------------------------------------------------ data, initial training, calibration
    def data(self, oracle: Oracle):
        """The data, labelled by the oracle (saved before anything uses them)."""
        if self.restored.data is not None:
            self._data = self.restored.data
            return self._data
        # without a graph (a sweep), the experiments of one seed in a worker share one draw
        drawn, generated = self.run(
            stages.generate_data, self.store, reuse=not self.graph, after=[self.last], name="data"
        )
        initial_labels, calibration_labels = oracle.label_data(drawn)
        self._data, self.last = self.run(
            stages.label_data,
            self.store,
            quote(drawn),
            initial_labels,
            calibration_labels,
            after=[generated],
            name="data/label",
        )
        return self._data

    def passive(self, oracle: Oracle, subflow: Callable):
        """The passive baseline, to be had with ``.result()``: the subflow
        ``subflow(labels)`` beside the rounds (with a graph), or computed when asked for,
        after the rounds, in this process (without); None when it was restored or is off.
        The oracle labels its points first (None: the truth's)."""
        if not self.config.passive or self.restored.passive is not None:
            return None
        labels = oracle.label_passive(self._data, st.passive_points(self.config, self._data)[0])
        if self.graph:
            return subflow(labels)
        train = stages.passive_train.fn.__wrapped__
        return _Later(
            lambda: passive_of(self.store, lambda: self._data, labels, refresh=self.refresh, train=train, log=self.log)
        )

    def baseline(self, passive) -> st.Passive | None:
        """The passive baseline: restored, or the result of :meth:`passive` (whose file
        then has its compute seconds)."""
        if passive is None:
            return self.restored.passive
        result = passive.result()
        if self.graph:  # the subflow's own store saved its seconds: read them from its file
            self.store.check(st.PASSIVE)
        return result

    def model(self):
        """Initial training and calibration: (initial, calibration)."""
        data = self._data
        initial = self.restored.initial
        if initial is None:
            initial, self.last = self.run(
                stages.initial_training, self.store, quote(data), after=[self.last], name="initial"
            )
        calibration = self.restored.calibration
        if calibration is None:
            calibration, self.last = self.run(
                stages.calibrate, self.store, quote(data), quote(initial), after=[self.last], name="calibration"
            )
        self.log.info(
            "prior precision %.4f (calibrated by %s on %d points)",
            calibration.prior_prec,
            calibration.objective.upper(),
            len(data.y_initial if calibration.objective == "marglik" else data.y_calibration),
        )
        self.initial, self.prior_prec = initial, calibration.prior_prec
        return initial, calibration

    # ------------------------------------------------------------ rounds
    def loop(self, oracle: Oracle, on_round: Callable[[int], None] = lambda r: None) -> list[st.RoundSummary]:
        """The rounds still to run, after the restored ones; ``on_round(r)`` after each
        one computed; ends early where the oracle says stop."""
        self.rounds = list(self.restored.rounds)
        last_round = self.restored.last_round
        if last_round is not None:
            state, x, y = last_round.state, last_round.x_labelled, last_round.y_labelled
            self.prior_prec = last_round.prior_prec if last_round.prior_prec is not None else self.prior_prec
        else:
            state, x, y = self.initial.state, self._data.x_initial, self._data.y_initial
        self.stopped_after = next((s.round for s in self.rounds if oracle.stops_after(s.round)), None)
        self._stop_rule_restored()
        retrained_edge = None  # the previous round's retrain: the state the next acquisition scores with
        r = len(self.rounds)
        while self.stopped_after is None and r < self.config.rounds:
            r += 1
            t_round = time.perf_counter()
            state, x, y, retrained_edge = self._round(r, oracle, state, x, y, retrained_edge)
            self.round_seconds[f"round-{r:02d}"] = time.perf_counter() - t_round
            on_round(r)
            if oracle.stops_after(r):
                self.stopped_after = r
                self.log.info("stopping after round %d, as asked", r)
            elif self._stop_rule_signals(r):
                self.stopped_after, self.stopped_by = r, "rule"
                self.log.info("stopping after round %d: the stop rule %s signals", r, self.config.stop_when)
        return self.rounds

    # ------------------------------------------------------------ the stop rule
    def changes(self) -> list[float | None]:
        """Each round's share of the pool whose predicted class it changed."""
        return [s.prediction_change for s in self.rounds]

    def _stop_rule_signals(self, r: int) -> bool:
        """Log the stop rule's one line after round ``r``; whether ``stop_when`` ends the run here."""
        self.log.info("round %d: %s", r, stopping.describe(self.changes()))
        threshold = self.config.stop_threshold_pct
        return threshold is not None and stopping.stop_round(self.changes(), threshold) == r

    def _stop_rule_restored(self) -> None:
        """With ``stop_when``, restored rounds past the rule's signal are not part of
        this run: it ends where a run with the rule from the start ended."""
        threshold = self.config.stop_threshold_pct
        if threshold is None or self.stopped_after is not None:
            return
        r = stopping.stop_round(self.changes(), threshold)
        if r is not None:
            self.rounds = self.rounds[:r]
            self.stopped_after, self.stopped_by = r, "rule"
            self.log.info("the stop rule %s signalled after round %d (restored)", self.config.stop_when, r)

    def _round(self, r: int, oracle: Oracle, state, x, y, retrained_edge):
        name = f"round-{r:02d}"
        acquired, acq, answers = self._acquire_and_label(r, oracle, state, x, y, retrained_edge)
        labels, lab = self.run(
            stages.label, self.store, r, quote(self._data), quote(acquired), answers, after=[acq], name=f"{name}/label"
        )
        x, y = append(x, acquired.points), append(y, labels)
        retrained, ret = self.run(
            stages.retrain,
            self.store,
            r,
            quote(state),
            quote(x),
            quote(y),
            self.prior_prec,
            after=[lab, self.last],
            name=f"{name}/retrain",
        )
        evaluated_after = [acq, lab, ret]
        if st.recalibrates_after(self.config, r):
            recalibrated, cal = self.run(
                stages.recalibrate,
                self.store,
                r,
                quote(self._data),
                quote(retrained.state),
                quote(x),
                quote(y),
                after=[ret],
                name=f"{name}/recalibrate",
            )
            self.log.info("round %d: prior precision %.4g -> %.4g", r, self.prior_prec, recalibrated.prior_prec)
            self.prior_prec = recalibrated.prior_prec
            evaluated_after.append(cal)
        record, self.last = self.run(
            stages.evaluate,
            self.store,
            r,
            quote(self._data),
            quote(acquired),
            labels,
            quote(retrained),
            quote(x),
            quote(y),
            self.prior_prec,
            sum(self.seconds.get(f"{name}/{s}", 0.0) for s in ("acquire", "label", "retrain", "recalibrate")),
            after=evaluated_after,
            name=f"{name}/evaluate",
        )
        self.rounds.append(record.summary())
        picked = ", ".join(
            f"{self._data.describe_candidate(i)} -> class {self._data.classes[c]}"
            for i, c in zip(acquired.indices, labels, strict=True)
        )
        self.log.info(
            "round %d/%d: labelled %s; accuracy %.2f %%", r, self.config.rounds, picked, 100 * record.accuracy
        )
        return retrained.state, x, y, ret

    def _acquire_and_label(self, r: int, oracle: Oracle, state, x, y, retrained_edge):
        """Acquire the round's point(s) and have the oracle label them; where it could
        not label some, acquire again without them."""
        context = RoundContext(state.params, x, y, self.config.rounds, stop_line=stopping.describe(self.changes()))
        while True:
            exclude = oracle.excluded()
            if self.config.exclude_labelled:
                exclude += [i for summary in self.rounds for i in summary.indices]
            acquired, acq = self.run(
                stages.acquire,
                self.store,
                r,
                quote(self._data),
                quote(state),
                quote(x),
                quote(y),
                self.prior_prec,
                exclude,
                after=[retrained_edge, self.last],
                name=f"round-{r:02d}/acquire",
            )
            answers = oracle.label_round(r, self._data, acquired, context)
            if answers is not None:
                return acquired, acq, answers

    # ------------------------------------------------------------ report
    def report(self, oracle: Oracle, initial, calibration, rounds, baseline) -> dict:
        """results.json, figures and (with a graph) the UI artifacts."""
        args = (self.config, self._data, initial, calibration, rounds, baseline, self.run_info(oracle))
        if not self.graph:
            return report.fn(*args, publish=False)
        config, data, initial, calibration, rounds, baseline, info = args
        return report(config, quote(data), quote(initial), quote(calibration), rounds, quote(baseline), info)

    # ------------------------------------------------------------ bookkeeping
    def run_info(self, oracle: Oracle) -> dict:
        return {
            "flow_run_id": str(get_run_context().flow_run.id) if self.graph else None,
            "wall_seconds": {**self.seconds, "total_before_report": time.perf_counter() - self.t_start},
            "round_seconds": self.round_seconds,  # each computed round in the flow: its tasks and bookkeeping
            # each stage's compute seconds, when it was computed (saved with its record)
            "stage_seconds": dict(self.store.seconds),
            "restored": self.restored.names,
            "computed": [n for n in self.seconds if n != "restore"],
            "warnings": self.restored.warnings + oracle.warnings,
            "accepted_guesses": oracle.accepted_guesses(),
            "stopped_after_round": self.stopped_after,
            "stopped_by": None if self.stopped_after is None else self.stopped_by,
            "platform": {
                "this_run": self.store.platform,
                # stages restored from another platform (--accept-platform-mix): their platforms
                "mixed": bool(self.store.mixed),
                "other_platforms": self.store.mixed,
            },
        }


def passive_of(store: Store, data: Callable[[], object], labels, *, refresh: bool, train: Callable, log) -> st.Passive:
    """The passive baseline: restored from its file when it is valid, else trained
    (``train(store, data, labels)``, which saves it) on ``data()``. Under the file's
    lock: experiments sharing the baseline (a sweep's strategies of one seed) compute
    it once, the others restore it."""
    with store.lock(st.PASSIVE):
        state, record, message = ("missing", None, None) if refresh else store.check(st.PASSIVE)
        if state == "ok":
            return record
        if message:
            (log.warning if state == "damaged" else log.info)(message)
        return train(store, data(), labels)


class _Later:
    """A value computed when it is first asked for (a sweep's passive baseline: after
    the rounds, in the same process, instead of a subflow beside them)."""

    def __init__(self, compute: Callable):
        self.compute = compute

    def result(self):
        return self.compute()


def describe_prefix(count: int) -> str:
    """The first ``count`` stages of data, initial, calibration, round 1, ... in words
    (a passive baseline counted last, as ``restored.names`` lists it)."""
    names = ["data", "initial", "calibration"][:count]
    rounds = count - len(names)
    if rounds == 1:
        names.append("round 1")
    elif rounds > 1:
        names.append(f"rounds 1-{rounds}")
    return ", ".join(names) or "nothing"


def append(a, rows):
    return np.concatenate([np.asarray(a), np.asarray(rows, dtype=np.asarray(a).dtype)])


@standby.preparer
def prepare_standby(parameters: dict) -> str:
    """What a suspended run's standby (``runtime/standby.py``) does before the person
    answers: run once the JAX programs of the rounds still to come and draw one figure,
    so that the replay after the answer finds them warm (what ``warm_up`` does in a
    running process). Changes no number and no file."""
    config = sources.resolve(ExperimentConfig.model_validate((parameters or {}).get("config") or {}))
    if config.oracle != "human":
        return "nothing (no person answers this run)"
    first = max(0, Store(config).probe() - len(CHAIN)) + 1
    count = st.precompile(config, sources.draw(config), first_round=first, passive=False, initial=False, warm=True)
    import io

    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(1, 1))
    figure.savefig(io.BytesIO(), format="png")
    plt.close(figure)
    return f"{count} JAX programs of the rounds from round {first} run once, a figure drawn"
