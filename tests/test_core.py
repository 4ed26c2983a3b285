"""The core's math, without Prefect: checked against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sources
from alcore import acquisition, calibration, experiment, laplace, laplax_path, problem, strategies, training
from alcore.model import MLP, forward, init_params, n_params

# ------------------------------------------------------------------ problem


@pytest.mark.parametrize(
    ("point", "label"),
    [
        ((0.5, 0.0), 0),
        ((0.5, 0.99), 2),
        ((0.5, 0.6), 1),
        ((0.5, 0.825), 2),
        ((0.0, 0.45), 2),
        ((0.0, 0.1), 0),
        ((0.0, 0.2), 2),
        ((1.0, 0.69), 0),
        ((1.0, 0.71), 2),
    ],
)
def test_true_label_on_known_points(point, label):
    # f1(0.5) = 0.3625, f2(0.5) = 0.825; f1(0) = 0.5, f2(0) = 0.2; f1(1) = 0.9, f2(1) = 0.7.
    # Where f2 < f1 (the edges) class 1 is empty: at or above f2 is 2, below is 0.
    assert int(problem.true_label(jnp.array(point))) == label


def test_keys_and_points_follow_the_tutorial():
    keys = problem.split_keys(7)
    ref = jax.random.split(jax.random.key(7), 4)
    for got, want in zip(keys, ref, strict=True):
        np.testing.assert_array_equal(got, jax.random.key_data(want))
    for n in (5, 70, 1001):
        pts = problem.uniform_points(keys.initial, n)
        k1, k2 = jax.random.split(ref[0])
        np.testing.assert_array_equal(pts[:, 0], jax.random.uniform(k1, shape=n))
        np.testing.assert_array_equal(pts[:, 1], jax.random.uniform(k2, shape=n))
    grid = problem.grid_points(3)
    assert grid.shape == (9, 2)
    np.testing.assert_allclose(grid[1], [0.5, 0.0])  # row-major in x, then y


@pytest.mark.parametrize("grid_size", [7, 42, 100, 101])
def test_numpy_labels_are_the_jax_oracles(grid_size):
    pts = np.concatenate(
        [problem.grid_points(grid_size), problem.uniform_points(problem.split_keys(3).passive, 20_000)]
    )
    np.testing.assert_array_equal(problem.true_labels(pts), jax.vmap(problem.true_label)(jnp.asarray(pts)))


# ------------------------------------------------------------------ model


def test_parameter_count_is_the_tutorials():
    # 2*32+32 + 2*(32*32+32) + 32*3+3 = 2307
    assert n_params(init_params(seed=0)) == 2307


def test_pure_forward_equals_the_nnx_module():
    model = MLP(2, 32, 3, rngs=nnx.Rngs(11))
    x = jax.random.uniform(jax.random.key(0), (6, 2))
    np.testing.assert_allclose(forward(init_params(seed=11), x), model(x), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ training


class TutorialLoader:
    """The tutorial helper's DataLoader, reduced to its batching (independent replica)."""

    def __init__(self, n, batch_size):
        self.indices, self.batch_size = np.arange(n), batch_size
        self.rng = np.random.default_rng(seed=0)

    def epoch(self):
        self.rng.shuffle(self.indices)
        return [self.indices[i : i + self.batch_size].copy() for i in range(0, len(self.indices), self.batch_size)]


def test_schedule_replays_the_tutorial_loader():
    loader = TutorialLoader(23, 10)
    sched = training.epoch_batches(n_points=23, n_epochs=4, batch_size=10, max_points=45)
    assert sched.index.shape == (4, 5, 10)
    for e in range(4):
        batches = loader.epoch()
        assert sched.valid[e].tolist() == [True, True, True, False, False]
        for b, want in enumerate(batches):
            got = sched.index[e, b][sched.mask[e, b] > 0]
            np.testing.assert_array_equal(got, want)


