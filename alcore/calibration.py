r"""Prior-precision calibration by ECE grid search: laplax's objective, computed fast.

The objective is laplax's ``calibration(..., predictive_type="MC_BRIDGE",
calibration_objective="ECE", calibration_method="GRID_SEARCH")``: for each prior
precision :math:`\tau` on a log grid, 30 Monte-Carlo samples of the linearised
logits :math:`f(x) + J_x L_\tau z_s` at every calibration input, where
:math:`z_s` are standard normal weight draws (laplax's default key, the same draws
for every input) and :math:`L_\tau` is the lower Cholesky factor of the posterior
covariance :math:`\Sigma_\tau = (G + \tau I)^{-1}`; softmax averaged; then the
15-bin ECE of that confidence against the MAP prediction's correctness. The first
minimiser wins, NaN counting as +inf.

laplax factorises a P x P matrix per grid point. Here the structure
:math:`\Sigma_\tau = \tau^{-1} (I - V V^\top)` with :math:`V = A^\top U
\operatorname{diag}(s + \tau)^{-1/2}` of rank :math:`r \le n C` is used: the
Schur complements of :math:`I - V Q V^\top` keep that form, so the Cholesky factor
is computed block-row by block-row with only r x r and b x b work
(:func:`_lowrank_cholesky_apply`). The factor is the same matrix (a Cholesky factor
with positive diagonal is unique), hence the same samples as laplax's up to float32
rounding.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from laplax.eval.metrics import expected_calibration_error

from alcore.laplace import hessian_factor
from alcore.model import Params, forward

LAPLAX_DEFAULT_KEY_SEED = 0  # laplax.api.DEFAULT_KEY = jax.random.key(0)
N_ECE_BINS = 15
BLOCK = 64
MAP_BATCH = 1


def weight_draws(params: Params, *, num_samples: int, key: jax.Array | None = None) -> jax.Array:
    """laplax's standard normal weight draws, flattened: shape (P, S)."""
    key = jax.random.key(LAPLAX_DEFAULT_KEY_SEED) if key is None else key
    return _draws(params, key, num_samples)


@partial(jax.jit, static_argnums=2)
def _draws(params: Params, key: jax.Array, num_samples: int) -> jax.Array:
    # laplax: per sample key, split into one key per leaf, ``normal(leaf_key, leaf.shape)``.
    # With partitionable threefry (JAX's default) a key's draws are prefix-consistent
    # over the flattened shape, so one draw of the largest leaf size, sliced per leaf,
    # gives the same numbers with one compiled sampler instead of one per leaf shape.
    leaves = jax.tree.leaves(params)
    longest = max(leaf.size for leaf in leaves)

    def one(key):
        leaf_keys = jax.random.split(key, len(leaves))
        block = jax.vmap(lambda k: jax.random.normal(k, (longest,)))(leaf_keys)
        return jnp.concatenate([block[i, : leaf.size] for i, leaf in enumerate(leaves)])

    return jax.vmap(one, out_axes=1)(jax.random.split(key, num_samples))


