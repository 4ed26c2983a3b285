"""The wiring of one experiment inside the ``active-learning`` flow.

:class:`Loop` restores what the folder holds, runs the stages still to run as
tasks (big inputs quoted, graph edges given explicitly), asks a person where the
oracle is human, and keeps the run's bookkeeping (wall times, what was restored
and computed, progress). The math is in ``alcore.stages``, the task wrappers in
``tasks.stages``; the flow itself (``flows.active_learning``) only calls this.
"""

import contextvars
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import get_run_context
from prefect.futures import PrefectConcurrentFuture
from prefect.states import Completed
from prefect.utilities.annotations import quote

from alcore import stages as st
from alcore.config import ExperimentConfig
from flows import oracle
from tasks import plots, pool_plots, stages
from tasks.answers import AnswerBook, resolve
from tasks.report import artifact_key
from tasks.store import Restored, Store
from tasks.workspace import check_writable

FAULT_ENV = "BAL_FAULT_ONCE"


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


class Loop:
    """One experiment's run: restore, prepare, rounds, and what the report needs."""

    def __init__(self, config: ExperimentConfig, refresh: bool):
        self.config = config
        self.refresh = refresh
        self.log = get_run_logger()
        self.t_start = time.perf_counter()
        self.store = Store(config)
        self.folder = self.store.workspace.root
        check_writable(self.folder)
        self.store.workspace.write_config(config)
        self.book = AnswerBook(self.folder / "answers.jsonl")
        self.human = config.oracle == "human"
        self.seconds: dict[str, float] = {}
        self.round_seconds: dict[str, float] = {}
        self.restored = Restored()
        self.last = None  # the state of the latest task: the next one's graph edge
        self.rounds: list[st.RoundSummary] = []
        self.stopped_after: int | None = None

    # ------------------------------------------------------------ running tasks
    def run(self, stage_task, *args, after=(), name: str, **kwargs):
        """Run one stage task; returns (result, edge): ``after`` takes the edges of
        the tasks it depends on (the run graph's arrows)."""
        t0 = time.perf_counter()
        edges = [e for e in after if e is not None]
        state = stage_task(*args, **kwargs, return_state=True, wait_for=edges or None)
        if state.is_failed() and state.name == "CannotWrite":
            raise StageCannotWrite(state.message)
        result = state.result()
        self.seconds[name] = time.perf_counter() - t0
        return result, _edge(state.state_details.task_run_id)

    # ------------------------------------------------------------ restore
    def restore(self) -> None:
        """Load the finished stages (one ``restore`` task), unless refreshing."""
        self.book.read()
        for message in self.book.warnings:
            self.log.warning(message)
        found = 0 if self.refresh else self.store.probe()
        passive = not self.refresh and self.config.passive and self.store.probe_passive()
        if not found and not passive:
            return
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

    # ------------------------------------------------------------ data, initial training, calibration
    def prepare_data(self):
        """The data, labelled by the oracle (saved before anything uses them)."""
        data = self.restored.data
        if data is None:
            drawn, generated = self.run(stages.generate_data, self.store, after=[self.last], name="data")
            initial_labels, calibration_labels = self._label_data(drawn) if self.human else (None, None)
            data, self.last = self.run(
                stages.label_data,
                self.store,
                quote(drawn),
                initial_labels,
                calibration_labels,
                after=[generated],
                name="data/label",
            )
        self.data = data
        return data

    def prepare_model(self):
        """Initial training and calibration."""
        data = self.data
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
            len(data.y_calibration),
        )
        self.initial, self.calibration = initial, calibration
        self.prior_prec = calibration.prior_prec
        return initial, calibration

    def _label_data(self, drawn) -> tuple[list[int], list[int]]:
        self.data = drawn  # the forms need the class names
        """A person labels the initial and the calibration points, one form each."""
        out = []
        for ask, points, what in (
            ("initial", drawn.x_initial, f"the {len(drawn.x_initial)} initial training points"),
            ("calibration", drawn.x_calibration, f"the {len(drawn.x_calibration)} held-out calibration points"),
        ):
            answers = self.book.for_ask(ask)
            answer = answers[-1] if answers else self._ask_points(ask, points, what)
            out.append([answer.labels[i] for i in range(len(points))])
        return out[0], out[1]

    def _ask_points(self, ask: str, points: np.ndarray, what: str):
        path = self.folder / "forms" / f"{ask}.png"
        if self.data.grid_size:
            png = plots.points_plot(path, points, f"{len(points)} points to label")
        else:
            proj = pool_plots.Projection(self.data.pool)
            png = pool_plots.points_plot(path, proj, points, f"{len(points)} points to label")
        described = [self._describe(p) for p in points]
        rows = "\n".join(f"| point_{n} | {text} |" for n, text in enumerate(described, start=1))
        body = (
            f"Label {what}: choose the class of every point.\n\n{oracle.image_markdown(png, ask)}\n\n"
            f"| field | point |\n|---|---|\n{rows}\n"
        )
        return oracle.ask(
            self.book,
            ask=ask,
            title=f"{what} of experiment {self.folder.name}",
            points=[
                (i, [float(v) for v in p], text) for i, (p, text) in enumerate(zip(points, described, strict=True))
            ],
            classes=self.classes,
            body=body,
            wait_seconds=self.config.label_wait_seconds,
            allow_skip=False,
            allow_stop=False,
        )

    @property
    def classes(self) -> list[str]:
        """The class names a form offers."""
        return list(self.data.classes)

    # ------------------------------------------------------------ the passive baseline's labels
    def passive_labels(self) -> list[int] | None:
        """With a human oracle, a person labels the passive baseline's points (one
        form), unless its file was restored; None otherwise."""
        if not self.human or self.restored.passive is not None:
            return None
        points = st.passive_points(self.config, self.data)[0]
        answers = self.book.for_ask("passive")
        what = f"the passive baseline's {len(points)} points"
        answer = answers[-1] if answers else self._ask_points("passive", points, what)
        return [answer.labels[i] for i in range(len(points))]

    # ------------------------------------------------------------ rounds
    def loop(self) -> None:
        """The rounds still to run, after the restored ones."""
        progress = Progress(self.config)
        self.rounds = list(self.restored.rounds)
        last_round = self.restored.last_round
        if last_round is not None:
            state, x, y = last_round.state, last_round.x_labelled, last_round.y_labelled
            self.prior_prec = last_round.prior_prec if last_round.prior_prec is not None else self.prior_prec
        else:
            state, x, y = self.initial.state, self.data.x_initial, self.data.y_initial
        progress.update(len(self.rounds))
        for summary in self.rounds:
            if self._stop_requested(summary.round):
                self.stopped_after = summary.round
                break
        retrained_state = None  # the previous round's retrain: the state the next acquisition scores with
        r = len(self.rounds)
        while self.stopped_after is None and r < self.config.rounds:
            r += 1
            t_round = time.perf_counter()
            state, x, y, retrained_state = self._round(r, state, x, y, retrained_state)
            progress.update(r)
            self.round_seconds[f"round-{r:02d}"] = time.perf_counter() - t_round
            fault_point(self.folder, f"after-round-{r}")
            if self._stop_requested(r):
                self.stopped_after = r
                self.log.info("stopping after round %d, as the person asked", r)
        progress.update(len(self.rounds), final=True)

    def _stop_requested(self, r: int) -> bool:
        return self.human and any(a.stop for a in self.book.for_ask(f"round-{r:03d}"))

    def _round(self, r: int, state, x, y, retrained_state):
        name = f"round-{r:02d}"
        acquired, acq, answers = self._acquire_and_ask(r, state, x, y, retrained_state)
        labels, lab = self.run(
            stages.label, self.store, r, quote(self.data), quote(acquired), answers, after=[acq], name=f"{name}/label"
        )
        x = append(x, acquired.points)
        y = append(y, labels)
        retrained, ret = self.run(
            stages.retrain,
            self.store,
            r,
            quote(state),
            quote(x),
            quote(y),
            after=[lab, self.last],
            name=f"{name}/retrain",
        )
        evaluated_after = [acq, lab, ret]
        if st.recalibrates_after(self.config, r):
            recalibrated, cal = self.run(
                stages.recalibrate,
                self.store,
                r,
                quote(self.data),
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
            quote(self.data),
            quote(acquired),
            labels,
            quote(retrained),
            quote(x),
            quote(y),
            self.prior_prec,
            after=evaluated_after,
            name=f"{name}/evaluate",
        )
        self.rounds.append(record.summary())
        picked = ", ".join(
            f"{self._describe_point(i)} -> class {self.data.classes[c]}"
            for i, c in zip(acquired.indices, labels, strict=True)
        )
        self.log.info(
            "round %d/%d: labelled %s; accuracy %.2f %%", r, self.config.rounds, picked, 100 * record.accuracy
        )
        return retrained.state, x, y, ret

    def _acquire_and_ask(self, r: int, state, x, y, retrained_state):
        """Acquire the round's points and get their labels' answers: for a human, ask
        until every point has a class (a skipped point is excluded and the next
        best one proposed); the ledger answers what was asked before."""
        ask = f"round-{r:03d}"
        while True:
            exclude = self.book.skipped() if self.human else []
            if self.config.exclude_labelled:
                exclude += [i for summary in self.rounds for i in summary.indices]
            acquired, acq = self.run(
                stages.acquire,
                self.store,
                r,
                quote(self.data),
                quote(state),
                quote(x),
                quote(y),
                self.prior_prec,
                exclude,
                after=[retrained_state, self.last],
                name=f"round-{r:02d}/acquire",
            )
            if not self.human:
                return acquired, acq, None
            labels = resolve(self.book.for_ask(ask), acquired.indices)
            missing = [i for i in acquired.indices if i not in labels]
            if not missing:
                return acquired, acq, labels
            answer = self._ask_round(r, acquired, missing, state, x, y)
            if not answer.skipped:
                labels = resolve(self.book.for_ask(ask), acquired.indices)
                return acquired, acq, labels

    def _ask_round(self, r: int, acquired: st.Acquired, missing: list[int], state, x, y):
        probs = st.class_probabilities(state.params, self.data.pool[missing])
        png = self._form_map(r, acquired, missing, x, y)
        rows = []
        points = []
        for n, (i, p) in enumerate(zip(missing, probs, strict=True), start=1):
            where = self._describe_point(i)
            guess = self.data.classes[int(np.argmax(p))]
            rows.append(f"| point_{n} | {where} | {guess} ({100 * np.max(p):.0f} %) |")
            points.append((i, self.data.pool[i].tolist(), f"{where}; the model guesses {guess}"))
        body = (
            f"The model's uncertainty over the grid; the point(s) to label are starred.\n\n"
            f"{oracle.image_markdown(png, f'round {r}')}\n\n"
            "| field | point | the model's guess |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Choose a class for each point, or *{oracle.CANNOT_LABEL}* (it is then never proposed again and the "
            "next best point is asked instead). *Stop after this round* ends the loop after this round."
        )
        return oracle.ask(
            self.book,
            ask=f"round-{r:03d}",
            title=f"Round {r} of {self.config.rounds}, {len(missing)} point{'s' if len(missing) > 1 else ''}",
            points=points,
            classes=self.classes,
            body=body,
            wait_seconds=self.config.label_wait_seconds,
            allow_skip=True,
            allow_stop=True,
        )

    def _describe_point(self, i: int) -> str:
        """A candidate as a person reads it (its pool index beyond the tutorial)."""
        text = self._describe(self.data.pool[i])
        return text if self.data.grid_size else f"pool #{i}: {text}"

    def _describe(self, x: np.ndarray) -> str:
        """A point's features in the data's own units (before standardisation)."""
        raw = x * self.data.scaler[1] + self.data.scaler[0] if self.data.scaler is not None else x
        if len(raw) <= 4:
            return "(" + ", ".join(f"{v:.3f}" for v in raw) + ")"
        return "(" + ", ".join(f"{v:.3g}" for v in raw[:4]) + f", ... {len(raw)} features)"

    def _form_map(self, r: int, acquired: st.Acquired, missing: list[int], x, y):
        """The uncertainty map with the points to label starred (no true boundaries)."""
        path = self.folder / "forms" / f"round-{r:03d}.png"
        title = f"Round {r}: {self.config.acquisition} scores; label the starred point(s)"
        picks = self.data.pool[missing]
        if self.data.grid_size:
            return plots.uncertainty_plot(
                path, acquired.preds, acquired.scores, self.data.grid_size, x, y, picks, title, truth=False
            )
        proj = pool_plots.Projection(self.data.pool)
        return pool_plots.uncertainty_plot(
            path, proj, self.data.pool, acquired.preds, acquired.scores, x, y, picks, title, self.data.n_classes
        )

    # ------------------------------------------------------------ bookkeeping
    def run_info(self) -> dict:
        return {
            "flow_run_id": str(get_run_context().flow_run.id),
            "wall_seconds": {**self.seconds, "total_before_report": time.perf_counter() - self.t_start},
            "round_seconds": self.round_seconds,  # each computed round in the flow: its tasks and bookkeeping
            "restored": self.restored.names,
            "computed": [n for n in self.seconds if n != "restore"],
            "warnings": self.restored.warnings + self.book.warnings,
            "stopped_after_round": self.stopped_after,
        }


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


