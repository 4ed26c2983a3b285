"""EPIG under the linearised Laplace predictive: checked against a dense brute force.

The brute force never uses the dual form: dense Jacobians (``jax.jacfwd`` of the
raveled parameters), the dense GGN and posterior covariance (G + tau I)^-1, its
symmetric square root by ``eigh``, and the mutual information of every (candidate,
target) pair with explicit loops.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from alcore import acquisition, epig, laplace, problem
from alcore.model import forward, init_params, n_params

CAP = 10  # padded size of the tiny labelled sets (7 points): padding must change nothing


def _padded_posterior(params, x, cap=CAP):
    dtype = np.asarray(jax.tree.leaves(params)[0]).dtype
    x_pad = np.zeros((cap, 2), dtype)
    x_pad[: len(x)] = x
    mask = np.zeros(cap, dtype)
    mask[: len(x)] = 1
    return laplace.fit_posterior(params, x_pad, mask)  # NumPy: float64 stays float64


def _float64(params):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


@jax.jit
def _dense_jacobian(params, x):
    """d logits / d raveled parameters at each input: (m, C, P), by forward-mode AD."""
    flat, unravel = ravel_pytree(params)
    return jax.vmap(jax.jacfwd(lambda f, xi: forward(unravel(f), xi)), in_axes=(None, 0))(flat, x)


class Dense:
    """The linearised Laplace posterior with every matrix formed explicitly (float64)."""

    def __init__(self, params, x_train):
        self.params = _float64(params)
        jac = self.jacobian(x_train)  # (n, C, P)
        p = _softmax(self.logits(x_train), axis=1)
        hess = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
        self.ggn = np.einsum("icp,ice,ieq->pq", jac, hess, jac)
        self._sqrt = {}

    def jacobian(self, x):
        with jax.enable_x64(True):
            return np.asarray(_dense_jacobian(self.params, np.asarray(x, np.float64)))

    def logits(self, x):
        with jax.enable_x64(True):
            return np.asarray(forward(self.params, np.asarray(x, np.float64)))

    def cov(self, prior_prec):
        return np.linalg.inv(self.ggn + prior_prec * np.eye(len(self.ggn)))

    def sqrt(self, prior_prec):
        """The symmetric (unique positive semi-definite) square root of the covariance."""
        if prior_prec not in self._sqrt:
            cov = self.cov(prior_prec)
            w, q = np.linalg.eigh(0.5 * (cov + cov.T))
            self._sqrt[prior_prec] = (q * np.sqrt(w)) @ q.T
        return self._sqrt[prior_prec]

    def samples(self, x, prior_prec, z_flat):
        """Linearised logits for weight draws Sigma^(1/2) z: (m, C, S)."""
        return self.logits(x)[:, :, None] + np.einsum("mcp,ps->mcs", self.jacobian(x), self.sqrt(prior_prec) @ z_flat)


def _softmax(f, axis):
    e = np.exp(f - f.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def brute_force_mi(probs_x, probs_t):
    """I(y; y*) per pair from per-sample class probabilities, with explicit loops."""
    s = probs_x.shape[-1]
    out = np.zeros((probs_x.shape[0], probs_t.shape[0]))
    for i in range(probs_x.shape[0]):
        for j in range(probs_t.shape[0]):
            joint = probs_x[i] @ probs_t[j].T / s  # sum over samples of outer products
            py, pys = joint.sum(axis=1), joint.sum(axis=0)
            out[i, j] = np.sum(joint * np.log(joint / np.outer(py, pys)))
    return out


def _z_flat(params, key, num_samples):
    """The module's weight draws as a (P, S) matrix in ravel_pytree order."""
    draws = epig.weight_draws(params, key, num_samples)
    return np.concatenate([np.asarray(leaf).reshape(-1, num_samples) for leaf in jax.tree.leaves(draws)])


class Tiny(NamedTuple):
    params: dict
    x: np.ndarray
    cand: np.ndarray
    targets: np.ndarray
    dense: Dense


@pytest.fixture(scope="module", params=[0, 1], ids=["net-seed-0", "net-seed-1"])
def tiny(request):
    """A 2-8-8-8-3 net (195 parameters), 7 labelled points, 6 candidates, 4 targets."""
    seed = request.param
    params = init_params(seed=seed, hidden=8)
    x = np.asarray(jax.random.uniform(jax.random.key(seed + 10), (7, 2)), np.float32)
    cand = np.asarray(jax.random.uniform(jax.random.key(seed + 20), (6, 2)), np.float32)
    targets = np.asarray(jax.random.uniform(jax.random.key(seed + 30), (4, 2)), np.float32)
    return Tiny(params, x, cand, targets, Dense(params, x))


# ------------------------------------------------------------------ posterior draws