def _lowrank_cholesky_apply(v: jax.Array, z: jax.Array) -> jax.Array:
    r"""``chol(I - v v^T) @ z`` for v of shape (P, r), z of shape (P, S).

    With the Schur complement of the remaining rows written as
    :math:`I - V_{\text{rest}} Q V_{\text{rest}}^\top` (Q starts at I), a block of b
    rows has diagonal block :math:`K_b = I - V_b Q V_b^\top = L_b L_b^\top`, the
    rows below get :math:`-V_{\text{rest}} Q V_b^\top L_b^{-\top}`, and
    :math:`Q \leftarrow Q + Q V_b^\top K_b^{-1} V_b Q`.
    """
    p, r = v.shape
    n_blocks = -(-p // BLOCK)
    pad = n_blocks * BLOCK - p
    vb = jnp.pad(v, ((0, pad), (0, 0))).reshape(n_blocks, BLOCK, r)
    zb = jnp.pad(z, ((0, pad), (0, 0))).reshape(n_blocks, BLOCK, z.shape[1])

    def step(carry, block):
        q, acc = carry  # acc: sum over earlier blocks of Q_j V_j^T L_j^-T z_j, (r, S)
        v_b, z_b = block
        vq = v_b @ q
        l_b = jnp.linalg.cholesky(jnp.eye(BLOCK) - vq @ v_b.T)
        out = l_b @ z_b - v_b @ acc
        # L_b^-T z_b and L_b^-1 V_b Q, via triangular solves
        lz = jax.scipy.linalg.solve_triangular(l_b, z_b, lower=True, trans="T")
        acc = acc + vq.T @ lz
        w = jax.scipy.linalg.solve_triangular(l_b, vq, lower=True)
        return (q + w.T @ w, acc), out

    init = (jnp.eye(r, dtype=v.dtype), jnp.zeros((r, z.shape[1]), v.dtype))
    _, out = jax.lax.scan(step, init, (vb, zb))
    return out.reshape(-1, z.shape[1])[:p]


def _jacobian(params: Params, x: jax.Array) -> jax.Array:
    """Dense Jacobian of the logits, shape (n, C, P) (small n only)."""
    flat, unravel = ravel_pytree(params)
    return jax.vmap(lambda xi: jax.jacrev(lambda f: forward(unravel(f), xi))(flat))(x)


@jax.jit
def ece_curve(
    params: Params,
    x_ggn: jax.Array,
    mask: jax.Array,
    x_cal: jax.Array,
    y_cal: jax.Array,
    prior_precs: jax.Array,
    draws: jax.Array,
) -> jax.Array:
    """ECE of laplax's MC-bridge predictive at every prior precision in ``prior_precs``.

    Args:
        params: MAP parameters.
        x_ggn: Inputs whose GGN defines the posterior (may be padded).
        mask: 1 for real GGN inputs, 0 for padding.
        x_cal: Calibration inputs, (m, 2).
        y_cal: Calibration labels, (m,).
        prior_precs: Grid of prior precisions, (T,).
        draws: Flattened standard normal weight draws, (P, S).
    """
    b = hessian_factor(forward(params, x_ggn)) * mask[:, None, None]
    j_ggn = _jacobian(params, x_ggn)
    a = jnp.einsum("ica,icp->iap", b, j_ggn).reshape(-1, j_ggn.shape[-1])  # (n(C-1), P)
    evals, evecs = jnp.linalg.eigh(a @ a.T)
    evals = jnp.maximum(evals, 0.0)
    at_u = a.T @ evecs  # (P, r)
    logits = forward(params, x_cal)
    j_cal = _jacobian(params, x_cal)  # (m, C, P)
    correct = (jnp.argmax(logits, axis=-1) == y_cal).astype(jnp.int32)

    def ece(tau):
        v = at_u / jnp.sqrt(evals + tau)
        lz = _lowrank_cholesky_apply(v, draws) / jnp.sqrt(tau)  # (P, S)
        samples = logits[None] + jnp.einsum("mcp,ps->smc", j_cal, lz)
        probs = jnp.mean(jax.nn.softmax(samples, axis=-1), axis=0)
        return expected_calibration_error(confidence=jnp.max(probs, axis=-1), correctness=correct, num_bins=N_ECE_BINS)

    return jax.lax.map(ece, prior_precs, batch_size=MAP_BATCH)


def prior_prec_grid(*, log_min: float, log_max: float, size: int) -> jax.Array:
    """laplax's grid: ``logspace(log_min, log_max, size)``."""
    return jnp.logspace(log_min, log_max, size)


def calibrate(
    params: Params,
    x_ggn: jax.Array,
    mask: jax.Array,
    x_cal: jax.Array,
    y_cal: jax.Array,
    *,
    log_min: float,
    log_max: float,
    size: int,
    num_samples: int = 30,
) -> tuple[float, jax.Array, jax.Array]:
    """Calibrated prior precision, with the grid and its ECE curve."""
    grid = prior_prec_grid(log_min=log_min, log_max=log_max, size=size)
    draws = weight_draws(params, num_samples=num_samples)
    curve = ece_curve(params, x_ggn, mask, x_cal, y_cal, grid, draws)
    curve = jnp.where(jnp.isnan(curve), jnp.inf, curve)
    return float(grid[jnp.argmin(curve)]), grid, curve