def test_padded_scan_equals_a_per_batch_loop():
    x = np.asarray(jax.random.uniform(jax.random.key(1), (13, 2)), np.float32)
    y = np.asarray(problem.true_labels(jnp.asarray(x)))
    params = init_params(seed=3, hidden=8)
    tx = optax.adam(1e-2)
    # independent reference: the tutorial's loop, one optax step per real batch
    ref, state = params, tx.init(params)
    loader = TutorialLoader(13, 5)
    for _ in range(6):
        for idx in loader.epoch():
            grads = jax.grad(
                lambda p, i=idx: optax.losses.softmax_cross_entropy_with_integer_labels(forward(p, x[i]), y[i]).sum()
            )(ref)
            updates, state = tx.update(grads, state, ref)
            ref = optax.apply_updates(ref, updates)
    x_pad = np.zeros((40, 2), np.float32)
    y_pad = np.zeros(40, np.int32)
    x_pad[:13], y_pad[:13] = x, y
    sched = training.epoch_batches(n_points=13, n_epochs=6, batch_size=5, max_points=40)
    got, _, losses = training.train(params, tx.init(params), x_pad, y_pad, sched, tx=tx)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.isnan(losses[:, 3:]).all() and not np.isnan(losses[:, :3]).any()


def test_optimizer_is_reused_so_training_does_not_recompile():
    assert training.make_optimizer(learning_rate=0.1) is training.make_optimizer(learning_rate=0.1)


# ------------------------------------------------------------------ Laplace


@pytest.fixture(
    params=[(0, 2, 3, 3), (1, 2, 3, 3), (2, 5, 4, 3), (3, 5, 4, 1)],
    ids=["net-seed-0", "net-seed-1", "d5-C4", "depth-1"],
)
def small_problem(request):
    """A small net, its labelled points and points to evaluate: the tutorial's 2-D,
    3-class shape twice, and 5 features with 4 classes (any d and C must work), also
    with one hidden layer (the pools' network)."""
    seed, d, c, depth = request.param
    params = init_params(seed=seed, hidden=8, in_dim=d, n_classes=c, hidden_layers=depth)
    x = np.asarray(jax.random.uniform(jax.random.key(seed + 10), (7, d)), np.float32)
    if d == 2:
        y = np.asarray(problem.true_labels(jnp.asarray(x)))
    else:
        y = np.asarray(jax.random.randint(jax.random.key(seed + 30), (7,), 0, c), np.int32)
    x_eval = np.asarray(jax.random.uniform(jax.random.key(seed + 20), (25, d)), np.float32)
    return params, x, y, x_eval


def _padded_posterior(params, x, cap):
    x_pad = np.zeros((cap, x.shape[1]), np.float32)
    x_pad[: len(x)] = x
    mask = np.zeros(cap, np.float32)
    mask[: len(x)] = 1
    return laplace.fit_posterior(params, jnp.asarray(x_pad), jnp.asarray(mask))


@pytest.mark.parametrize("prior_prec", [0.05, 0.4132, 30.0])
def test_predictive_std_equals_laplax(small_problem, prior_prec):
    params, x, y, x_eval = small_problem
    want = laplax_path.std_map(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(x_eval), prior_prec=prior_prec)
    post = _padded_posterior(params, x, cap=12)  # padding must not change anything
    got = laplace.predictive_std(post, params, jnp.asarray(x_eval), prior_prec)
    assert got.shape == want.shape
    assert (got >= 0).all()
    assert float(jnp.max(jnp.abs(got - want))) <= 1e-4 * float(jnp.max(want))


def test_std_of_selected_class_equals_full_map(small_problem):
    params, x, _, x_eval = small_problem
    post = _padded_posterior(params, x, cap=7)
    classes = jnp.asarray(np.arange(len(x_eval)) % experiment.n_classes_of(params))
    full = laplace.predictive_var(post, params, jnp.asarray(x_eval), jnp.float32(0.7))
    sel = laplace.predictive_var_of(post, params, jnp.asarray(x_eval), classes, jnp.float32(0.7))
    np.testing.assert_allclose(sel, full[jnp.arange(len(x_eval)), classes], rtol=1e-5, atol=1e-6)


def test_chunked_evaluation_equals_evaluation_in_pieces(small_problem):
    params, x, _, _ = small_problem
    post = _padded_posterior(params, x, cap=8)
    x_many = np.asarray(jax.random.uniform(jax.random.key(5), (2 * laplace.CHUNK + 345, x.shape[1])), np.float32)
    classes = np.arange(len(x_many)) % experiment.n_classes_of(params)
    tau = jnp.float32(0.7)
    pieces = [slice(i, i + 100) for i in range(0, len(x_many), 100)]  # each below CHUNK: not chunked
    for fn, args in (
        (laplace.predictive_var, ()),
        (laplace.predictive_var_of, (classes,)),
        (laplace.predictive_cov_blocks, ()),
    ):
        whole = fn(post, params, jnp.asarray(x_many), *map(jnp.asarray, args), tau)
        parts = [fn(post, params, jnp.asarray(x_many[p]), *(jnp.asarray(a[p]) for a in args), tau) for p in pieces]
        assert whole.shape[0] == len(x_many)
        np.testing.assert_allclose(whole, np.concatenate(parts), rtol=1e-6, atol=1e-9)


