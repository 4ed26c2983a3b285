r"""Prior-precision calibration by ECE grid search: laplax's objective, computed fast.

The objective is laplax's ``calibration(..., predictive_type="MC_BRIDGE",
calibration_objective="ECE", calibration_method="GRID_SEARCH")``: for each prior
precision :math:`\tau` on a log grid, 30 Monte-Carlo samples of the linearised
logits :math:`f(x) + J_x L_\tau z_s` at every calibration input, where
:math:`z_s` are standard normal weight draws (laplax's default key, the same draws
for every input) and :math:`L_\tau` is the lower Cholesky factor of the posterior
covariance :math:`\Sigma_\tau = (G + \tau I)^{-1}`; softmax averaged; then the
15-bin ECE of that confidence against the MAP prediction's correctness. The first
minimiser wins; a prior precision whose covariance is not numerically positive
definite scores +inf (laplax gets NaN there and counts it as +inf).

laplax factorises a P x P matrix per grid point. Here the structure
:math:`\Sigma_\tau = \tau^{-1} (I - V V^\top)` with :math:`V = A^\top U
\operatorname{diag}(s + \tau)^{-1/2}` of rank :math:`r \le n C` is used: the
Schur complements of :math:`I - V Q V^\top` keep that form, so the Cholesky factor
is applied block-row by block-row with only r x r and b x b work, for every
:math:`\tau` at once (:func:`cholesky_samples`). The factor is the same matrix (a
Cholesky factor with positive diagonal is unique), hence the same samples as
laplax's up to rounding.

Everything here is NumPy in float64, deliberately: calibration runs once per
experiment, and XLA would spend longer compiling these few dense operations (about
1.5 s on a 2-core machine) than NumPy spends running them (about 0.5 s).
"""

import numpy as np

from alcore import prng
from alcore.laplace import features, hessian_factor
from alcore.model import Params, forward

LAPLAX_DEFAULT_KEY_SEED = 0  # laplax.api.DEFAULT_KEY = jax.random.key(0)
N_ECE_BINS = 15
BLOCK = 64


def _numpy_params(params: Params) -> Params:
    return {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in params.items()}


def _leaves(params: Params) -> list[np.ndarray]:
    """Parameter leaves in JAX's flattening order (sorted dict keys)."""
    return [np.asarray(params[layer][k]) for layer in sorted(params) for k in sorted(params[layer])]


def weight_draws(params: Params, *, num_samples: int, seed: int = LAPLAX_DEFAULT_KEY_SEED) -> np.ndarray:
    """laplax's standard normal weight draws, flattened like ``ravel_pytree``: (P, S).

    laplax (``randn_like``) splits the key into one per sample, each of those into
    one per parameter leaf, and draws ``normal(leaf_key, leaf.shape)``.
    """
    sizes = [leaf.size for leaf in _leaves(params)]
    out = np.empty((sum(sizes), num_samples))
    for s, sample_key in enumerate(prng.split(prng.key(seed), num_samples)):
        leaf_keys = prng.split(sample_key, len(sizes))
        out[:, s] = np.concatenate([prng.normal(k, n) for k, n in zip(leaf_keys, sizes, strict=True)])
    return out


