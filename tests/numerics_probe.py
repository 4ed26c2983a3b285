"""Hashes of every kind of stage the experiment computes, for comparing two processes.

    python -m tests.numerics_probe

Prints one JSON object: a hash per stage (the tutorial's data, initial training, ECE
calibration curve, two rounds of acquisition with the Laplace predictive and retraining,
the passive baseline, and a digits round whose Laplace sums exceed one Eigen block).
``tests/test_numerics.py`` runs it under conditions that simulate two machines and
compares the hashes, and so does ``tests/test_compile_cache.py`` with and without
compiled programs loaded from disk.
"""

import hashlib
import json

import jax
import numpy as np

import alcore  # noqa: F401, I001 - first: the numeric settings (alcore/numerics.py)
import sources
from alcore import numerics
from alcore import stages as st
from alcore.config import ExperimentConfig


def digest(*trees) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(trees):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]


def rounds(config: ExperimentConfig, data, state, prior_prec: float, n: int) -> str:
    """``n`` rounds from ``state``: acquisition scores, picks and retrained parameters."""
    x, y, out = data.x_initial, data.y_initial, []
    for r in range(1, n + 1):
        acquired = st.acquire(config, r, data, state, x, y, prior_prec)
        labels = st.labels_of(config, data, acquired)
        x, y = np.concatenate([x, acquired.points]), np.concatenate([y, np.asarray(labels, np.int32)])
        state = st.retrain(config, state, x, y, prior_prec).state
        out.append(digest(acquired.scores, acquired.indices, state.params))
    return digest(out)


def main() -> None:
    cache_events = {"hits": 0, "misses": 0}  # JAX's persistent compilation cache (alcore/compile_cache.py)

    def count(event: str, **_) -> None:
        for kind in cache_events:
            if event == f"/jax/compilation_cache/cache_{kind}":
                cache_events[kind] += 1

    jax.monitoring.register_event_listener(count)
    tutorial = ExperimentConfig(rounds=10)
    data = sources.draw(tutorial)
    initial = st.initial_training(tutorial, data)
    calibration = st.calibrate(tutorial, data, initial)
    margin = tutorial.model_copy(update={"acquisition": "margin"})
    passive = st.passive_baseline(tutorial, data)
    digits = ExperimentConfig(data="digits", n_initial=40, acquisition="margin", initial_epochs=200)
    digits_data = sources.draw(digits)
    digits_initial = st.initial_training(digits, digits_data)
    hashes = {
        "data": digest(data.x_initial, data.x_calibration, data.pool),
        "initial": digest(initial.state.params, initial.losses),
        "calibration": digest(calibration.curve, calibration.prior_prec),
        "rounds_max_std": rounds(tutorial, data, initial.state, calibration.prior_prec, 2),
        "rounds_margin": rounds(margin, data, initial.state, calibration.prior_prec, 2),
        "passive": digest(passive.state.params, passive.accuracy),
        "digits_round": rounds(digits, digits_data, digits_initial.state, 1.0, 1),
    }
    print(json.dumps({"hashes": hashes, "platform": numerics.platform(), "compile_cache": cache_events}))


if __name__ == "__main__":
    main()
