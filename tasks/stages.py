"""The experiment's stages as Prefect tasks.

Each task wraps one ``alcore.experiment`` function. Caching: every task is keyed on
(stage, round, hash of the parameters the stage depends on, code version) through
``cache_key_fn``, never on its array inputs, and its (small) return value is
persisted, so a re-run of the same configuration finds finished stages ``Cached``.
Each stage also writes its full state to a checksummed file in the experiment
folder (``tasks.storage``), which the flow verifies before it trusts the cache.
"""

import time
from typing import Any

import numpy as np
from prefect import task

from alcore import experiment as ex
from alcore.config import ExperimentConfig
from alcore.problem import true_labels
from tasks import storage
from tasks.workspace import CODE_VERSION, Workspace

RETRIES = 1  # a transient failure (e.g. a full disk cleared meanwhile) gets one retry


def cache_key(stage: str, *, key: str = "round"):
    """``cache_key_fn`` for a stage: (stage, round, config hash, code version).

    ``key`` names the hash: ``round`` (what every round depends on) or ``passive``.
    """

    def key_fn(context, parameters: dict[str, Any]) -> str:
        config: ExperimentConfig = parameters["config"]
        digest = config.passive_hash() if key == "passive" else config.round_hash()
        return f"bal-{stage}-r{parameters.get('round_index', 0):04d}-{digest}-{CODE_VERSION}"

    return key_fn


def stage_task(stage: str, name: str, *, key: str = "round"):
    """The task decorator all stages share."""
    return task(
        name=stage,
        task_run_name=name,
        cache_key_fn=cache_key(stage, key=key),
        persist_result=True,
        retries=RETRIES,
    )


def train_with(config: ExperimentConfig, x: np.ndarray, y: np.ndarray, *, epochs: int):
    """Train the configuration's MLP from its seeded initialisation (initial, passive)."""
    return ex.train_from_scratch(
        x,
        y,
        seed=config.seed,
        hidden_channels=config.hidden_channels,
        learning_rate=config.learning_rate,
        epochs=epochs,
        batch_size=config.batch_size,
    )


def data_for(config: ExperimentConfig, *, passive: bool = False) -> ex.Data:
    """The configuration's data; the passive points only when asked for (their number
    depends on the rounds, which the active loop's stages must not)."""
    return ex.generate_data(
        seed=config.seed,
        n_initial=config.n_initial,
        n_calibration=config.n_calibration,
        n_passive=config.n_passive if passive else 0,
        grid_size=config.grid_size,
    )


@stage_task("data", "data/generate")
def generate_data(config: ExperimentConfig) -> ex.Data:
    """Initial and calibration points, the grid and its true labels, the sampling key."""
    data = data_for(config)
    storage.save(Workspace.for_config(config).stage_file("data"), data._asdict())
    return data


@stage_task("initial", "model/initial-training")
def initial_training(config: ExperimentConfig, data: ex.Data) -> dict:
    """Train the MLP from its seeded initialisation on the initial points."""
    t0 = time.perf_counter()
    state, losses = train_with(config, data.x_initial, data.y_initial, epochs=config.initial_epochs)
    accuracy = ex.accuracy(ex.predict(state.params, data.grid), data.grid_labels)
    result = {"state": state, "losses": losses, "accuracy": accuracy, "seconds": time.perf_counter() - t0}
    storage.save(Workspace.for_config(config).stage_file("initial"), result)
    return result


@stage_task("calibration", "model/calibrate-prior")
def calibrate(config: ExperimentConfig, data: ex.Data, initial: dict) -> dict:
    """Prior precision by ECE grid search on the calibration set (the tutorial's)."""
    t0 = time.perf_counter()
    tau, grid, curve = ex.calibrate_prior_precision(
        initial["state"].params,
        data.x_calibration,
        data.y_calibration,
        curvature=config.curvature,
        log_min=config.log_prior_prec_min,
        log_max=config.log_prior_prec_max,
        size=config.calibration_grid_size,
        mc_samples=config.mc_samples,
    )
    result = {"prior_prec": tau, "grid": grid, "ece": curve, "seconds": time.perf_counter() - t0}
    storage.save(Workspace.for_config(config).stage_file("calibration"), result)
    return result


