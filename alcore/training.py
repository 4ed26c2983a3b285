"""Training exactly as the tutorial's helper does it, as one compiled scan.

The tutorial's ``DataLoader`` holds one index array ``arange(n)`` and a
``numpy.random.default_rng(0)``; every epoch shuffles that array *in place* (so the
permutations compound) and yields batches of ``batch_size`` in order, the last one
short. Adding a point builds a new loader, so the generator restarts at seed 0. Its
``train_step`` sums the softmax cross-entropy over the batch and applies Adam.

Here the same sequence of batches is precomputed in numpy (:func:`epoch_batches`)
and replayed by :func:`train` inside one ``lax.scan``. Batches are padded to a fixed
shape with a mask (a masked sample adds an exact zero to the loss and gradient) and
padded batch slots are skipped (parameters and optimizer state kept), so one
compiled program serves every round while the labelled set grows.
"""

import functools
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alcore.model import Params, forward


class Schedule(NamedTuple):
    """A padded batch schedule: sample indices, sample mask, and batch validity."""

    index: np.ndarray  # (epochs, max_batches, batch_size) int32
    mask: np.ndarray  # (epochs, max_batches, batch_size) float32
    valid: np.ndarray  # (epochs, max_batches) bool


def epoch_batches(*, n_points: int, n_epochs: int, batch_size: int, max_points: int | None = None) -> Schedule:
    """The tutorial loader's batches for ``n_epochs`` epochs over ``n_points`` points.

    Args:
        n_points: Size of the labelled set (the loader is created fresh at this size).
        n_epochs: Epochs to run.
        batch_size: The loader's batch size (0: one full batch per epoch).
        max_points: Capacity to pad to (so the shapes do not depend on ``n_points``);
            defaults to ``n_points``.

    Returns:
        A :class:`Schedule` with ``max_batches = ceil(max_points / batch_size)``.
    """
    max_points = n_points if max_points is None else max_points
    batch_size = batch_size or max_points
    if not 0 < n_points <= max_points:
        raise ValueError(f"need 0 < n_points <= max_points, got {n_points}, {max_points}")
    max_batches = -(-max_points // batch_size)
    index = np.zeros((n_epochs, max_batches, batch_size), dtype=np.int32)
    mask = np.zeros((n_epochs, max_batches, batch_size), dtype=np.float32)
    valid = np.zeros((n_epochs, max_batches), dtype=bool)
    order = np.arange(n_points)
    rng = np.random.default_rng(seed=0)
    n_batches = -(-n_points // batch_size)
    for epoch in range(n_epochs):
        rng.shuffle(order)
        for b in range(n_batches):
            chunk = order[b * batch_size : (b + 1) * batch_size]
            index[epoch, b, : len(chunk)] = chunk
            mask[epoch, b, : len(chunk)] = 1.0
            valid[epoch, b] = True
    return Schedule(index, mask, valid)


@functools.cache
def make_optimizer(*, learning_rate: float) -> optax.GradientTransformation:
    """Adam, as the tutorial (``optax.adam(lr)``).

    Cached: the optimizer is a static argument of the compiled training scan, so a
    new object per call would recompile it every round.
    """
    return optax.adam(learning_rate)


def batch_loss(params: Params, x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    """Summed softmax cross-entropy over the (masked) batch, as the tutorial."""
    logits = forward(params, x)
    losses = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(losses * mask)


def regularised_batch_loss(params: Params, x, y, mask, prior_prec, n_points) -> jax.Array:
    """:func:`batch_loss` plus the Gaussian prior's share of the batch: over an epoch the
    batches add up to the negative log joint, summed cross-entropy
    + ``prior_prec`` / 2 ||theta||^2 (one full batch: exactly that), whose minimiser is
    the MAP the Laplace approximation assumes."""
    sq_norm = sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(params))
    return batch_loss(params, x, y, mask) + 0.5 * prior_prec * sq_norm * jnp.sum(mask) / n_points


@partial(jax.jit, static_argnames=("tx", "with_prior"))
def _train_scan(params, opt_state, x, y, index, mask, valid, prior_prec, n_points, *, tx, with_prior=False):
    def loss_fn(p, xb, yb, m):
        # without the prior: the tutorial's loss, the same program as before it existed
        return regularised_batch_loss(p, xb, yb, m, prior_prec, n_points) if with_prior else batch_loss(p, xb, yb, m)

    def step(carry, batch):
        params, opt_state = carry
        idx, m, ok = batch
        loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx], m)
        updates, new_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        return (keep(new_params, params), keep(new_state, opt_state)), jnp.where(ok, loss, jnp.nan)

    flat = lambda a: a.reshape((-1, *a.shape[2:]))  # noqa: E731 - epochs x batches -> steps
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (flat(index), flat(mask), flat(valid)))
    return params, opt_state, losses.reshape(index.shape[:2])


def train(
    params: Params,
    opt_state: optax.OptState,
    x: jax.Array,
    y: jax.Array,
    schedule: Schedule,
    *,
    tx: optax.GradientTransformation,
    prior_prec: float | None = None,
) -> tuple[Params, optax.OptState, np.ndarray]:
    """Run the schedule's epochs of Adam on (x, y); returns params, state, losses.

    ``x``/``y`` may be padded beyond the real points: only indices in the schedule
    are read. The losses are per (epoch, batch), NaN for padded batch slots; the
    tutorial prints the last real batch's loss of an epoch. ``prior_prec``: train on
    :func:`regularised_batch_loss` with this prior precision (None: the tutorial's
    plain cross-entropy).
    """
    args, static = _scan_args(params, opt_state, x, y, schedule, prior_prec)
    params, opt_state, losses = _train_scan(*args, tx=tx, **static)
    return params, opt_state, np.asarray(losses)


def compile_train(
    params, opt_state, x, y, schedule: Schedule, *, tx: optax.GradientTransformation, prior_prec: float | None = None
) -> None:
    """Compile (not run) the training scan :func:`train` uses for these shapes."""
    args, static = _scan_args(params, opt_state, x, y, schedule, prior_prec)
    _train_scan.lower(*args, tx=tx, **static).compile()


def _scan_args(params, opt_state, x, y, schedule: Schedule, prior_prec: float | None) -> tuple[tuple, dict]:
    n_points = int(np.sum(schedule.mask[0]))  # every epoch covers the labelled set once
    arrays = (jnp.asarray(schedule.index), jnp.asarray(schedule.mask), jnp.asarray(schedule.valid))
    scalars = (jnp.float32(prior_prec or 0.0), jnp.float32(n_points))
    return (params, opt_state, x, y, *arrays, *scalars), {"with_prior": prior_prec is not None}


def last_losses(losses: np.ndarray) -> np.ndarray:
    """Loss of the last real batch of each epoch (what the tutorial prints)."""
    last = np.sum(~np.isnan(losses), axis=1) - 1
    return losses[np.arange(losses.shape[0]), last]