def test_predictive_cov_diagonal_is_the_variance(small_problem):
    params, x, _, x_eval = small_problem
    post = _padded_posterior(params, x, cap=9)
    cov = laplace.predictive_cov(post, params, jnp.asarray(x_eval[:4]), jnp.float32(0.3))
    var = laplace.predictive_var(post, params, jnp.asarray(x_eval[:4]), jnp.float32(0.3))
    np.testing.assert_allclose(jnp.einsum("icic->ic", cov), var, rtol=1e-4, atol=1e-5)
    flat = cov.reshape(4 * var.shape[1], 4 * var.shape[1])
    np.testing.assert_allclose(flat, flat.T, atol=1e-4)


def test_hessian_factor_reproduces_the_softmax_hessian():
    logits = jax.random.normal(jax.random.key(0), (5, 3)) * 3
    b = laplace.hessian_factor(logits)
    assert b.shape == (5, 3, 2)
    p = jax.nn.softmax(logits)
    want = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]
    np.testing.assert_allclose(b @ b.transpose(0, 2, 1), want, atol=1e-6)


def test_lowrank_cholesky_equals_dense_cholesky():
    rng = np.random.default_rng(0)
    at_u = rng.standard_normal((150, 6)) * 0.05  # 150 rows: three blocks, the last partial
    scale = np.array([[1.0] * 6, [0.5] * 6])
    z = rng.standard_normal((150, 4))
    got = calibration.cholesky_samples(at_u, scale, z, np.eye(150))
    for t in range(2):
        v = at_u * scale[t]
        np.testing.assert_allclose(got[t], np.linalg.cholesky(np.eye(150) - v @ v.T) @ z, rtol=1e-10, atol=1e-12)


def test_cholesky_samples_mark_a_non_positive_definite_covariance_nan():
    at_u = np.zeros((70, 2))
    at_u[3, 0] = 2.0  # I - v v^T has eigenvalue -3 at scale 1
    got = calibration.cholesky_samples(at_u, np.array([[1.0, 1.0], [0.1, 0.1]]), np.ones((70, 3)), np.eye(70))
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()


def test_prng_reproduces_jax_keys_bits_uniforms_and_normals():
    from alcore import prng

    key = jax.random.key(7)
    raw = prng.key(7)
    np.testing.assert_array_equal(prng.split(raw, 5), jax.random.key_data(jax.random.split(key, 5)))
    np.testing.assert_array_equal(prng.bits(raw, 1001), jax.random.bits(key, (1001,)))
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    np.testing.assert_array_equal(prng.uniform(raw, 1001, lo, 1.0), jax.random.uniform(key, (1001,), minval=lo))
    np.testing.assert_allclose(prng.normal(raw, 100_000), jax.random.normal(key, (100_000,)), rtol=1e-4, atol=5e-5)
    with pytest.raises(ValueError, match="32 bits"):
        prng.key(-1)


def test_weight_draws_are_laplax_draws():
    from jax.flatten_util import ravel_pytree
    from laplax.util.tree import randn_like

    params = init_params(seed=0, hidden=4)
    draws = calibration.weight_draws(params, num_samples=3)
    keys = jax.random.split(jax.random.key(0), 3)
    for s in range(3):
        np.testing.assert_allclose(draws[:, s], ravel_pytree(randn_like(keys[s], params))[0], rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("depth", [3, 1, 2])
def test_jacobian_is_ravel_pytree_jacobian(depth):
    from jax.flatten_util import ravel_pytree

    params = init_params(seed=3, hidden=5, hidden_layers=depth)
    assert sorted(params) == [f"linear{i}" for i in range(1, depth + 2)]
    x = np.asarray(jax.random.uniform(jax.random.key(1), (4, 2)))
    flat, unravel = ravel_pytree(params)
    want = jax.vmap(lambda xi: jax.jacrev(lambda f: forward(unravel(f), xi))(flat))(jnp.asarray(x))
    logits, jac = calibration.logits_and_jacobian(params, x)
    np.testing.assert_allclose(jac, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, forward(params, x), rtol=1e-5, atol=1e-6)


def test_ece_matches_laplax():
    from laplax.eval.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, (4, 50))
    conf[0, :5] = [0.0, 1.0, 1 / 15, 0.5, 14 / 15]  # the edges
    correct = rng.uniform(size=50) < 0.7
    want = [expected_calibration_error(jnp.asarray(c), jnp.asarray(correct, jnp.int32), 15) for c in conf]
    np.testing.assert_allclose(calibration.expected_calibration_errors(conf, correct), want, rtol=1e-5)


