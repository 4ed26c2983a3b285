"""The tutorial's procedure through laplax: the reference and the non-full curvatures.

These follow the tutorial cell by cell (``create_ggn_mv``, ``create_posterior_fn``,
``set_lin_pushforward`` with ``lin_pred_std``; ``laplax.api.calibration`` with ECE
and the MC-bridge predictive). They serve three purposes: the reference the fast
path is tested against, the benchmark's baseline, and the curvature types other than
``full`` (diagonal, lanczos, lobpcg), which the dual form does not cover.
"""

import jax
import jax.numpy as jnp
import numpy as np
from laplax.api import calibration, estimate_curvature
from laplax.curv import create_ggn_mv, create_posterior_fn
from laplax.enums import CalibrationMethod, CalibrationObjective, CurvApprox, LossFn, Predictive
from laplax.eval.pushforward import lin_pred_cov, lin_pred_mean, lin_pred_std, lin_setup, set_lin_pushforward

from alcore.model import Params, laplax_model_fn

LOW_RANK_KWARGS = {"rank": 50, "key": jax.random.key(20), "mv_jit": True}


def _curv_kwargs(curv_type: str) -> dict:
    return {} if curv_type in (CurvApprox.FULL, CurvApprox.DIAGONAL) else dict(LOW_RANK_KWARGS)


def _posterior(params: Params, x: jax.Array, y: jax.Array, curv_type: str):
    model_fn = laplax_model_fn()
    ggn_mv = create_ggn_mv(model_fn, params, {"input": x, "target": y}, loss_fn=LossFn.CROSS_ENTROPY)
    posterior_fn = create_posterior_fn(curv_type=curv_type, mv=ggn_mv, layout=params, **_curv_kwargs(curv_type))
    return model_fn, ggn_mv, posterior_fn


def std_map(
    params: Params,
    x_train: jax.Array,
    y_train: jax.Array,
    x_eval: jax.Array,
    *,
    prior_prec: float,
    curv_type: str = CurvApprox.FULL,
    batch_size: int | None = None,
) -> jax.Array:
    """Predictive std of every logit at ``x_eval`` as the tutorial computes it: (m, C)."""
    model_fn, _, posterior_fn = _posterior(params, x_train, y_train, curv_type)
    prob_predictive = set_lin_pushforward(
        model_fn=model_fn,
        mean_params=params,
        posterior_fn=posterior_fn,
        prior_arguments={"prior_prec": prior_prec},
        pushforward_fns=[lin_setup, lin_pred_mean, lin_pred_std],
    )
    fn = jax.jit(jax.vmap(lambda x: prob_predictive(x)["pred_std"]))
    if batch_size is None:
        return fn(x_eval)
    return jnp.concatenate([fn(x_eval[i : i + batch_size]) for i in range(0, len(x_eval), batch_size)])


def cov_blocks(
    params: Params, x_train: jax.Array, y_train: jax.Array, x_eval: jax.Array, *, prior_prec: float
) -> jax.Array:
    """laplax's full-GGN predictive covariance of the logits at each input: (m, C, C)."""
    model_fn, _, posterior_fn = _posterior(params, x_train, y_train, CurvApprox.FULL)
    predictive = set_lin_pushforward(
        model_fn=model_fn,
        mean_params=params,
        posterior_fn=posterior_fn,
        prior_arguments={"prior_prec": prior_prec},
        pushforward_fns=[lin_setup, lin_pred_mean, lin_pred_cov],
    )
    return jax.jit(jax.vmap(lambda x: predictive(x)["pred_cov"]))(x_eval)


def calibrate(
    params: Params,
    x_train: jax.Array,
    y_train: jax.Array,
    x_cal: jax.Array,
    y_cal: jax.Array,
    *,
    log_prior_prec_min: float,
    log_prior_prec_max: float,
    grid_size: int,
    curv_type: str = CurvApprox.FULL,
) -> float:
    """Prior precision by laplax's ECE grid search with the MC-bridge predictive.

    The GGN is built on ``(x_train, y_train)`` and ECE is measured on
    ``(x_cal, y_cal)``. The tutorial passes its calibration set as both (its
    ``calibrate_prior_precision`` builds the predictive from the data it is given).
    """
    model_fn, ggn_mv, posterior_fn = _posterior(params, x_train, y_train, curv_type)
    curv_estimate = estimate_curvature(curv_type=curv_type, mv=ggn_mv, layout=params, **_curv_kwargs(curv_type))
    prior_args, _ = calibration(
        posterior_fn=posterior_fn,
        model_fn=model_fn,
        params=params,
        data={"input": x_cal, "target": y_cal},
        loss_fn=LossFn.CROSS_ENTROPY,
        predictive_type=Predictive.MC_BRIDGE,
        curv_estimate=curv_estimate,
        curv_type=curv_type,
        calibration_objective=CalibrationObjective.ECE,
        calibration_method=CalibrationMethod.GRID_SEARCH,
        log_prior_prec_min=log_prior_prec_min,
        log_prior_prec_max=log_prior_prec_max,
        grid_size=grid_size,
    )
    return float(np.asarray(prior_args["prior_prec"]))