@stage_task("acquire", "round-{round_index:02d}/acquire")
def acquire(
    config: ExperimentConfig,
    round_index: int,
    data: ex.Data,
    state: ex.ModelState,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    prior_prec: float,
) -> dict:
    """Score the grid and choose the round's point(s) to label."""
    t0 = time.perf_counter()
    key = ex.round_key(data.sampling_key, round_index) if config.acquisition in ("sampled", "random") else None
    indices, scores, preds = ex.acquire(
        state.params,
        x_labelled,
        y_labelled,
        data.grid,
        strategy=config.acquisition,
        batch=config.acquisition_batch,
        prior_prec=prior_prec,
        curvature=config.curvature,
        predictive_samples=config.predictive_samples,
        key=key,
    )
    return {
        "indices": indices,
        "points": np.asarray(data.grid[indices]),
        "scores": scores.astype(np.float32),
        "preds": preds.astype(np.int8),
        "seconds": time.perf_counter() - t0,
    }


@stage_task("label", "round-{round_index:02d}/label")
def label(config: ExperimentConfig, round_index: int, points: np.ndarray) -> list[int]:
    """Ask the oracle (the ground-truth function) for the labels of ``points``."""
    return [int(v) for v in np.asarray(true_labels(np.asarray(points, np.float32)))]


@stage_task("retrain", "round-{round_index:02d}/retrain")
def retrain(
    config: ExperimentConfig,
    round_index: int,
    state: ex.ModelState,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
) -> dict:
    """Continue training on the grown labelled set, optimizer state carried over."""
    t0 = time.perf_counter()
    new_state, losses = ex.retrain(
        state,
        x_labelled,
        y_labelled,
        learning_rate=config.learning_rate,
        epochs=config.epochs_per_round,
        batch_size=config.batch_size,
    )
    return {"state": new_state, "losses": losses, "seconds": time.perf_counter() - t0}


@stage_task("evaluate", "round-{round_index:02d}/evaluate")
def evaluate(
    config: ExperimentConfig,
    round_index: int,
    data: ex.Data,
    acquired: dict,
    labels: list[int],
    retrained: dict,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
) -> dict:
    """Grid accuracy of the retrained model; writes the round's file (its full state)."""
    t0 = time.perf_counter()
    accuracy = ex.accuracy(ex.predict(retrained["state"].params, data.grid), data.grid_labels)
    seconds = acquired["seconds"] + retrained["seconds"] + time.perf_counter() - t0
    path = Workspace.for_config(config).round_file(round_index)
    record = {
        "round": round_index,
        "indices": acquired["indices"],
        "points": acquired["points"],
        "labels": labels,
        "accuracy": accuracy,
        "scores": acquired["scores"],
        "preds": acquired["preds"],
        "x_labelled": x_labelled,
        "y_labelled": y_labelled,
        "state": retrained["state"],
        "losses": retrained["losses"],
        "sampling_key": data.sampling_key,
        "seconds": seconds,
    }
    digest = storage.save(path, record)
    return {
        "round": round_index,
        "indices": acquired["indices"],
        "points": acquired["points"].tolist(),
        "labels": labels,
        "accuracy": accuracy,
        "n_labelled": len(y_labelled),
        "file": str(path),
        "sha256": digest,
        "seconds": seconds,
    }


@stage_task("passive-train", "passive/train", key="passive")
def passive_train(config: ExperimentConfig) -> dict:
    """The passive baseline: uniform points, the same label and epoch budget."""
    t0 = time.perf_counter()
    data = data_for(config, passive=True)
    state, losses = train_with(config, data.x_passive, data.y_passive, epochs=config.passive_epochs)
    preds = ex.predict(state.params, data.grid)
    result = {
        "accuracy": ex.accuracy(preds, data.grid_labels),
        "x": data.x_passive,
        "y": data.y_passive,
        "preds": preds.astype(np.int8),
        "state": state,
        "losses": losses,
        "seconds": time.perf_counter() - t0,
    }
    storage.save(Workspace.for_config(config).passive_file(config), result)
    return result