def test_calibration_picks_laplax_choice(small_problem):
    params, x, y, _ = small_problem
    want = laplax_path.calibrate(params, x, y, x, y, log_prior_prec_min=-2.0, log_prior_prec_max=3.0, grid_size=12)
    got, grid, curve = calibration.calibrate(
        params, np.asarray(x), np.ones(len(x)), np.asarray(x), np.asarray(y), log_min=-2.0, log_max=3.0, size=12
    )
    assert grid.shape == curve.shape == (12,)
    assert got == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------ acquisition, metrics


def test_max_std_rule_picks_the_argmax():
    scores = np.array([0.1, 0.7, 0.3, 0.7])
    assert acquisition.pick(scores, rule="argmax", key=None, exclude=[]) == 1  # first of ties, as jnp.argmax
    assert acquisition.pick(scores, rule="argmax", key=None, exclude=[1]) == 3
    with pytest.raises(ValueError, match="every candidate is excluded"):
        acquisition.pick(scores, rule="argmax", key=None, exclude=[0, 1, 2, 3])


def test_sampled_rule_is_deterministic_and_follows_the_scores():
    scores = np.array([0.0, 0.0, 30.0, 0.0])
    key = experiment.round_key(np.asarray(jax.random.key_data(jax.random.key(3))), 4)
    assert acquisition.pick(scores, rule="sample", key=key, exclude=[]) == 2
    assert acquisition.pick(scores, rule="sample", key=key, exclude=[2]) != 2
    # the tutorial's rule: jax.random.categorical with the scores as logits
    wide = np.linspace(0, 3, 50).astype(np.float32)
    for i in range(5):
        k = jax.random.key(i)
        assert acquisition.pick(wide, rule="sample", key=k, exclude=[]) == int(jax.random.categorical(k, wide))
    picks = {acquisition.pick(np.zeros(50), rule="sample", key=jax.random.key(i), exclude=[]) for i in range(20)}
    assert len(picks) > 5


def test_round_keys_are_the_tutorials_split():
    raw = np.asarray(jax.random.key_data(jax.random.key(9)))
    keys = jax.random.split(jax.random.key(9), 50)
    for r in (1, 17, 50):
        assert (jax.random.key_data(experiment.round_key(raw, r)) == jax.random.key_data(keys[r - 1])).all()
    with pytest.raises(ValueError, match="serves rounds 1-2048"):
        experiment.round_key(raw, experiment.ROUND_KEYS + 1)


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="unknown pick rule"):
        acquisition.pick(np.ones(3), rule="kmeans", key=None, exclude=[])


def test_accuracy_metric():
    assert experiment.accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    assert experiment.capacity(1) == experiment.capacity(128) == 128
    assert experiment.capacity(129) == 256
    assert [experiment.posterior_capacity(n) for n in (1, 32, 33, 70)] == [32, 32, 64, 96]
    assert experiment.posterior_capacity(70, n_classes=10) == 72  # 8 points: 72 rows of the dual form
    assert [experiment.training_capacity(n) for n in (1, 32, 33, 70, 129)] == [32, 32, 64, 96, 160]
    assert experiment.training_capacity(70, batch_size=10) == experiment.capacity(70) == 128