def test_weight_draws_are_standard_normal_rows_of_one_draw():
    params = init_params(seed=0, hidden=4)
    z = _z_flat(params, jax.random.key(3), 5)
    assert z.shape == (n_params(params), 5) and z.dtype == np.float64
    with jax.enable_x64(True):
        want = jax.random.normal(jax.random.key(3), (n_params(params), 5), jnp.float64)
    np.testing.assert_array_equal(z, want)


@pytest.mark.parametrize("prior_prec", [0.05, 0.7, 30.0])
def test_posterior_draws_are_the_dense_symmetric_square_root(tiny, prior_prec):
    params, x, _, _, dense = tiny
    post = _padded_posterior(_float64(params), x)
    z_tree = epig.weight_draws(params, jax.random.key(1), 9)
    got = epig.posterior_draws(post, prior_prec, z_tree)
    got_flat = np.concatenate([np.asarray(leaf).reshape(-1, 9) for leaf in jax.tree.leaves(got)])
    want = dense.sqrt(prior_prec) @ _z_flat(params, jax.random.key(1), 9)
    np.testing.assert_allclose(got_flat, want, rtol=1e-8, atol=1e-10 * np.abs(want).max())


def test_logit_samples_are_the_linearised_model(tiny):
    params, _, cand, _, dense = tiny
    z_tree = epig.weight_draws(params, jax.random.key(2), 4)
    got = epig.logit_samples(params, z_tree, np.asarray(cand, np.float64))  # J_x z, no posterior
    want = dense.logits(cand)[:, :, None] + np.einsum(
        "mcp,ps->mcs", dense.jacobian(cand), _z_flat(params, jax.random.key(2), 4)
    )
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ EPIG against the brute force


@pytest.mark.parametrize("prior_prec", [0.1, 0.4132, 5.0])
def test_epig_equals_brute_force_with_the_same_draws(tiny, prior_prec):
    params, x, cand, targets, dense = tiny
    key, s = jax.random.key(7), 32
    z = _z_flat(params, key, s)
    probs_x = _softmax(dense.samples(cand, prior_prec, z), axis=1)
    probs_t = _softmax(dense.samples(targets, prior_prec, z), axis=1)
    want = brute_force_mi(probs_x, probs_t).mean(axis=1)
    assert (want > 0).all()  # the test compares something

    # float64 posterior: agreement to rounding
    post = _padded_posterior(_float64(params), x)
    got = epig.epig_scores(
        post, _float64(params), np.asarray(cand, np.float64), np.asarray(targets, np.float64),
        prior_prec, key, jnp.zeros(s),
    )  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-8)
    # the production call: float32 parameters, inputs and posterior (as experiment.posterior_of)
    post32 = _padded_posterior(params, x)
    got32 = epig.epig_scores(
        post32, params, jnp.asarray(cand), jnp.asarray(targets), jnp.float32(prior_prec), key, jnp.zeros(s)
    )
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, want, rtol=1e-5)  # float32 candidate logits and MI: ~1e-6 measured


def test_many_samples_agree_with_independent_per_pair_gaussian_sampling(tiny):
    """An independent estimator: per pair, the 2C x 2C joint covariance J Sigma J^T from
    the dense posterior, its Cholesky factor, and NumPy's own normal draws."""
    params, x, cand, targets, dense = tiny
    prior_prec, s = 0.4132, 20_000
    cov = dense.cov(prior_prec)
    post = _padded_posterior(_float64(params), x)
    got = np.asarray(
        epig.epig_scores(post, _float64(params), np.asarray(cand, np.float64), np.asarray(targets, np.float64),
                         prior_prec, jax.random.key(0), jnp.zeros(s))
    )  # fmt: skip
    rng = np.random.default_rng(0)
    jx, jt = dense.jacobian(cand), dense.jacobian(targets)
    mx, mt = dense.logits(cand), dense.logits(targets)
    want = np.zeros(len(cand))
    for i in range(len(cand)):
        for j in range(len(targets)):
            jac = np.concatenate([jx[i], jt[j]])  # (2C, P)
            chol = np.linalg.cholesky(jac @ cov @ jac.T)
            f = np.concatenate([mx[i], mt[j]])[:, None] + chol @ rng.standard_normal((6, s))
            want[i] += brute_force_mi(_softmax(f[None, :3], 1), _softmax(f[None, 3:], 1))[0, 0] / len(targets)
    # Monte-Carlo error of either estimate at S = 20,000: well below 5 % of the values here
    np.testing.assert_allclose(got, want, rtol=0.05, atol=2e-4)
    assert np.corrcoef(got, want)[0, 1] > 0.99


