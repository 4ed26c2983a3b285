"""The tutorial's problem: ground truth on the unit square, data and grid.

The data are drawn exactly as the tutorial draws them with ``jax.random`` (the same
keys, the same float32 numbers: tested), but in NumPy through :mod:`alcore.prng`:
each differently shaped ``jax.random`` call would compile its own sampler (about
1 s for one experiment's data), NumPy needs milliseconds.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alcore import prng

N_CLASSES = 3


def _f1(x):
    return 1.9 * (x * x * x) - 1.5 * (x * x) + 0.5


def _f2(x):
    return -1.5 * (x * x) + 2 * x + 0.2


@jax.jit
def true_label(point: jax.Array) -> jax.Array:
    """Class of one point (x, y): 2 above f2, 1 between f1 and f2, 0 below f1 (JAX, as
    the tutorial's oracle)."""
    x, y = point[0], point[1]
    return jnp.where(y >= _f2(x), 2, jnp.where(y >= _f1(x), 1, 0))


def true_labels(points) -> np.ndarray:
    """Labels of a batch of points, shape (n, 2) -> (n,) int32: :func:`true_label`'s
    float32 arithmetic in NumPy (the same labels: tested on grids and random points)."""
    p = np.asarray(points, np.float32).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return np.where(y >= _f2(x), 2, np.where(y >= _f1(x), 1, 0)).astype(np.int32)


def boundary_curves(xs):
    """The two true decision curves f1 and f2 evaluated at ``xs`` (for plots)."""
    return _f1(xs), _f2(xs)


class Keys(NamedTuple):
    """The tutorial's four keys, split from one seed (raw uint32 key data, shape (2,))."""

    initial: np.ndarray
    calibration: np.ndarray
    passive: np.ndarray
    sampling: np.ndarray


def split_keys(seed: int) -> Keys:
    """``jax.random.split(jax.random.key(seed), 4)`` as (initial, calibration, passive,
    sampling), as the tutorial splits them."""
    return Keys(*prng.split(prng.key(seed), 4))


def uniform_points(key: np.ndarray, n_points: int) -> np.ndarray:
    """``n_points`` uniform points on [0, 1]^2, float32, as the tutorial draws them:
    ``k1, k2 = split(key)``, x from ``uniform(k1, n)``, y from ``uniform(k2, n)``."""
    k1, k2 = prng.split(key, 2)
    return np.stack([prng.uniform(k1, n_points, 0.0, 1.0), prng.uniform(k2, n_points, 0.0, 1.0)], axis=1)


def grid_points(grid_size: int) -> np.ndarray:
    """The G x G evaluation grid, row-major as in the tutorial, shape (G*G, 2).

    ``jnp.linspace`` itself: NumPy's float32 linspace differs from it in the last bit
    for some sizes."""
    xv, yv = jnp.meshgrid(jnp.linspace(0, 1, grid_size), jnp.linspace(0, 1, grid_size))
    return np.asarray(jnp.stack([xv.ravel(), yv.ravel()], axis=-1))