@pytest.mark.parametrize(("n", "d", "n_classes"), [(21, 2, 3), (70, 2, 3), (150, 2, 3), (69, 64, 10)])
def test_full_batch_training_does_not_depend_on_its_padding(n, d, n_classes):
    """The training padding step (``experiment.training_capacity``) is a speed choice:
    on paddings that are multiples of 32 the trained parameters are bit-identical
    (masked rows add exact zeros at the end of every sum). A padding off that step
    (72 or 80 rows) is not, so the step is not free to change."""
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, n_classes, n).astype(np.int32)
    params = init_params(seed=1, hidden=32, in_dim=d, n_classes=n_classes)
    tx = training.make_optimizer(learning_rate=3e-3)

    def trained(cap):
        x_pad, y_pad, _ = experiment.padded(x, y, n_classes=n_classes, cap=cap)
        schedule = training.epoch_batches(n_points=n, n_epochs=200, batch_size=0, max_points=cap)
        out, _, _ = training.train(params, tx.init(params), x_pad, y_pad, schedule, tx=tx, prior_prec=0.5)
        return jax.tree.leaves(out)

    tight = trained(experiment.training_capacity(n, n_classes))
    for cap in (experiment.training_capacity(n, n_classes) + 32, 256):
        for a, b in zip(tight, trained(cap), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_posterior_does_not_depend_on_its_padding(small_problem):
    """Masked padding rows add exact zeros: the posterior's padding step
    (``experiment.posterior_capacity``) is a speed choice. Bit-identical on the
    machine it was measured on; asserted to float64 rounding, so a CPU whose
    eigensolver rounds otherwise does not fail here."""
    params, x, _, x_eval = small_problem
    classes = jnp.asarray(np.arange(len(x_eval)) % experiment.n_classes_of(params))
    tau = jnp.float32(0.4132)
    tight, wide = _padded_posterior(params, x, cap=len(x) + 1), _padded_posterior(params, x, cap=128)
    for fn, args in ((laplace.predictive_var_of, (classes,)), (laplace.predictive_cov_blocks, ())):
        np.testing.assert_allclose(
            fn(tight, params, jnp.asarray(x_eval), *args, tau),
            fn(wide, params, jnp.asarray(x_eval), *args, tau),
            rtol=1e-6,
            atol=1e-9,
        )


@pytest.mark.slow  # a fresh interpreter: Prefect is imported in this one
def test_core_never_imports_prefect():
    import subprocess
    import sys

    code = (
        "import sys, alcore.experiment, alcore.calibration, alcore.laplax_path, alcore.config;"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'prefect'];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------ strategies (hand-made predictives)


def _probs(logits, cov_scale, key=0, samples=4000):
    mean = jnp.asarray(logits, jnp.float32)
    cov = cov_scale * jnp.broadcast_to(jnp.eye(3), (mean.shape[0], 3, 3))
    return acquisition.mc_probabilities(mean, cov, jax.random.key(key), jnp.zeros(samples))


def test_a_points_samples_do_not_depend_on_the_other_points():
    rng = np.random.default_rng(0)
    mean = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    a = rng.normal(size=(6, 3, 3))
    cov = jnp.asarray(a @ a.transpose(0, 2, 1), jnp.float32)
    whole = acquisition.mc_probabilities(mean, cov, jax.random.key(1), jnp.zeros(50))
    alone = acquisition.mc_probabilities(mean[4:5], cov[4:5], jax.random.key(1), jnp.zeros(50))
    np.testing.assert_allclose(whole[:, 4:5], alone, rtol=1e-6)
    sample_mean = np.asarray(jnp.log(whole)).mean(0)  # not degenerate: the samples spread
    assert np.asarray(whole).std(0).min() > 1e-3 and np.isfinite(sample_mean).all()


def test_every_points_logit_samples_have_exactly_its_mean_and_covariance():
    """Moment-matched common random numbers: whatever the key, each point's S logit
    samples have its mean and covariance (shared raw draws shared one error: a bias
    that cost the tutorial's margin 0.66 points, alcore/acquisition.py)."""
    rng = np.random.default_rng(1)
    mean = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    a = rng.normal(size=(5, 4, 4))
    cov = jnp.asarray(a @ a.transpose(0, 2, 1) + 0.1 * np.eye(4), jnp.float32)
    for key in (0, 7):
        probs = acquisition.mc_probabilities(mean, cov, jax.random.key(key), jnp.zeros(32))
        logits = np.log(np.asarray(probs, np.float64))
        logits -= logits[..., :1]  # softmax loses a constant: compare differences to class 0
        want = np.asarray(mean, np.float64) - np.asarray(mean, np.float64)[:, :1]
        np.testing.assert_allclose(logits.mean(0), want, atol=2e-3)
        d = np.eye(4)[1:] - np.eye(4)[:1]  # the differences' covariance: D cov D^T
        got = np.einsum("smc,smd->mcd", logits[..., 1:] - want[None, :, 1:], logits[..., 1:] - want[None, :, 1:]) / 32
        np.testing.assert_allclose(got, d @ np.asarray(cov, np.float64) @ d.T, rtol=2e-2, atol=2e-2)


def test_entropy_is_log_c_for_a_uniform_predictive():
    probs = _probs([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]], 0.0)
    ent = acquisition.entropy_score(probs)
    assert float(ent[0]) == pytest.approx(np.log(3), abs=1e-5)
    assert float(ent[1]) < 0.1