def logits_and_jacobian(params: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, C) and their dense Jacobian (n, C, P) in ``ravel_pytree`` order.

    For an MLP the Jacobian is the outer product of each layer's input (and 1 for
    the bias) with the logits' sensitivity to that layer's pre-activation.
    """
    params = _numpy_params(params)
    x = np.asarray(x, np.float64)
    feats = features(params, x, xp=np)
    n, c = x.shape[0], feats.sens[-1].shape[1]
    blocks = []
    for a, d in zip(feats.inputs, feats.sens, strict=True):  # layer order = sorted keys
        blocks.append(d)  # "bias" sorts before "kernel"
        blocks.append((a[:, None, :, None] * d[:, :, None, :]).reshape(n, c, -1))
    return forward(params, x, xp=np), np.concatenate(blocks, axis=-1)


def cholesky_samples(at_u: np.ndarray, scale: np.ndarray, draws: np.ndarray, jac: np.ndarray) -> np.ndarray:
    r"""``jac @ chol(I - V_t V_t^T) @ draws`` for every row t of ``scale``: (T, m, S).

    ``V_t = at_u * scale[t]`` (P x r). With the Schur complement of the remaining
    rows written :math:`I - V_{\text{rest}} Q V_{\text{rest}}^\top` (Q starts at I),
    a block of b rows has diagonal block :math:`K_b = I - V_b Q V_b^\top = L_b
    L_b^\top`, the rows below get :math:`-V_{\text{rest}} Q V_b^\top L_b^{-\top}`, and
    with :math:`W_b = L_b^{-1} V_b Q`: :math:`Q \leftarrow Q + W_b^\top W_b`, and the
    running sum of :math:`Q V_b^\top L_b^{-\top} z_b = W_b^\top z_b` carries what
    earlier blocks contribute to later rows. A ``t`` whose block is not positive
    definite in float64 gives NaN samples.
    """
    from scipy import linalg  # imported when calibrating by ECE only

    p, r = at_u.shape
    t_count, s_count = scale.shape[0], draws.shape[1]
    q = np.broadcast_to(np.eye(r), (t_count, r, r)).copy()
    carried = np.zeros((t_count, r, s_count))
    out = np.zeros((t_count, jac.shape[0], s_count))
    failed = np.zeros(t_count, bool)
    for start in range(0, p, BLOCK):
        rows = slice(start, min(start + BLOCK, p))
        v = at_u[rows][None] * scale[:, None, :]  # (T, b, r)
        z = draws[rows]
        vq = v @ q
        k = np.eye(v.shape[1]) - vq @ v.transpose(0, 2, 1)
        k[failed] = np.eye(v.shape[1])  # keep failed ones factorable; their result is NaN
        try:
            chol = np.linalg.cholesky(k)
        except np.linalg.LinAlgError:
            chol = np.empty_like(k)
            for t in range(t_count):
                try:
                    chol[t] = np.linalg.cholesky(k[t])
                except np.linalg.LinAlgError:
                    failed[t] = True
                    chol[t] = np.eye(v.shape[1])
        block_out = chol @ z - v @ carried
        w = np.stack([linalg.solve_triangular(chol[t], vq[t], lower=True, check_finite=False) for t in range(t_count)])
        update = w.transpose(0, 2, 1) @ np.concatenate([w, np.broadcast_to(z, (t_count, *z.shape))], axis=2)
        q += update[:, :, :r]
        carried += update[:, :, r:]
        out += jac[:, rows] @ block_out
    out[failed] = np.nan
    return out


def expected_calibration_errors(confidence: np.ndarray, correct: np.ndarray, num_bins: int = N_ECE_BINS) -> np.ndarray:
    """laplax's ``expected_calibration_error`` for each row of ``confidence`` (T, m).

    Equal-width bins over [0, 1] (``digitize``, clipped into the first/last bin);
    sum over bins of (bin share) x |bin accuracy - bin confidence|. NaN confidence
    gives NaN.
    """
    t_count, _ = confidence.shape
    idx = np.clip(np.digitize(confidence, np.linspace(0.0, 1.0, num_bins + 1)) - 1, 0, num_bins - 1)
    flat = (idx + num_bins * np.arange(t_count)[:, None]).ravel()

    def per_bin(weights):
        return np.bincount(flat, weights=weights, minlength=t_count * num_bins).reshape(t_count, num_bins)

    counts = per_bin(None)
    conf_sum = per_bin(confidence.ravel())
    acc_sum = per_bin(np.broadcast_to(correct, confidence.shape).ravel().astype(np.float64))
    safe = np.maximum(counts, 1.0)
    gap = np.where(counts > 0, np.abs(acc_sum / safe - conf_sum / safe), 0.0)
    return np.sum(counts / counts.sum(axis=1, keepdims=True) * gap, axis=1)


def ece_curve(
    params: Params,
    x_ggn: np.ndarray,
    mask: np.ndarray,
    x_cal: np.ndarray,
    y_cal: np.ndarray,
    prior_precs: np.ndarray,
    draws: np.ndarray,
) -> np.ndarray:
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
    logits_ggn, j_ggn = logits_and_jacobian(params, x_ggn)
    b = hessian_factor(logits_ggn, xp=np) * np.asarray(mask, np.float64)[:, None, None]
    a = np.einsum("ica,icp->iap", b, j_ggn).reshape(-1, j_ggn.shape[-1])  # (n(C-1), P)
    evals, evecs = np.linalg.eigh(a @ a.T)
    evals = np.maximum(evals, 0.0)
    logits, j_cal = logits_and_jacobian(params, x_cal)  # (m, C), (m, C, P)
    m, c, p = j_cal.shape
    taus = np.asarray(prior_precs, np.float64)
    scale = 1.0 / np.sqrt(evals[None, :] + taus[:, None])  # (T, r)
    with np.errstate(invalid="ignore", over="ignore"):  # only where a factor failed (NaN there)
        noise = cholesky_samples(a.T @ evecs, scale, np.asarray(draws, np.float64), j_cal.reshape(m * c, p))
    samples = logits[None, :, :, None] + (noise / np.sqrt(taus)[:, None, None]).reshape(len(taus), m, c, -1)
    e = np.exp(samples - samples.max(axis=2, keepdims=True))
    probs = np.mean(e / e.sum(axis=2, keepdims=True), axis=-1)  # (T, m, C)
    correct = np.argmax(logits, axis=-1) == np.asarray(y_cal)
    return expected_calibration_errors(probs.max(axis=-1), correct)


def prior_prec_grid(*, log_min: float, log_max: float, size: int) -> np.ndarray:
    """laplax's grid, ``logspace(log_min, log_max, size)`` (float64 here, float32 there)."""
    return np.logspace(log_min, log_max, size)


def calibrate(
    params: Params,
    x_ggn: np.ndarray,
    mask: np.ndarray,
    x_cal: np.ndarray,
    y_cal: np.ndarray,
    *,
    log_min: float,
    log_max: float,
    size: int,
    num_samples: int = 30,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Calibrated prior precision, with the grid and its ECE curve (NaN counted as +inf)."""
    grid = prior_prec_grid(log_min=log_min, log_max=log_max, size=size)
    curve = ece_curve(params, x_ggn, mask, x_cal, y_cal, grid, weight_draws(params, num_samples=num_samples))
    curve = np.where(np.isnan(curve), np.inf, curve)
    return float(grid[np.argmin(curve)]), grid, curve
