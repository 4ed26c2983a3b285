"""Marginal-likelihood calibration: laplax's own objective and grid search, reproduced.

laplax is given its full GGN (``create_ggn_mv`` with ``LossFn.CROSS_ENTROPY``, dense
``estimate_curvature``) and, for the data term, the summed softmax cross-entropy as a
callable loss: its built-in ``LossFn.CROSS_ENTROPY`` data term is not usable for this
objective in laplax 0.0.2 (pinned by the last test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from laplax.api import calibration, estimate_curvature
from laplax.curv import create_ggn_mv, create_posterior_fn
from laplax.enums import CalibrationMethod, CalibrationObjective, CurvApprox, LossFn, Predictive
from laplax.eval.likelihood import marginal_log_likelihood

from alcore import calibration as ece_calibration
from alcore import laplace, marglik, problem
from alcore.model import init_params, laplax_model_fn, n_params


def summed_ce(logits, target):
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits, target).sum()


def _case(seed, hidden, n):
    params = init_params(seed=seed, hidden=hidden)
    x = np.asarray(jax.random.uniform(jax.random.key(seed + 10), (n, 2)), np.float32)
    return params, x, np.asarray(problem.true_labels(x))


CASES = {
    "2-8-8-8-3, n=7": (0, 8, 7),
    "2-8-8-8-3, n=12 (other net)": (1, 8, 12),
    "2-2-2-2-3, n=20: rank n(C-1) = 40 > P = 27": (2, 2, 20),
}


@pytest.fixture(params=list(CASES.values()), ids=list(CASES))
def case(request):
    return _case(*request.param)


def laplax_objective(params, x, y, prior_precs):
    """laplax's minimised MLL objective, in float64 (laplax's own code, x64 enabled)."""
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
        data = {"input": jnp.asarray(x, jnp.float64), "target": jnp.asarray(y)}
        mv = create_ggn_mv(laplax_model_fn(), p64, data, loss_fn=LossFn.CROSS_ENTROPY)
        curv = estimate_curvature(curv_type=CurvApprox.FULL, mv=mv, layout=p64)
        objective = jax.jit(  # as laplax's _make_mll_objective: one compiled program for every tau
            lambda tau: (
                -marginal_log_likelihood(
                    curv,
                    {"prior_prec": tau},
                    data,
                    laplax_model_fn(),
                    p64,
                    summed_ce,
                    CurvApprox.FULL,
                    vmap_over_data=True,
                )
            )
        )
        return np.array([float(objective(jnp.float64(tau))) for tau in prior_precs])


def laplax_choice(params, x, y, *, log_min, log_max, size):
    """laplax.api.calibration with the MLL objective and grid search, as a user calls it (float32)."""
    model_fn = laplax_model_fn()
    data = {"input": jnp.asarray(x), "target": jnp.asarray(y)}
    mv = create_ggn_mv(model_fn, params, data, loss_fn=LossFn.CROSS_ENTROPY)
    curv = estimate_curvature(curv_type=CurvApprox.FULL, mv=mv, layout=params)
    prior_args, _ = calibration(
        posterior_fn=create_posterior_fn(curv_type=CurvApprox.FULL, mv=mv, layout=params),
        model_fn=model_fn,
        params=params,
        data=data,
        loss_fn=summed_ce,
        predictive_type=Predictive.MC_BRIDGE,
        curv_estimate=curv,
        curv_type=CurvApprox.FULL,
        calibration_objective=CalibrationObjective.MARGINAL_LOG_LIKELIHOOD,
        calibration_method=CalibrationMethod.GRID_SEARCH,
        log_prior_prec_min=log_min,
        log_prior_prec_max=log_max,
        grid_size=size,
    )
    return float(np.asarray(prior_args["prior_prec"]))


def test_objective_equals_laplax_objective(case):
    params, x, y = case
    taus = np.array([1e-3, 0.05, 0.4132, 3.0, 70.0, 5e3])
    want = laplax_objective(params, x, y, taus)
    got = marglik.objective_curve(params, x, y, taus)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # and it is not flat: the terms that depend on tau matter
    assert np.ptp(want) > 1.0


def test_objective_matches_laplax_in_float32(case):
    params, x, y = case
    taus = np.asarray(jnp.logspace(-2.0, 3.0, 7))  # laplax's float32 grid values
    model_fn = laplax_model_fn()
    data = {"input": jnp.asarray(x), "target": jnp.asarray(y)}
    mv = create_ggn_mv(model_fn, params, data, loss_fn=LossFn.CROSS_ENTROPY)
    curv = estimate_curvature(curv_type=CurvApprox.FULL, mv=mv, layout=params)
    objective = jax.jit(
        lambda tau: (
            -marginal_log_likelihood(
                curv, {"prior_prec": tau}, data, model_fn, params, summed_ce, CurvApprox.FULL, vmap_over_data=True
            )
        )
    )
    want = [float(objective(t)) for t in jnp.logspace(-2.0, 3.0, 7)]
    got = marglik.objective_curve(params, x, y, taus)
    # laplax in float32 (its P x P slogdet, terms of size P |log tau|): 4e-6 relative measured
    np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.parametrize(("log_min", "log_max", "size"), [(-2.0, 3.0, 12), (-3.0, 4.0, 40)])
def test_calibration_picks_laplax_choice(case, log_min, log_max, size):
    params, x, y = case
    want = laplax_choice(params, x, y, log_min=log_min, log_max=log_max, size=size)
    got, grid, curve = marglik.calibrate(params, x, y, log_min=log_min, log_max=log_max, size=size)
    assert grid.shape == curve.shape == (size,)
    np.testing.assert_allclose(grid, np.logspace(log_min, log_max, size))
    assert got == pytest.approx(want, rel=1e-6)
    assert grid[0] < got < grid[-1]  # an interior optimum: the choice is informative


def test_log_determinant_from_eigenvalues_is_the_dense_one(case):
    params, x, _ = case
    logits, jac = ece_calibration.logits_and_jacobian(params, x)  # dense (n, C, P), float64
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    hess = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    ggn = np.einsum("icp,ice,ieq->pq", jac, hess, jac)
    s = marglik.ggn_eigvals(params, x)
    n_p = jac.shape[-1]
    for tau in (1e-3, 0.4, 50.0):
        want = np.linalg.slogdet(ggn + tau * np.eye(n_p))[1]
        got = np.sum(np.log(s + tau)) + (n_p - len(s)) * np.log(tau)
        assert got == pytest.approx(want, rel=1e-10, abs=1e-8)


def test_padding_and_the_dual_form_posterior_give_the_same_curve(case):
    params, x, y = case
    taus = np.logspace(-2, 3, 9)
    want = marglik.objective_curve(params, x, y, taus)
    cap = len(x) + 5
    x_pad = np.zeros((cap, 2), np.float32)
    x_pad[: len(x)] = x
    y_pad = np.zeros(cap, np.int32)
    y_pad[: len(y)] = y
    mask = (np.arange(cap) < len(x)).astype(np.float32)
    np.testing.assert_allclose(marglik.objective_curve(params, x_pad, y_pad, taus, mask), want, rtol=1e-12)
    # the eigenvalues experiment.posterior_of already computed (float32 features) serve too
    post = laplace.fit_posterior(params, jnp.asarray(x_pad), jnp.asarray(mask))
    leaves = [np.asarray(a, np.float64) for a in jax.tree.leaves(params)]
    from_post = -marglik.log_marginal_likelihood(
        np.asarray(post.eigvals),
        n_params=n_params(params),
        params_sq_norm=sum(float(np.sum(a**2)) for a in leaves),
        data_loss=marglik.summed_cross_entropy(params, x, y),
        prior_precs=taus,
    )
    np.testing.assert_allclose(from_post, want, rtol=1e-5)


def test_summed_cross_entropy_is_the_training_loss():
    params, x, y = _case(3, 8, 9)
    want = float(summed_ce(laplax_model_fn()(jnp.asarray(x), params), jnp.asarray(y)))
    assert marglik.summed_cross_entropy(params, x, y) == pytest.approx(want, rel=1e-5)


def test_laplax_builtin_cross_entropy_data_term_is_unusable_here():
    """Why the tests hand laplax the loss as a callable: in laplax 0.0.2 the built-in
    CROSS_ENTROPY data term is an unsummed element-wise sigmoid cross-entropy. If this
    test fails, laplax changed: compare against its built-in loss instead."""
    params, x, y = _case(0, 4, 5)
    model_fn = laplax_model_fn()
    mv = create_ggn_mv(
        model_fn, params, {"input": jnp.asarray(x), "target": jnp.asarray(y)}, loss_fn=LossFn.CROSS_ENTROPY
    )
    curv = estimate_curvature(curv_type=CurvApprox.FULL, mv=mv, layout=params)
    args = (curv, {"prior_prec": 1.0})
    rest = (model_fn, params, LossFn.CROSS_ENTROPY, CurvApprox.FULL)
    with pytest.raises((ValueError, TypeError)):  # integer labels do not broadcast
        marginal_log_likelihood(*args, {"input": jnp.asarray(x), "target": jnp.asarray(y)}, *rest, vmap_over_data=True)
    one_hot = jax.nn.one_hot(y, 3)
    out = marginal_log_likelihood(*args, {"input": jnp.asarray(x), "target": one_hot}, *rest, vmap_over_data=True)
    assert out.shape == (5, 3)  # not a scalar: no objective to minimise