def test_chunked_evaluation_equals_one_pass(tiny):
    params, x, _, targets, _ = tiny
    post = _padded_posterior(params, x)
    cand = np.asarray(jax.random.uniform(jax.random.key(5), (2 * epig.CHUNK + 77, 2)), np.float32)
    key, tau = jax.random.key(4), 0.7
    whole = epig.epig_scores(
        post, params, jnp.asarray(cand), jnp.asarray(targets), jnp.float32(tau), key, jnp.zeros(32)
    )
    # the same computation in one pass, from the module's (tested) pieces
    with jax.enable_x64(True):
        draws = epig.posterior_draws(post, tau, epig.weight_draws(params, key, 32))
        probs_x = jax.nn.softmax(epig.logit_samples(params, draws, cand), axis=1)
        probs_t = jax.nn.softmax(epig.logit_samples(params, draws, targets), axis=1)
        want = np.asarray(epig.epig_from_probs(probs_x, probs_t))
    np.testing.assert_allclose(whole, want, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ properties and closed forms


def test_epig_is_non_negative_and_vanishes_with_the_posterior_variance(tiny):
    params, x, _, targets, _ = tiny
    post = _padded_posterior(params, x)
    cand = jnp.asarray(problem.grid_points(12))
    args = (jnp.asarray(targets), jax.random.key(0), jnp.zeros(32))
    scores = epig.epig_scores(post, params, cand, args[0], jnp.float32(0.5), *args[1:])
    assert (scores >= 0).all() and float(scores.max()) > 1e-3
    # a huge prior precision shrinks every (cross-)covariance to ~0: the labels decouple
    frozen = epig.epig_scores(post, params, cand, args[0], jnp.float32(1e9), *args[1:])
    assert float(frozen.max()) < 1e-6 * float(scores.max())


def test_target_without_variance_carries_no_information():
    rng = np.random.default_rng(0)
    probs_x = _softmax(rng.standard_normal((5, 3, 50)) * 2, axis=1)
    const = _softmax(rng.standard_normal((4, 3, 1)), axis=1)
    probs_t = np.broadcast_to(const, (4, 3, 50))  # zero covariance with anything
    with jax.enable_x64(True):
        mi = np.asarray(epig.mutual_information(jnp.asarray(probs_x), jnp.asarray(probs_t)))
        moving = np.asarray(epig.mutual_information(jnp.asarray(probs_x), jnp.asarray(probs_x[:4])))
    np.testing.assert_allclose(mi, 0.0, atol=1e-15)
    assert (moving > 1e-3).all()  # while targets that vary with the samples do carry some


def test_mutual_information_matches_loops_and_is_symmetric():
    rng = np.random.default_rng(1)
    a = _softmax(rng.standard_normal((5, 3, 40)) * 3, axis=1)
    b = _softmax(rng.standard_normal((4, 3, 40)) * 3, axis=1)
    with jax.enable_x64(True):
        ab = np.asarray(epig.mutual_information(jnp.asarray(a), jnp.asarray(b)))
        ba = np.asarray(epig.mutual_information(jnp.asarray(b), jnp.asarray(a)))
    np.testing.assert_allclose(ab, brute_force_mi(a, b), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ab, ba.T, rtol=1e-10, atol=1e-14)


def test_candidate_equal_to_target_is_bounded_by_bald_and_equals_it_for_certain_samples():
    """For x* = x the two labels share the latent function: I(y; y*) <= I(y; f) = BALD
    (data processing; exact for the S-sample mixture), with equality when every sample
    is certain of its class (then y* = y given the sample, and I = H(y) = BALD)."""
    rng = np.random.default_rng(2)
    probs = _softmax(rng.standard_normal((6, 3, 64)) * 2, axis=1)
    with jax.enable_x64(True):
        self_mi = np.diag(np.asarray(epig.mutual_information(jnp.asarray(probs), jnp.asarray(probs))))
        bald = np.asarray(acquisition.bald_score(jnp.asarray(probs.transpose(2, 0, 1))))
    assert (self_mi > 0).all() and (self_mi <= bald + 1e-12).all() and (self_mi < bald - 1e-3).any()
    one_hot = np.eye(3)[rng.integers(0, 3, (6, 64))].transpose(0, 2, 1)  # (m, C, S)
    with jax.enable_x64(True):
        self_mi = np.diag(np.asarray(epig.mutual_information(jnp.asarray(one_hot), jnp.asarray(one_hot))))
        bald = np.asarray(acquisition.bald_score(jnp.asarray(one_hot.transpose(2, 0, 1))))
    np.testing.assert_allclose(self_mi, bald, rtol=1e-9)


def test_model_candidate_equal_to_its_only_target_is_bounded_by_its_bald(tiny):
    params, x, cand, _, _ = tiny
    post = _padded_posterior(params, x)
    key, s = jax.random.key(3), 256
    self_epig = [
        float(epig.epig_scores(post, params, jnp.asarray(c[None]), jnp.asarray(c[None]), jnp.float32(0.3), key, jnp.zeros(s))[0])
        for c in cand
    ]  # fmt: skip
    with jax.enable_x64(True):
        draws = epig.posterior_draws(post, 0.3, epig.weight_draws(params, key, s))
        probs = jax.nn.softmax(epig.logit_samples(params, draws, jnp.asarray(cand)), axis=1)
        bald = np.asarray(acquisition.bald_score(jnp.transpose(probs, (2, 0, 1))))
    assert all(0 < e <= b + 1e-6 for e, b in zip(self_epig, bald, strict=True))


# ------------------------------------------------------------------ targets, shapes, compilation


def test_target_sample_is_a_fixed_subset_of_the_grid():
    grid = problem.grid_points(30)
    a = epig.target_sample(grid, 256)
    b = epig.target_sample(grid, 256)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (256, 2)
    idx = epig.target_indices(len(grid), 256)
    assert len(np.unique(idx)) == 256 and (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(a, grid[idx])
    assert not np.array_equal(epig.target_indices(len(grid), 256, seed=1), idx)
    np.testing.assert_array_equal(epig.target_sample(grid[:100], 256), grid[:100])  # small grid: all of it


def _cache_sizes():
    return epig.weight_draws.__wrapped__._cache_size(), epig._epig_from_draws.__wrapped__._cache_size()


def test_new_values_do_not_recompile(tiny):
    params, x, cand, targets, _ = tiny
    cand = jnp.asarray(np.tile(cand, (3, 1)))  # a shape no other test uses
    post = _padded_posterior(params, x)
    epig.epig_scores(post, params, cand, jnp.asarray(targets), jnp.float32(0.5), jax.random.key(0), jnp.zeros(8))
    before = _cache_sizes()
    other_params = jax.tree.map(lambda a: a * 1.1, params)
    other_post = _padded_posterior(other_params, x[::-1] * 0.5)
    out = epig.epig_scores(
        other_post, other_params, cand + 0.1, jnp.asarray(targets) * 0.5, jnp.float32(2.0), jax.random.key(9), jnp.ones(8)
    )  # fmt: skip
    assert _cache_sizes() == before
    assert out.shape == (cand.shape[0],)


@pytest.mark.heavy  # EPIG's programs, traced anew
def test_precompile_leaves_nothing_to_compile():
    from tests.helpers import xla_compilations

    params = init_params(seed=4, hidden=8)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (13, 2)), np.float32)  # shapes no other test uses
    cand, targets = np.asarray(problem.grid_points(9)), np.asarray(problem.grid_points(3))
    post = _padded_posterior(params, x, cap=16)
    epig.precompile(jax.eval_shape(lambda p: p, post), params, cand, targets, num_samples=24)
    with xla_compilations() as compiled:
        out = epig.epig_scores(
            post, params, jnp.asarray(cand), jnp.asarray(targets), jnp.float32(0.3), jax.random.key(2), jnp.zeros(24)
        )
    assert out.shape == (len(cand),)
    assert not {"jit(weight_draws)", "jit(_epig_from_draws)"} & set(compiled), compiled