def test_bald_is_zero_for_a_point_mass_and_positive_otherwise():
    point_mass = _probs([[0.3, -1.0, 2.0]], 0.0)
    assert float(acquisition.bald_score(point_mass)[0]) == pytest.approx(0.0, abs=1e-5)
    spread = _probs([[0.0, 0.0, 0.0]], 25.0)
    bald = float(acquisition.bald_score(spread)[0])
    assert 0.3 < bald <= np.log(3)  # large logit noise: confident samples that disagree
    # independent check: H[mean] - mean H computed in numpy
    p = np.asarray(spread, np.float64)[:, 0]
    h = lambda q: -np.sum(q * np.log(np.clip(q, 1e-12, 1)), axis=-1)  # noqa: E731
    assert bald == pytest.approx(h(p.mean(0)) - h(p).mean(), abs=1e-4)


def test_margin_prefers_the_closest_top_two():
    probs = _probs([[2.0, 1.9, -3.0], [4.0, 0.0, 0.0]], 0.0)
    m = acquisition.margin_score(probs)
    assert float(m[0]) > float(m[1])
    p0 = np.exp([2.0, 1.9, -3.0]) / np.exp([2.0, 1.9, -3.0]).sum()
    assert float(m[0]) == pytest.approx(-(p0[0] - p0[1]), abs=1e-5)


@pytest.fixture(scope="module")
def trained_small():
    params = init_params(seed=5, hidden=8)
    x = np.asarray(jax.random.uniform(jax.random.key(7), (9, 2)), np.float32)
    y = np.asarray(problem.true_labels(jnp.asarray(x)))
    grid = np.asarray(problem.grid_points(12))
    return params, x, y, grid


@pytest.mark.heavy  # whole greedy batches, every strategy
@pytest.mark.parametrize("strategy", strategies.names())
def test_batch_never_picks_a_point_twice(trained_small, strategy):
    params, x, y, grid = trained_small
    idx, scores, preds = experiment.acquire(
        params,
        x,
        y,
        grid,
        strategy=strategy,
        batch=6,
        prior_prec=0.5,
        curvature="full",
        predictive_samples=16,
        key=jax.random.key(1),
    )
    assert len(idx) == 6 and len(set(idx)) == 6
    assert scores.shape == (len(grid),) and preds.shape == (len(grid),)


@pytest.mark.parametrize("strategy", ["max_std", "entropy", "sampled"])
def test_batch_of_one_is_the_single_point_rule(trained_small, strategy):
    params, x, y, grid = trained_small
    key = jax.random.key(3)
    idx, scores, preds = experiment.acquire(
        params, x, y, grid, strategy=strategy, batch=1, prior_prec=0.5, curvature="full", predictive_samples=16, key=key
    )
    single = experiment.scores_for(
        params,
        x,
        y,
        grid,
        experiment.predict(params, grid),
        strategy=strategy,
        prior_prec=0.5,
        curvature="full",
        predictive_samples=16,
    )
    np.testing.assert_array_equal(scores, single)
    spec = strategies.get(strategy)
    rule_key = key if spec.uses_key else None
    assert idx == [acquisition.pick(single, rule=spec.rule, key=rule_key, exclude=[])]


