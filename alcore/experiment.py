"""One experiment's math over plain arrays: train, the posterior's scores, the picks, evaluate.

The stages (``alcore/stages.py``) call these functions. Each is deterministic given
its inputs (JAX on the CPU is), takes keyword hyperparameters, and returns numpy
arrays or floats, so results pickle compactly and compare exactly.

A round r = 1..R is: acquire (the acquisition scores of the current model over the
candidates and the chosen point), label (the oracle), retrain (epochs over the grown
set with the optimizer state carried over), evaluate (test accuracy; the tutorial's
test set is its grid). The tutorial computes the first acquisition before its loop
and one unused acquisition after it; the points, models and accuracies are the same.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alcore import acquisition, calibration, epig, laplace, strategies, training
from alcore.model import HIDDEN_LAYERS, forward, init_params, n_layers

CAPACITY_CHUNK = 128  # labelled-set arrays are padded to a multiple of this (3 classes)
CAPACITY_ROWS = 256  # ... and to about this many rows of the dual form for more classes
POSTERIOR_ROWS = 64  # the posterior's padding step, in rows of the dual form (see posterior_capacity)
TRAIN_CHUNK = 32  # full-batch training pads the labelled set to a multiple of this (see training_capacity)


class ModelState(NamedTuple):
    """Parameters and Adam state (nested dicts / optax states of numpy arrays)."""

    params: dict
    opt_state: tuple


def capacity(n_points: int, n_classes: int = 3) -> int:
    """Padded size of the labelled set: fixed shapes, so no recompilation per round.

    The dual form's matrices are n (C - 1) wide, so the padding step shrinks as the
    classes grow (256 / (C - 1) points, rounded up to a multiple of 8): 128 points for
    the tutorial's 3 classes, 32 for 10 classes, keeping the padded width near 256.
    """
    chunk = CAPACITY_CHUNK if n_classes <= 3 else max(8, 8 * -(-CAPACITY_ROWS // (n_classes - 1) // 8))
    return chunk * -(-n_points // chunk)


def posterior_capacity(n_points: int, n_classes: int = 3) -> int:
    """Padded size of the labelled set in the posterior: a finer step than
    :func:`capacity` (32 points for 3 classes, 8 for 10), since the predictive's cost
    grows with the square of the dual form's width: a round of the tutorial's 20-70
    labels then computes on 64-192 rows instead of 256 (its probability scores 4-9x
    faster, measured), at the price of a new compilation every step. The padded rows
    are masked out: the results were bit-identical across paddings on the tutorial
    at 20, 45, 70 and 100 labels (measured; ``tests/test_core.py`` asserts them
    equal to float64 rounding), and the tutorial's promised numbers are unchanged."""
    chunk = max(8, 8 * -(-POSTERIOR_ROWS // max(n_classes - 1, 1) // 8))
    return chunk * -(-n_points // chunk)


def training_capacity(n_points: int, n_classes: int = 3, batch_size: int = 0) -> int:
    """Padded size of the labelled set in full-batch training (``batch_size`` 0): a
    multiple of :data:`TRAIN_CHUNK`, so a round trains on at most 31 padded rows
    instead of up to 127 (the pools' 1,000 full-batch steps a round: 0.049 s on 128
    rows, 0.030 s on 64, measured). Masked rows add exact zeros, and on paddings that
    are multiples of 32 the trained parameters were bit-identical (21-150 points, 2-64
    features, 3 and 10 classes, at every such padding up to 256; not at 72 or 80:
    ``tests/test_core.py``), so this changes no number. Mini-batch training (the
    tutorial's) keeps :func:`capacity`: its batches have a fixed size whatever the
    padding, so a finer step would only compile more programs."""
    if batch_size:
        return capacity(n_points, n_classes)
    return TRAIN_CHUNK * -(-n_points // TRAIN_CHUNK)


def to_numpy(tree):
    """A pytree of JAX arrays as numpy arrays (compact, exact pickles)."""
    return jax.tree.map(np.asarray, tree)


def train_from_scratch(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    hidden_channels: int,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    n_classes: int = 3,
    hidden_layers: int = HIDDEN_LAYERS,
    compile_only: bool = False,
) -> tuple[ModelState, np.ndarray] | None:
    """Initialise the MLP from ``seed`` and train it; returns the state and per-epoch losses.

    The network's input follows ``x`` (d features) and its output ``n_classes``.
    ``batch_size`` 0: full batches. ``compile_only``: compile the training program for
    these shapes, run nothing (what ``alcore.stages.precompile`` uses, so it compiles
    exactly what this runs).
    """
    params = init_params(
        seed=seed, hidden=hidden_channels, in_dim=np.shape(x)[1], n_classes=n_classes, hidden_layers=hidden_layers
    )
    tx = training.make_optimizer(learning_rate=learning_rate)
    schedule = training.epoch_batches(n_points=len(x), n_epochs=epochs, batch_size=batch_size)
    args = (params, tx.init(params), jnp.asarray(x), jnp.asarray(y), schedule)
    if compile_only:
        return training.compile_train(*args, tx=tx)
    params, opt_state, losses = training.train(*args, tx=tx)
    return ModelState(to_numpy(params), to_numpy(opt_state)), training.last_losses(losses)


RESTARTS = ("warm", "fresh", "scratch")  # how retraining starts each round (alcore.config's retrain_schedule)


def calibrate_prior_precision(
    params: dict,
    x_cal: np.ndarray,
    y_cal: np.ndarray,
    *,
    curvature: str,
    log_min: float,
    log_max: float,
    size: int,
    mc_samples: int,
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """The tutorial's calibration: the GGN and the ECE are both the calibration set's.

    Returns the prior precision, the grid, and the ECE curve (None on laplax's path).
    """
    if curvature == "full":
        tau, grid, curve = calibration.calibrate(
            params,
            np.asarray(x_cal),
            np.ones(len(x_cal)),
            np.asarray(x_cal),
            np.asarray(y_cal),
            log_min=log_min,
            log_max=log_max,
            size=size,
            num_samples=mc_samples,
        )
        return tau, grid, curve
    from alcore import laplax_path  # laplax only for the curvatures the dual form does not cover

    tau = laplax_path.calibrate(
        params,
        x_cal,
        y_cal,
        x_cal,
        y_cal,
        log_prior_prec_min=log_min,
        log_prior_prec_max=log_max,
        grid_size=size,
        curv_type=curvature,
    )
    return tau, calibration.prior_prec_grid(log_min=log_min, log_max=log_max, size=size), None


def predict(params: dict, x: np.ndarray, *, compile_only: bool = False) -> np.ndarray | None:
    """Predicted class at each input (``compile_only``: compile for these shapes only)."""
    if compile_only:
        return _predict.lower(params, jnp.asarray(x)).compile()
    return np.asarray(_predict(params, jnp.asarray(x)))


@jax.jit
def _predict(params, x):
    return jnp.argmax(forward(params, x), axis=-1)


def n_classes_of(params: dict) -> int:
    """The number of classes a network's parameters output."""
    last = params[max(params, key=lambda name: int(name.removeprefix("linear")))]
    return int(np.shape(last["bias"])[0])


def padded(
    x: np.ndarray, y: np.ndarray | None = None, *, n_classes: int = 3, cap: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled set padded to ``cap`` rows (default :func:`capacity`): (x, y,
    mask), so the shapes of every program that takes it change only every step."""
    n = len(x)
    cap = capacity(n, n_classes) if cap is None else cap
    x_pad = np.zeros((cap, *np.shape(x)[1:]), np.float32)
    x_pad[:n] = x
    y_pad = np.zeros(cap, np.int32)
    if y is not None:
        y_pad[:n] = y
    return x_pad, y_pad, (np.arange(cap) < n).astype(np.float32)


def _posterior_padded(x_labelled: np.ndarray, n_classes: int):
    return padded(x_labelled, n_classes=n_classes, cap=posterior_capacity(len(x_labelled), n_classes))


def posterior_of(params: dict, x_labelled: np.ndarray) -> laplace.Posterior:
    """The dual-form posterior of the labelled set, padded to
    :func:`posterior_capacity` with a mask, so rounds reuse a few compiled programs."""
    x_pad, _, mask = _posterior_padded(x_labelled, n_classes_of(params))
    return laplace.fit_posterior(params, jnp.asarray(x_pad), jnp.asarray(mask))


def uncertainty_map(
    params: dict,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    grid: np.ndarray,
    preds: np.ndarray,
    *,
    prior_prec: float,
    curvature: str,
    compile_only: bool = False,
) -> np.ndarray | None:
    """The tutorial's acquisition score: linearised predictive std of the predicted
    class ``preds`` at every grid point, shape (G*G,).

    Curvatures other than ``full`` go through laplax (all classes, then the
    predicted one is picked, as the tutorial does). ``compile_only`` (full GGN):
    compile the posterior fit and the map for these shapes, run nothing.
    """
    if curvature == "full":
        args = (params, jnp.asarray(grid), jnp.asarray(preds), jnp.float32(prior_prec))
        if compile_only:
            x_pad, _, mask = _posterior_padded(x_labelled, n_classes_of(params))
            with jax.enable_x64(True):
                fit = laplace.fit_posterior.__wrapped__
                fit.lower(params, jnp.asarray(x_pad), jnp.asarray(mask)).compile()
                post = jax.eval_shape(fit, params, jnp.asarray(x_pad), jnp.asarray(mask))
                laplace.predictive_var_of.__wrapped__.lower(post, *args).compile()
            return None
        var = laplace.predictive_var_of(posterior_of(params, x_labelled), *args)
        return np.sqrt(np.asarray(var))
    from alcore import laplax_path

    std = np.asarray(
        laplax_path.std_map(
            params,
            jnp.asarray(x_labelled),
            jnp.asarray(y_labelled),
            jnp.asarray(grid),
            prior_prec=prior_prec,
            curv_type=curvature,
            batch_size=2500,
        )
    )
    return std[np.arange(len(preds)), preds]


ROUND_KEYS = 2048  # rounds a sampling key serves (ExperimentConfig.rounds is at most 2000)


@jax.jit
def _round_keys(sampling_key: jax.Array) -> jax.Array:
    return jax.random.key_data(jax.random.split(jax.random.wrap_key_data(sampling_key), ROUND_KEYS))


def round_key(sampling_key: np.ndarray, round_index: int) -> jax.Array:
    """Key of round r (1-based): ``split(sampling_key, R)[r - 1]`` for any R >= r
    (JAX's threefry split gives key i whatever the count). Always split to
    :data:`ROUND_KEYS` so one compiled program serves every round: splitting to r
    compiled anew each round (0.5 s a round of ``sampled`` and ``random``, measured)."""
    if not 1 <= round_index <= ROUND_KEYS:
        raise ValueError(f"round {round_index}: the sampling key serves rounds 1-{ROUND_KEYS}")
    return jax.random.wrap_key_data(_round_keys(jnp.asarray(sampling_key))[round_index - 1])


MC_KEY_SEED = 0  # the Monte-Carlo draws of probability scores: fixed, like laplax's


def _uniform_scores(params, x_labelled, y_labelled, grid, preds, **_) -> np.ndarray:
    return np.zeros(len(grid), np.float32)


def _std_scores(params, x_labelled, y_labelled, grid, preds, *, prior_prec, curvature, **_) -> np.ndarray:
    return uncertainty_map(params, x_labelled, y_labelled, grid, preds, prior_prec=prior_prec, curvature=curvature)


def _probability_scores(
    params, x_labelled, y_labelled, grid, preds, *, strategy, prior_prec, predictive_samples, **_
) -> np.ndarray:
    post = posterior_of(params, x_labelled)
    g = jnp.asarray(grid)
    cov = laplace.predictive_cov_blocks(post, params, g, jnp.float32(prior_prec))
    samples = max(predictive_samples, strategy.min_samples)
    probs = acquisition.mc_probabilities(forward(params, g), cov, jax.random.key(MC_KEY_SEED), jnp.zeros(samples))
    return np.asarray(getattr(acquisition, strategy.probability_score)(probs))


def _epig_scores(
    params, x_labelled, y_labelled, grid, preds, *, strategy, prior_prec, predictive_samples, **_
) -> np.ndarray:
    """EPIG (alcore/epig.py) with a fixed sample of the candidates as the targets."""
    post = posterior_of(params, x_labelled)
    targets = jnp.asarray(epig.target_sample(grid))
    samples = max(predictive_samples, strategy.min_samples)
    scores = epig.epig_scores(
        post, params, jnp.asarray(grid), targets, jnp.float32(prior_prec), jax.random.key(MC_KEY_SEED),
        jnp.zeros(samples),
    )  # fmt: skip
    return np.asarray(scores)


# One scorer per kind of score (alcore.strategies.Strategy.score).
SCORERS = {"uniform": _uniform_scores, "std": _std_scores, "probs": _probability_scores, "epig": _epig_scores}


def scores_for(
    params: dict,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    grid: np.ndarray,
    preds: np.ndarray,
    *,
    strategy: str,
    prior_prec: float,
    curvature: str,
    predictive_samples: int,
) -> np.ndarray:
    """Acquisition scores over the candidates (higher = label it), shape (m,)."""
    spec = strategies.get(strategy)
    return SCORERS[spec.score](
        params,
        x_labelled,
        y_labelled,
        grid,
        preds,
        strategy=spec,
        prior_prec=prior_prec,
        curvature=curvature,
        predictive_samples=predictive_samples,
    )


def acquire(
    params: dict,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    grid: np.ndarray,
    *,
    strategy: str,
    batch: int,
    prior_prec: float,
    curvature: str,
    predictive_samples: int = 64,
    key: jax.Array | None = None,
    exclude: list[int] = (),
    batch_rule: str = "greedy",
    batch_beta: float = 4.0,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Choose ``batch`` grid points to label; returns (indices, first scores, predictions).

    For k > 1 with ``batch_rule="greedy"`` each pick is added to the GGN (which needs
    the model's predicted probabilities, not labels) before the next is scored, so the
    batch spreads over the uncertain regions instead of crowding one peak, and no
    point is picked twice; ``softrank`` or ``power`` draw the k points from one
    scoring pass instead (:func:`alcore.acquisition.stochastic_batch`, with
    ``batch_beta`` and ``key``; strategies that pick by argmax only), and ``diverse``
    takes them from k clusters of the top ``batch_beta * k``
    (:func:`alcore.acquisition.diverse_batch`). k = 1 is exactly
    the single-point rule. ``key`` drives ``sampled`` and ``random`` (split per pick
    when k > 1). ``exclude``: candidate indices never to pick (points a person could
    not label).
    """
    rule = strategies.get(strategy).rule
    preds = predict(params, grid)
    if batch > 1 and batch_rule != "greedy" and rule == "argmax":
        scores = scores_for(
            params,
            np.asarray(x_labelled, np.float32),
            np.asarray(y_labelled, np.int32),
            grid,
            preds,
            strategy=strategy,
            prior_prec=prior_prec,
            curvature=curvature,
            predictive_samples=predictive_samples,
        )
        if batch_rule == "diverse":
            chosen = acquisition.diverse_batch(
                scores, np.asarray(grid), batch, factor=batch_beta, key=key, exclude=list(exclude)
            )
        else:
            chosen = acquisition.stochastic_batch(
                scores, batch, rule=batch_rule, beta=batch_beta, key=key, exclude=list(exclude)
            )
        return chosen, scores, preds
    keys = [key] if batch == 1 else list(jax.random.split(key, batch)) if key is not None else [None] * batch
    chosen: list[int] = []
    first = None
    for j in range(batch):
        # condition on the earlier picks; their predicted classes stand in for labels
        # (the cross-entropy GGN does not depend on them)
        x_cond = np.concatenate([x_labelled, grid[chosen]]).astype(np.float32)
        y_cond = np.concatenate([y_labelled, preds[chosen]]).astype(np.int32)
        scores = scores_for(
            params,
            x_cond,
            y_cond,
            grid,
            preds,
            strategy=strategy,
            prior_prec=prior_prec,
            curvature=curvature,
            predictive_samples=predictive_samples,
        )
        if first is None:
            first = scores
        chosen.append(acquisition.pick(scores, rule=rule, key=keys[j], exclude=[*exclude, *chosen]))
    return chosen, first, preds


def retrain(
    state: ModelState,
    x: np.ndarray,
    y: np.ndarray,
    *,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    restart: str = "warm",
    prior_prec: float | None = None,
    seed: int | None = None,
    hidden_channels: int | None = None,
    compile_only: bool = False,
) -> tuple[ModelState, np.ndarray] | None:
    """Train on the grown set with a fresh loader; returns the state and losses.

    ``restart``: ``warm`` continues from the parameters with the optimizer state kept
    (the tutorial's); ``fresh`` keeps the parameters with a new Adam state; ``scratch``
    re-initialises the network from ``seed`` (``hidden_channels`` wide, as deep as
    ``state``'s) and trains it anew, so a model never carries the fit of an earlier,
    smaller labelled set.
    ``prior_prec``: train on cross-entropy + prior_prec / 2 ||theta||^2 (None: plain
    cross-entropy). ``batch_size`` 0: full batches. The set is padded
    (:func:`padded`), so one compiled program serves every round up to the next
    capacity step; ``compile_only`` compiles it and runs nothing.
    """
    if restart not in RESTARTS:
        raise ValueError(f"restart must be one of {', '.join(RESTARTS)}, got {restart!r}")
    n_classes = n_classes_of(state.params)
    x_pad, y_pad, _ = padded(x, y, n_classes=n_classes, cap=training_capacity(len(x), n_classes, batch_size))
    tx = training.make_optimizer(learning_rate=learning_rate)
    params, opt_state = state.params, state.opt_state
    if restart == "scratch":
        depth = n_layers(state.params) - 1
        params, opt_state = _fresh_start(seed, hidden_channels, np.shape(x)[1], n_classes, learning_rate, depth)
    elif restart == "fresh":
        opt_state = tx.init(params)
    schedule = training.epoch_batches(n_points=len(x), n_epochs=epochs, batch_size=batch_size, max_points=len(x_pad))
    args = (params, opt_state, jnp.asarray(x_pad), jnp.asarray(y_pad), schedule)
    if compile_only:
        return training.compile_train(*args, tx=tx, prior_prec=prior_prec)
    params, opt_state, losses = training.train(*args, tx=tx, prior_prec=prior_prec)
    return ModelState(to_numpy(params), to_numpy(opt_state)), training.last_losses(losses)


@functools.lru_cache(maxsize=8)
def _fresh_start(seed: int, hidden: int, in_dim: int, n_classes: int, learning_rate: float, hidden_layers: int):
    """The network initialised from ``seed`` and a new Adam state: what every round of
    the ``scratch`` schedule starts from (cached: drawing it cost 9 ms a round)."""
    params = init_params(seed=seed, hidden=hidden, in_dim=in_dim, n_classes=n_classes, hidden_layers=hidden_layers)
    return params, training.make_optimizer(learning_rate=learning_rate).init(params)


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of points classified correctly."""
    return float(np.mean(np.asarray(preds) == np.asarray(labels)))


def probabilities(params: dict, x: np.ndarray) -> np.ndarray:
    """The MAP network's class probabilities at ``x`` (NumPy, float64)."""
    return laplace._softmax_np(forward(calibration._numpy_params(params), np.asarray(x, np.float64), xp=np))


@jax.jit
def _log_probabilities(params, x):
    return jax.nn.log_softmax(forward(params, x), axis=-1)


def metrics(params: dict, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, negative log-likelihood (mean) and 15-bin ECE of the MAP predictive.

    The accuracy is :func:`predict`'s (the tutorial's numbers); the log-probabilities
    come from one more compiled pass (a NumPy pass over the tutorial's grid cost 8 ms
    a round).
    """
    preds = predict(params, x)
    y = np.asarray(y)
    log_p = np.asarray(_log_probabilities(params, jnp.asarray(x)), np.float64)
    nll = float(-np.mean(log_p[np.arange(len(y)), y]))
    ece = float(calibration.expected_calibration_errors(np.exp(log_p.max(axis=1))[None], preds == y)[0])
    return {"accuracy": accuracy(preds, y), "nll": nll, "ece": ece}
