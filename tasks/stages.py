"""Prefect tasks around the core's stages: each runs one stage's function and saves its record.

Each task wraps one function of ``alcore.stages`` and writes the record to the
experiment folder (``store.experiment.Store``), which is the only store a resume reads:
the tasks keep no Prefect result (``persist_result=False``) and look nothing up in
a Prefect cache (``NO_CACHE``). What was restored instead of computed shows in the
run graph as one ``restore/...`` task listing it.

The tasks are lean on purpose (the flow's bookkeeping should cost less than the
math): no tags (a tagged task makes a blocking API call for concurrency slots on
every run), no cache key or result to compute, write or read, and the flow passes
the big inputs wrapped in ``quote`` so Prefect does not traverse them; the run
graph's edges come from ``wait_for`` instead.
"""

import functools
import time

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

import sources
from alcore import stages as st
from store import files
from store.experiment import PlatformMix, Restored, Store


def stage_task(name: str, run_name: str):
    """The task decorator every stage shares. A stage that cannot write its file (a
    full disk, a read-only folder) ends in the state ``CannotWrite``, one that would
    resume from another numeric platform's files in ``PlatformMix``, each with one
    clear message, not an exception's traceback."""

    def decorate(fn):
        @functools.wraps(fn)
        def quietly(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except files.CannotWrite as e:
                return Failed(name="CannotWrite", message=str(e))
            except PlatformMix as e:
                return Failed(name="PlatformMix", message=str(e))

        return task(name=name, task_run_name=run_name, cache_policy=NO_CACHE, persist_result=False)(quietly)

    return decorate


@stage_task("restore", "restore/{what}")
def restore(store: Store, what: str, passive: bool = False) -> Restored:
    """Load and verify the finished stages from the experiment folder (``what`` only
    names the task run: the longest valid prefix is restored, and the task's result
    and log list exactly what), and the passive baseline when ``passive``."""
    return store.restore(passive=passive)


@stage_task("data", "data/generate")
def generate_data(store: Store, reuse: bool = False):
    """Initial and calibration points, the grid and its true labels, the sampling key
    (``reuse``, a sweep's: the same draw made by another experiment, on any worker,
    or by this process before, read-only)."""
    if not reuse:
        return sources.draw(store.config)
    shared = store.shared_draw()
    if shared is not None:
        return shared
    data = sources.draw(store.config, reuse=True)
    store.share_draw(data)
    return data


@stage_task("data-label", "data/label")
def label_data(store: Store, drawn, initial: list[int] | None, calibration: list[int] | None):
    """The data with the oracle's labels (the truth's, or a person's answers); saved."""
    data = st.label_data(store.config, drawn, initial, calibration)
    store.save(st.DATA, data)
    return data


@stage_task("initial", "model/initial-training")
def initial_training(store: Store, data) -> st.Initial:
    """Train the MLP from its seeded initialisation on the initial points."""
    t0 = time.perf_counter()
    result = st.initial_training(store.config, data)
    store.save(st.INITIAL, result, seconds=time.perf_counter() - t0)
    return result


@stage_task("calibration", "model/calibrate-prior")
def calibrate(store: Store, data, initial: st.Initial) -> st.Calibration:
    """Prior precision by ECE grid search on the calibration set (the tutorial's)."""
    t0 = time.perf_counter()
    result = st.calibrate(store.config, data, initial)
    store.save(st.CALIBRATION, result, seconds=time.perf_counter() - t0)
    return result


@stage_task("acquire", "round-{round_index:02d}/acquire")
def acquire(
    store: Store, round_index: int, data, state, x_labelled, y_labelled, prior_prec: float, exclude: list[int]
) -> st.Acquired:
    """Score the candidates and choose the round's point(s) to label. With a person
    as the oracle the result is kept until the round is done, and taken back by a run
    that replays the round (``Store.save_acquired``)."""
    person = store.config.oracle == "human"
    if person and (kept := store.load_acquired(round_index, y_labelled, exclude)) is not None:
        return kept
    acquired = st.acquire(store.config, round_index, data, state, x_labelled, y_labelled, prior_prec, exclude)
    if person:
        store.save_acquired(round_index, y_labelled, exclude, acquired)
    return acquired


@stage_task("label", "round-{round_index:02d}/label")
def label(store: Store, round_index: int, data, acquired: st.Acquired, answers: dict | None) -> list[int]:
    """The oracle's labels of the acquired points: the ground truth's, or the
    person's answers (already in the ledger: this records them in the round)."""
    return st.labels_of(store.config, data, acquired, answers)


@stage_task("retrain", "round-{round_index:02d}/retrain")
def retrain(store: Store, round_index: int, state, x_labelled, y_labelled, prior_prec: float) -> st.Retrained:
    """Train on the grown labelled set (the tutorial's: continue, optimizer state
    carried over; ``prior_prec``: the prior precision in force, for the loss)."""
    return st.retrain(store.config, state, x_labelled, y_labelled, prior_prec)


@stage_task("recalibrate", "round-{round_index:02d}/recalibrate")
def recalibrate(store: Store, round_index: int, data, state, x_labelled, y_labelled) -> st.Calibration:
    """The prior precision again, for the grown labelled set and the retrained model."""
    return st.recalibrate(store.config, data, state, x_labelled, y_labelled)


@stage_task("evaluate", "round-{round_index:02d}/evaluate")
def evaluate(
    store: Store,
    round_index: int,
    data,
    acquired,
    labels,
    retrained,
    x_labelled,
    y_labelled,
    prior_prec: float,
    seconds: float,
) -> st.RoundRecord:
    """Test accuracy of the retrained model; writes the round's file (its full state)
    with the round's compute seconds (``seconds``: its earlier tasks')."""
    t0 = time.perf_counter()
    record = st.evaluate(
        store.config, round_index, data, acquired, labels, retrained, x_labelled, y_labelled, prior_prec
    )
    store.save(st.ROUND, record, round_index, seconds=seconds + time.perf_counter() - t0)
    return record


@stage_task("passive-train", "passive/train")
def passive_train(store: Store, data, labels: list[int] | None = None) -> st.Passive:
    """The passive baseline: uniform points, the same label and epoch budget."""
    t0 = time.perf_counter()
    result = st.passive_baseline(store.config, data, labels)
    store.save(st.PASSIVE, result, seconds=time.perf_counter() - t0)
    return result
