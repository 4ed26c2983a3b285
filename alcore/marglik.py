r"""Prior precision by the Laplace marginal likelihood of the labelled set: laplax's
objective, from the dual form's eigenvalues.

No held-out labels: the labelled set both defines the GGN and scores the evidence.
The objective is laplax 0.0.2's ``CalibrationObjective.MARGINAL_LOG_LIKELIHOOD`` for
``curv_type="full"`` (``laplax.eval.likelihood.full_marginal_log_likelihood``, with
its defaults ``sigma = sigma_squared = loss_scaling_factor = 1``), which laplax's grid
search minimises as :math:`-\log p(D)`:

.. math::
    \log p(D) = \underbrace{-\tfrac{1}{2} L(\hat\theta)}_{\text{data}}
      \underbrace{- \tfrac{\tau}{2} \lVert\hat\theta\rVert^2
        - \tfrac{P}{2} (\log 2\pi - \log\tau)}_{\text{log prior}}
      \underbrace{+ \tfrac{P}{2} \log 2\pi - \tfrac12 \log\det(G + \tau I)}_{-\text{"evidence"}},

with :math:`L` the summed softmax cross-entropy of the labelled set at the MAP
parameters :math:`\hat\theta` (the training loss), :math:`P` the number of parameters
(every weight and bias), :math:`G` the full cross-entropy GGN of the labelled set and
:math:`\tau` the prior precision. The :math:`2\pi` terms cancel; they are kept so each
term is laplax's.

Conventions worth knowing (all laplax's, reproduced on purpose):

* The data term is **half** the log-likelihood: laplax writes it as
  :math:`-\frac{1}{2\sigma} L` (its Gaussian-noise convention) for every loss, so a
  categorical model's :math:`-L` enters as :math:`-L/2`. It does not depend on
  :math:`\tau`, so the chosen prior precision is unaffected; the curve is shifted by
  :math:`L/2`.
* The log determinant is that of the whole P x P posterior precision (laplax: a
  dense ``slogdet``); the prior term counts all P parameters.
* laplax's built-in ``LossFn.CROSS_ENTROPY`` data term cannot be used for this
  objective in 0.0.2: it is ``log_sigmoid_cross_entropy(logits, target)``, an
  element-wise *sigmoid* cross-entropy that is never summed. With integer labels it
  fails to broadcast, the grid search catches the ``ValueError`` at every prior
  precision, scores all of them +inf and returns the first grid point; with one-hot
  labels the objective is an (n, C) array and the grid search raises. The summed
  softmax cross-entropy used here is what laplax computes when given that loss as a
  callable (the tests compare against exactly that).
* Grid search: ``logspace(log_min, log_max, size)`` (float32 in laplax), every
  point evaluated (no patience), NaN counted as +inf, the first minimiser wins.

**Fast.** With the dual form's :math:`A A^\top = U \operatorname{diag}(s) U^\top`
(r = n(C-1) eigenvalues, :mod:`alcore.laplace`), :math:`\log\det(G + \tau I) =
\sum_{k=1}^r \log(s_k + \tau) + (P - r) \log\tau`, exact for any r (G and
:math:`A A^\top` share their non-zero eigenvalues; the zeros each count
:math:`\log\tau`), so one r x r eigendecomposition serves the whole grid. Everything
is NumPy in float64: the r x r Gram matrix from the layer-wise NTK factors, one
``eigvalsh``, then an (T x r) table of logarithms. NumPy is the faster choice here
even before compilation: the whole calibration takes milliseconds, while jitting the
same few operations costs about half a second of XLA compilation.
"""

import numpy as np

from alcore.calibration import _numpy_params, prior_prec_grid
from alcore.laplace import features, hessian_factor
from alcore.model import Params, forward

LOG_2PI = np.log(2.0 * np.pi)


def _mask(mask, n: int) -> np.ndarray:
    return np.ones(n) if mask is None else np.asarray(mask, np.float64)