def test_greedy_batch_recipe_conditions_on_the_earlier_pick():
    """The intended use in experiment.acquire's greedy loop: score under the posterior of
    the labelled set plus the earlier picks (experiment.posterior_of, padded to its
    capacity). Conditioning on a pick lowers that point's own EPIG markedly."""
    from alcore import experiment

    params = init_params(seed=5, hidden=8)
    x = np.asarray(jax.random.uniform(jax.random.key(7), (9, 2)), np.float32)
    grid = np.asarray(problem.grid_points(12))
    targets = jnp.asarray(epig.target_sample(grid, 32))

    def scores(x_cond):
        post = experiment.posterior_of(params, x_cond)
        return np.asarray(
            epig.epig_scores(
                post, params, jnp.asarray(grid), targets, jnp.float32(0.5), jax.random.key(0), jnp.zeros(64)
            )
        )

    before = scores(x)
    first = int(np.argmax(before))
    after = scores(np.concatenate([x, grid[[first]]]))
    assert after[first] < 0.8 * before[first]
    # the same as an unpadded posterior of the grown set: padding changes nothing
    grown = np.concatenate([x, grid[[first]]])
    post = _padded_posterior(params, grown, cap=len(grown))  # no padding
    direct = epig.epig_scores(
        post, params, jnp.asarray(grid), targets, jnp.float32(0.5), jax.random.key(0), jnp.zeros(64)
    )
    np.testing.assert_allclose(after, direct, rtol=1e-4, atol=1e-7)
