"""The tutorial's problem: ground truth on the unit square, data and grid."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import random


def _f1(x):
    return 1.9 * x**3 - 1.5 * x**2 + 0.5


def _f2(x):
    return -1.5 * x**2 + 2 * x + 0.2


@jax.jit
def true_label(point: jax.Array) -> jax.Array:
    """Class of one point (x, y): 2 above f2, 1 between f1 and f2, 0 below f1."""
    x, y = point[0], point[1]
    return jnp.where(y >= _f2(x), 2, jnp.where(y >= _f1(x), 1, 0))


@jax.jit
def true_labels(points: jax.Array) -> jax.Array:
    """Labels of a batch of points, shape (n, 2) -> (n,) int32."""
    return jax.vmap(true_label)(points)


def boundary_curves(xs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two true decision curves f1 and f2 evaluated at ``xs`` (for plots)."""
    return _f1(xs), _f2(xs)


class Keys(NamedTuple):
    """The tutorial's four keys, split from one seed."""

    initial: jax.Array
    calibration: jax.Array
    passive: jax.Array
    sampling: jax.Array


def split_keys(seed: int) -> Keys:
    """Split ``seed`` into (initial, calibration, passive, sampling) as the tutorial."""
    return Keys(*random.split(random.key(seed), 4))


def uniform_points(key: jax.Array, n_points: int) -> jax.Array:
    """``n_points`` uniform points on [0, 1]^2, drawn exactly as the tutorial does."""
    key1, key2 = random.split(key)
    xs = random.uniform(key1, shape=n_points, minval=0, maxval=1)
    ys = random.uniform(key2, shape=n_points, minval=0, maxval=1)
    return jnp.stack((xs, ys)).mT


def grid_points(grid_size: int) -> jax.Array:
    """The G x G evaluation grid, row-major as in the tutorial, shape (G*G, 2)."""
    xv, yv = jnp.meshgrid(jnp.linspace(0, 1, grid_size), jnp.linspace(0, 1, grid_size))
    return jnp.stack([xv.ravel(), yv.ravel()], axis=-1)