def ggn_eigvals(params: Params, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalues :math:`s_k` of :math:`A A^\\top` (the GGN's non-zero spectrum plus
    zeros), shape (n (C-1),), float64, computed without Jacobians as in
    :func:`alcore.laplace.fit_posterior`. ``mask`` (0 for padding) drops rows."""
    p = _numpy_params(params)
    x = np.asarray(x, np.float64)
    feats = features(p, x, xp=np)
    b = hessian_factor(forward(p, x, xp=np), xp=np) * _mask(mask, len(x))[:, None, None]
    n, k = b.shape[0], b.shape[2]
    gram = 0.0
    for a, d in zip(feats.inputs, feats.sens, strict=True):
        fd = np.einsum("ica,icd->iad", b, d)
        gram = gram + (a @ a.T + 1.0)[:, None, :, None] * np.einsum("iad,jbd->iajb", fd, fd)
    gram = gram.reshape(n * k, n * k)
    return np.maximum(np.linalg.eigvalsh(0.5 * (gram + gram.T)), 0.0)


def summed_cross_entropy(params: Params, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The training loss at ``params``: the summed softmax cross-entropy (float64)."""
    logits = forward(_numpy_params(params), np.asarray(x, np.float64), xp=np)
    top = logits.max(axis=-1)
    log_norm = top + np.log(np.sum(np.exp(logits - top[:, None]), axis=-1))
    nll = log_norm - logits[np.arange(len(logits)), np.asarray(y)]
    return float(np.sum(_mask(mask, len(logits)) * nll))


def log_marginal_likelihood(
    eigvals: np.ndarray, *, n_params: int, params_sq_norm: float, data_loss: float, prior_precs: np.ndarray
) -> np.ndarray:
    """laplax's full-curvature log marginal likelihood at each prior precision, (T,).

    Args:
        eigvals: Eigenvalues of :math:`A A^\\top` (:func:`ggn_eigvals`, or a dual-form
            ``Posterior.eigvals``), r of them; zeros for padding are fine.
        n_params: P, the number of parameters.
        params_sq_norm: :math:`\\lVert\\hat\\theta\\rVert^2` over all parameters.
        data_loss: The summed loss L of the labelled set at :math:`\\hat\\theta`.
        prior_precs: Prior precisions :math:`\\tau`, (T,).
    """
    s = np.asarray(eigvals, np.float64)
    tau = np.asarray(prior_precs, np.float64)
    log_det = np.sum(np.log(s[None, :] + tau[:, None]), axis=1) + (n_params - s.size) * np.log(tau)
    log_likelihood = -0.5 * data_loss  # laplax: -(1 / (2 sigma)) * loss, sigma = 1
    log_prior = -0.5 * tau * params_sq_norm - 0.5 * n_params * (LOG_2PI - np.log(tau))
    evidence = -0.5 * n_params * LOG_2PI + 0.5 * log_det
    return log_likelihood + log_prior - evidence


def objective_curve(
    params: Params, x: np.ndarray, y: np.ndarray, prior_precs: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """laplax's minimised objective, :math:`-\\log p(D)`, at each prior precision: (T,).

    The labelled set (``x`` (n, 2), ``y`` (n,); ``mask`` 0 for padding rows) defines
    both the GGN and the data term.
    """
    leaves = [np.asarray(leaf, np.float64) for layer in params.values() for leaf in layer.values()]
    return -log_marginal_likelihood(
        ggn_eigvals(params, x, mask),
        n_params=sum(leaf.size for leaf in leaves),
        params_sq_norm=float(sum(np.sum(leaf**2) for leaf in leaves)),
        data_loss=summed_cross_entropy(params, x, y, mask),
        prior_precs=prior_precs,
    )


def calibrate(
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    log_min: float,
    log_max: float,
    size: int,
    mask: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Prior precision maximising the marginal likelihood of the labelled set, by
    laplax's grid search; returns it with the grid and the objective curve
    (:math:`-\\log p(D)`, NaN counted as +inf), like :func:`alcore.calibration.calibrate`."""
    grid = prior_prec_grid(log_min=log_min, log_max=log_max, size=size)
    curve = objective_curve(params, x, y, grid, mask)
    curve = np.where(np.isnan(curve), np.inf, curve)
    return float(grid[np.argmin(curve)]), grid, curve