class Progress:
    """The rounds' progress artifact, updated at most once a second. The updates go
    from a thread of their own, in order: a blocking API call each, which the rounds
    need not wait for (about 50 ms each while the server is busy, measured)."""

    def __init__(self, config: ExperimentConfig):
        self.total = config.rounds
        self.last = 0.0
        self.id = create_progress_artifact(
            progress=0.0, key=artifact_key(config, "progress"), description="Active-learning rounds finished"
        )
        self.sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bal-progress")
        self.context = contextvars.copy_context()

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= 1.0:
            progress = 100.0 * done / self.total if self.total else 100.0
            sent = self.sender.submit(self.context.copy().run, update_progress_artifact, self.id, progress=progress)
            self.last = now
            if final:
                sent.result()  # the last one is in before the run ends
                self.sender.shutdown()


def fault_point(folder, name: str) -> None:
    """Fail once at a named point, for testing retries and resume for real.

    With ``BAL_FAULT_ONCE=after-round-3`` the flow raises after round 3 the first time
    it gets there in this experiment folder (a marker file remembers it), as a crash
    would; a retry or a re-run then passes. Unset (always, outside tests): a no-op.
    """
    if os.environ.get(FAULT_ENV) != name:
        return
    marker = folder / f".fault-{name}"
    if marker.exists():
        return
    marker.touch()
    raise RuntimeError(f"injected fault at {name} ({FAULT_ENV})")


def append(a, rows):
    return np.concatenate([np.asarray(a), np.asarray(rows, dtype=np.asarray(a).dtype)])