def test_batch_conditioning_is_adding_the_pick_to_the_ggn(trained_small):
    params, x, y, grid = trained_small
    preds = experiment.predict(params, grid)
    before = experiment.scores_for(
        params, x, y, grid, preds, strategy="max_std", prior_prec=0.5, curvature="full", predictive_samples=1
    )
    first = int(np.argmax(before))
    x_aug, y_aug = np.concatenate([x, grid[[first]]]), np.concatenate([y, preds[[first]]])
    after = experiment.scores_for(
        params, x_aug, y_aug, grid, preds, strategy="max_std", prior_prec=0.5, curvature="full", predictive_samples=1
    )
    # independent: laplax's dense posterior of the augmented set (its GGN ignores the labels)
    want = np.asarray(
        laplax_path.std_map(params, jnp.asarray(x_aug), jnp.asarray(y_aug), jnp.asarray(grid), prior_prec=0.5)
    )[np.arange(len(grid)), preds]
    assert np.max(np.abs(after - want)) <= 1e-4 * np.max(want)
    assert after[first] < before[first] - 1e-3  # the pick's own uncertainty drops
    assert np.all(after <= before + 1e-4)  # conditioning never adds uncertainty


def test_covariance_blocks_equal_laplax(small_problem):
    params, x, y, x_eval = small_problem
    post = _padded_posterior(params, x, cap=10)
    got = laplace.predictive_cov_blocks(post, params, jnp.asarray(x_eval), jnp.float32(0.5))
    want = laplax_path.cov_blocks(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(x_eval), prior_prec=0.5)
    assert got.shape == want.shape == (len(x_eval), experiment.n_classes_of(params), experiment.n_classes_of(params))
    assert float(jnp.max(jnp.abs(got - want))) <= 1e-4 * float(jnp.max(jnp.abs(want)))


@pytest.mark.heavy  # whole acquisitions, every strategy
@pytest.mark.parametrize("strategy", strategies.names())
def test_every_strategy_acquires_for_five_features_and_four_classes(strategy):
    params = init_params(seed=3, hidden=8, in_dim=5, n_classes=4)
    rng = np.random.default_rng(0)
    x, y = rng.random((9, 5)).astype(np.float32), rng.integers(0, 4, 9).astype(np.int32)
    pool = rng.random((40, 5)).astype(np.float32)
    idx, scores, preds = experiment.acquire(
        params, x, y, pool, strategy=strategy, batch=3, prior_prec=0.5, curvature="full", predictive_samples=16,
        key=jax.random.key(2), exclude=[0, 1],
    )  # fmt: skip
    assert len(set(idx)) == 3 and not {0, 1} & set(idx) and all(0 <= i < 40 for i in idx)
    assert scores.shape == (40,) and np.isfinite(scores).all() and set(np.unique(preds)) <= {0, 1, 2, 3}
    if strategies.get(strategy).score == "std":  # the predicted class's std, as laplax computes it
        want = laplax_path.std_map(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(pool), prior_prec=0.5)
        want = np.asarray(want)[np.arange(40), preds]
        assert np.max(np.abs(scores - want)) <= 1e-4 * np.max(want)


@pytest.mark.heavy  # eight rounds of the real stages
def test_labelled_points_are_never_picked_again():
    """Given the points labelled so far (what the flow passes with exclude_labelled:
    the honest protocol, and every pool), a round never picks one of them again; the
    tutorial's argmax without them may (it re-picks on its seed)."""
    from alcore import stages
    from alcore.config import ExperimentConfig

    cfg = ExperimentConfig(grid_size=12, initial_epochs=30, epochs_per_round=3, exclude_labelled=True)
    data = sources.draw(cfg)
    state, x, y, picked = stages.initial_training(cfg, data).state, data.x_initial, data.y_initial, []
    for r in range(1, 9):
        acquired = stages.acquire(cfg, r, data, state, x, y, 0.4, list(picked))
        assert not set(acquired.indices) & set(picked)
        labels = stages.labels_of(cfg, data, acquired)
        x, y = np.concatenate([x, acquired.points]), np.concatenate([y, labels])
        state = stages.retrain(cfg, state, x, y).state
        picked += acquired.indices
    assert len(set(picked)) == 8


def test_covariance_blocks_match_the_joint_covariance(small_problem):
    params, x, _, x_eval = small_problem
    post = _padded_posterior(params, x, cap=9)
    joint = laplace.predictive_cov(post, params, jnp.asarray(x_eval[:5]), jnp.float32(0.3))
    blocks = laplace.predictive_cov_blocks(post, params, jnp.asarray(x_eval[:5]), jnp.float32(0.3))
    np.testing.assert_allclose(blocks, jnp.einsum("icie->ice", joint), rtol=1e-4, atol=1e-5)


@pytest.mark.heavy  # the stages' programs, traced anew
def test_precompile_leaves_the_stages_nothing_big_to_compile():
    from alcore import stages
    from alcore.config import ExperimentConfig
    from tests.helpers import xla_compilations

    # shapes no other test uses, so nothing was compiled for them before
    cfg = ExperimentConfig(
        seed=4, n_initial=13, n_calibration=5, grid_size=17, rounds=2, initial_epochs=3, epochs_per_round=2
    )
    assert stages.precompile(cfg, sources.draw(cfg)) == 6
    crossing = cfg.model_copy(update={"n_initial": 30, "rounds": 5})  # 30-34 labels: two posterior paddings
    assert stages.precompile(crossing, sources.draw(crossing), passive=False, initial=False) == 2 + 2 + 1 + 1
    with xla_compilations() as compiled:
        # the stages themselves, as the flow runs them
        data = sources.draw(cfg)
        initial = stages.initial_training(cfg, data)
        stages.passive_baseline(cfg, data)
        acquired = stages.acquire(cfg, 1, data, initial.state, data.x_initial, data.y_initial, 0.4)
        labels = stages.labels_of(cfg, data, acquired)
        x = np.concatenate([data.x_initial, acquired.points])
        y = np.concatenate([data.y_initial, labels])
        stages.retrain(cfg, initial.state, x, y)
    big = {"jit(_train_scan)", "jit(fit_posterior)", "jit(predictive_var_of)", "jit(_predict)"}
    assert not big & set(compiled), compiled


@pytest.mark.heavy  # the rounds' programs, run on zeros, then the rounds
def test_warming_up_leaves_the_rounds_nothing_to_compile():
    """What a person's run does in the background (``flows.active_learning.warm_up``):
    every round's program, at every padding the rounds reach (here two of the
    training's: 31-32 and 33-34 labels), is ready before the round asks for it."""
    from alcore import stages
    from alcore.config import ExperimentConfig
    from tests.helpers import xla_compilations

    # a width no other test uses, so nothing was compiled for these shapes before
    cfg = ExperimentConfig(data="moons", pool_size=150, seed=5, n_initial=30, rounds=4, hidden_channels=7,
                           initial_epochs=5, acquisition="margin")  # fmt: skip
    data = sources.draw(cfg)
    state = stages.initial_training(cfg, data).state
    assert stages.precompile(cfg, data, passive=False, initial=False, warm=True) == 2 + 2 + 1 + 1
    x, y, picked = data.x_initial, data.y_initial, []
    with xla_compilations() as compiled:
        for r in range(1, cfg.rounds + 1):
            acquired = stages.acquire(cfg, r, data, state, x, y, 0.4, list(picked))
            x = np.concatenate([x, acquired.points])
            y = np.concatenate([y, stages.labels_of(cfg, data, acquired)])
            state = stages.retrain(cfg, state, x, y, 0.4).state
            stages._evaluate(state.params, data)
            picked += acquired.indices
    big = {"jit(_train_scan)", "jit(fit_posterior)", "jit(predictive_cov_blocks)", "jit(_predict)"}
    assert not big & set(compiled), compiled


def test_the_networks_depth_follows_its_features_unless_set():
    from alcore import stages as st
    from alcore.config import ExperimentConfig
    from alcore.model import hidden_layers_for

    assert (hidden_layers_for(2), hidden_layers_for(3), hidden_layers_for(64, 2)) == (3, 1, 2)
    digits = ExperimentConfig(data="digits", initial_epochs=2, calibration="ece")
    assert digits.hidden_layers is None
    data = sources.draw(digits)
    shallow = st.initial_training(digits, data).state
    assert sorted(shallow.params) == ["linear1", "linear2"] and shallow.params["linear1"]["kernel"].shape == (64, 32)
    deeper = digits.model_copy(update={"hidden_layers": 2})
    state = st.initial_training(deeper, data).state
    assert sorted(state.params) == ["linear1", "linear2", "linear3"]
    # each round's scratch retraining re-initialises the same network
    scratch = deeper.model_copy(update={"retrain_schedule": "scratch"})
    x, y = data.x_initial[:5], data.y_initial[:5]
    assert sorted(st.retrain(scratch, state, x, y, 1.0).state.params) == ["linear1", "linear2", "linear3"]
    tutorial = ExperimentConfig(initial_epochs=2)
    assert sorted(st.initial_training(tutorial, sources.draw(tutorial)).state.params) == [
        f"linear{i}" for i in (1, 2, 3, 4)
    ]
