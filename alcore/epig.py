r"""EPIG, the expected predictive information gain, under the linearised Laplace predictive.

EPIG (Bickford Smith, Kirsch, Farquhar, Gal, Foster, Rainforth, *Prediction-oriented
Bayesian active learning*, AISTATS 2023) scores a candidate input :math:`x` by how much
its label :math:`y` would tell about the labels :math:`y_*` at target inputs
:math:`x_*` drawn from the distribution we want to predict well on:

.. math::
    \operatorname{EPIG}(x) = \mathbb{E}_{x_* \sim p_*}\big[ I(y; y_* \mid x, x_*) \big].

Here the predictive is the linearised Laplace one: the logits at all inputs are
jointly Gaussian, :math:`f(x) = f_{\hat\theta}(x) + J_x \theta` with
:math:`\theta \sim \mathcal{N}(0, \Sigma)`, :math:`\Sigma = (G + \tau I)^{-1}`.

**Estimator.** With S joint logit samples :math:`f^s`, :math:`p_s(y \mid x) =
\operatorname{softmax} f^s(x)`, and for each (candidate, target) pair
:math:`p(y, y_*) = \frac1S \sum_s p_s(y \mid x) p_s(y_* \mid x_*)` with its marginals
:math:`p(y)`, :math:`p(y_*)` (the sample means); :math:`I = \sum p(y, y_*) \log
\frac{p(y, y_*)}{p(y) p(y_*)}` (a KL divergence, so never negative), averaged over the
targets. This is the mutual information of the S-component mixture exactly, hence
the estimator is non-negative and obeys the data-processing inequality
:math:`I(y; y') \le` BALD for a candidate equal to the target.

**Sampling scheme: exact joint draws in weight space, no Cholesky.** Rather than a
Gaussian over the t·C target logits and a conditional per candidate, the posterior
itself is sampled: with the dual form's :math:`A` (rows :math:`B_i^\top J_i`),
:math:`A A^\top = U \operatorname{diag}(s) U^\top`, the symmetric square root of
:math:`\Sigma` is

.. math::
    \Sigma^{1/2} = \tau^{-1/2} \big(I - A^\top U \operatorname{diag}(g) U^\top A\big),
    \qquad g_k = \frac{1}{(s_k + \tau)\,(1 + \sqrt{\tau / (s_k + \tau)})}

(check: :math:`(I - A^\top U \operatorname{diag}(g) U^\top A)^2 = I - A^\top U
\operatorname{diag}(2g - g^2 s) U^\top A` and :math:`2g - g^2 s = 1/(s + \tau)`, which
is Woodbury's :math:`\tau\Sigma`; :math:`g` stays finite at :math:`s_k = 0`, the
padding). So :math:`\theta_s = \Sigma^{1/2} z_s` for standard normal :math:`z_s \in
\mathbb{R}^P` costs one product with :math:`A` (a Jacobian-vector product at the n
training points), an r x r rotation and one product with :math:`A^\top` (a
vector-Jacobian product): O(S·n·P). Then :math:`J_x \theta_s` for every candidate and
target is a sum over layers of (layer input x kernel draw + bias draw) contracted with
the output sensitivities (:func:`alcore.laplace.features`): no Jacobian is formed.
Every input, candidate or target, is evaluated with the *same* S weight draws, so the
logits at any set of inputs are exact joint samples of the linearised predictive: no
jitter, no per-candidate conditioning, and the cost does not grow with the number of
targets except in the final mutual-information step.

**Precision.** The draws are float64 (as the dual form: there the result is a
difference of two nearly equal terms where the data pin the function down). The
per-input products :math:`J_x \theta_s`, the softmax and the mutual information run
in the candidates' dtype: float32 for the grid (as ``experiment`` passes it), which
changes EPIG on the 100 x 100 grid by at most 4e-6 relative to all-float64 (measured
at n = 20 and 70, S = 64 and 256) and is 1.5-3.5x faster; float64 inputs give
float64 throughout (the tests compare that against a dense brute force to 1e-8).

**Cost**, for m candidates, t targets, S samples, C classes, hidden width d (= 32):
the draws O(S·n·P); the candidate logits O(m·S·d²) per hidden layer; the joint label
tables O(m·t·C²·S) (a centred (m C) x S by S x (t C) product) and m·t·C² logarithms.
Candidates go :data:`CHUNK` at a time, so the (chunk, C, t, C) tables stay a few MB
and memory does not grow with m. Measured on the 2-core CPU machine, shared (load
average about 5), 100 x 100 grid, t = 256, the tutorial's trained 2-32-32-32-3 MLP:
S = 64 takes 0.23 s (n = 20) and 0.28 s (n = 70) per call (0.19 s on a quieter
machine), S = 256 takes 0.66-0.70 s; compiling both programs (:func:`precompile`)
takes 1-2 s once. Shapes (m, t, S, the padded training set) are static: new
parameters, posterior, targets, prior precision or key never recompile.

**Monte-Carlo noise: use S >= 256.** The plug-in estimate has an O(1/S) upward
bias of the order of the differences between candidates, and the top of the EPIG
map is flat. On the grid above (n = 20 and 70), maps from different keys have
Spearman rank correlation 0.25-0.44 on average at S = 64 (the flow's
``predictive_samples`` default), 0.74-0.83 at S = 128 and 0.92-0.94 at S = 256. At
n = 20, against an S = 8192 reference, the argmax of an S = 64 map (four keys) had
0.2-30 % less EPIG than the best point, at S = 256 0.3-7 % (three of four under
1 %). :data:`N_SAMPLES` is that recommendation.

**Batches.** :func:`epig_scores` scores candidates under a given dual-form posterior;
the greedy batch loop of :func:`alcore.experiment.acquire` refits the posterior with
the earlier picks added (their predicted classes stand in for labels: the
cross-entropy GGN needs none) and calls it again, so each pick is scored conditioned
on the ones before it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from alcore.laplace import Features, Posterior, _x64, contract, features
from alcore.model import Params, forward

N_TARGETS = 256  # default size of the target sample drawn from the grid
TARGET_SEED = 0  # its fixed seed
N_SAMPLES = 256  # recommended number of joint samples S (module docstring: Monte-Carlo noise)
CHUNK = 250  # candidates per pass: keeps the (chunk, C, t, C) joint tables in cache


def target_indices(n_points: int, size: int = N_TARGETS, *, seed: int = TARGET_SEED) -> np.ndarray:
    """Indices of a fixed uniform sample (without replacement, sorted) of ``size`` of
    ``n_points`` inputs; all of them when ``size >= n_points``. Deterministic in
    ``seed`` (NumPy's PCG64), so every round and every re-run uses the same targets."""
    if size >= n_points:
        return np.arange(n_points)
    return np.sort(np.random.default_rng(seed).choice(n_points, size=size, replace=False))


def target_sample(grid: np.ndarray, size: int = N_TARGETS, *, seed: int = TARGET_SEED) -> np.ndarray:
    """The target inputs :math:`x_* \\sim p_*`: a fixed sample of ``size`` grid points
    (:func:`target_indices`), or the whole grid when it is not larger than ``size``."""
    grid = np.asarray(grid)
    return grid[target_indices(len(grid), size, seed=seed)]


@_x64
@functools.partial(jax.jit, static_argnums=2)
def weight_draws(params: Params, key: jax.Array, num_samples: int) -> Params:
    """Standard normal weight draws shaped like ``params`` with a trailing sample axis:
    each leaf (*shape, S), float64.

    One ``normal(key, (P, S))`` draw, cut into the leaves in ``jax.tree`` order: row p
    is parameter p of ``ravel_pytree``'s flattening. (One sampler: a ``jax.random``
    call per leaf would compile one sampler per shape, about 3 s.)
    """
    leaves, treedef = jax.tree.flatten(params)
    flat = jax.random.normal(key, (sum(leaf.size for leaf in leaves), num_samples), jnp.float64)
    draws, start = [], 0
    for leaf in leaves:
        draws.append(flat[start : start + leaf.size].reshape(*leaf.shape, num_samples))
        start += leaf.size
    return jax.tree.unflatten(treedef, draws)


def _jac_times(feats: Features, draws: Params) -> jax.Array:
    """:math:`J_x \\theta_s` for every input and draw: (m, C', S).

    For layer l the logits' derivative along a weight direction is the output
    sensitivity applied to (layer input x kernel direction + bias direction).
    """
    out = 0.0
    for i, (a, d) in enumerate(zip(feats.inputs, feats.sens, strict=True), start=1):
        layer = draws[f"linear{i}"]
        pre = contract("mp,pos->mos", a, layer["kernel"]) + layer["bias"][None]  # (m, d_out, S)
        out = out + contract("mco,mos->mcs", d, pre)
    return out


def _jac_transpose_times(feats: Features, v: jax.Array) -> Params:
    """:math:`\\sum_i J_i^\\top v_i` for (n, C', S) ``v``: a weight-shaped tree with a
    trailing sample axis."""
    out = {}
    for i, (a, d) in enumerate(zip(feats.inputs, feats.sens, strict=True), start=1):
        e = contract("nco,ncs->nos", d, v)  # (n, d_out, S)
        out[f"linear{i}"] = {"kernel": contract("np,nos->pos", a, e), "bias": jnp.sum(e, axis=0)}
    return out


def _train_factor_features(post: Posterior) -> Features:
    """Training inputs and :math:`B_i^\\top` x sensitivities, in float64: the rows of A."""
    return Features(
        tuple(a.astype(jnp.float64) for a in post.train_features.inputs),
        tuple(d.astype(jnp.float64) for d in post.factored_sens),
    )


@_x64
@jax.jit
def posterior_draws(post: Posterior, prior_prec, z: Params) -> Params:
    r"""Exact posterior draws :math:`\theta_s = \Sigma^{1/2} z_s`, weight-shaped (*shape, S).

    ``z``: standard normal draws (:func:`weight_draws`). :math:`\Sigma^{1/2}` is the
    symmetric square root of :math:`(G + \tau I)^{-1}` in the dual form (module
    docstring), applied as :math:`\tau^{-1/2}(z - A^\top U \operatorname{diag}(g)
    U^\top A z)`.
    """
    tau = jnp.asarray(prior_prec, jnp.float64)
    rows = _train_factor_features(post)
    az = _jac_times(rows, z)  # (n, C-1, S): A z
    n, k, s = az.shape
    g = 1.0 / ((post.eigvals + tau) * (1.0 + jnp.sqrt(tau / (post.eigvals + tau))))
    v = contract("rk,ks->rs", post.eigvecs, g[:, None] * contract("rk,rs->ks", post.eigvecs, az.reshape(n * k, s)))
    correction = _jac_transpose_times(rows, v.reshape(n, k, s))
    return jax.tree.map(lambda zz, cc: (zz - cc) / jnp.sqrt(tau), z, correction)


@_x64
@jax.jit
def logit_samples(params: Params, draws: Params, x: jax.Array) -> jax.Array:
    """Linearised logits :math:`f_{\\hat\\theta}(x) + J_x \\theta_s` per input and draw:
    (m, C, S), in ``x``'s dtype.

    The draws (:func:`posterior_draws`, float64) already hold the cancellation-prone
    part; this product runs in the inputs' precision: float32 for float32 inputs
    (EPIG on the grid then differs from all-float64 by at most 7e-5 relative, at 2.3x
    the speed), float64 for float64 inputs.
    """
    dtype = jnp.asarray(x).dtype
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), tree)  # noqa: E731
    p = cast(params)
    return forward(p, x)[:, :, None] + _jac_times(features(p, x), cast(draws))


def mutual_information(probs_x: jax.Array, probs_t: jax.Array) -> jax.Array:
    """Plug-in :math:`I(y; y_*)` for every (candidate, target) pair: (m, t).

    ``probs_x`` (m, C, S) and ``probs_t`` (t, C, S) are class probabilities under the
    same S joint draws. The joint table :math:`p(y, y_*) = \\frac1S \\sum_s p_s(y)
    p_s(y_*)` has the sample means as marginals, so the sum is a KL divergence (>= 0).
    It is computed as :math:`p(y, y_*) = p(y) p(y_*) + c` with the cross-covariance
    :math:`c` of the *centred* samples and :math:`\\log(1 + c / (p(y) p(y_*)))`, so
    nothing cancels where the labels are nearly independent: the result is accurate
    relative to itself (float32 included), and exactly 0 when either side does not
    vary over the samples.
    """
    s = probs_x.shape[-1]
    px, pt = jnp.mean(probs_x, axis=-1), jnp.mean(probs_t, axis=-1)  # (m, C), (t, E)
    cov = contract("mcs,tes->mcte", probs_x - px[..., None], probs_t - pt[..., None]) / s
    indep = px[:, :, None, None] * pt[None, None, :, :]
    tiny, eps = jnp.finfo(indep.dtype).tiny, jnp.finfo(indep.dtype).eps
    ratio = jnp.maximum(cov / jnp.maximum(indep, tiny), eps - 1.0)  # joint / indep - 1 > -1
    return jnp.sum((indep + cov) * jnp.log1p(ratio), axis=(1, 3))


def epig_from_probs(probs_x: jax.Array, probs_t: jax.Array) -> jax.Array:
    """EPIG of every candidate: :func:`mutual_information` averaged over the targets, (m,)."""
    return jnp.mean(mutual_information(probs_x, probs_t), axis=1)


def _chunked(fn, chunk: int, x: jax.Array) -> jax.Array:
    """``fn(x)`` row-block by row-block (``lax.map`` over chunks of ``chunk`` rows)."""
    m = x.shape[0]
    if m <= chunk:
        return fn(x)
    n_chunks = -(-m // chunk)
    padded = jnp.pad(x, [(0, n_chunks * chunk - m)] + [(0, 0)] * (x.ndim - 1))
    out = jax.lax.map(fn, padded.reshape(n_chunks, chunk, *x.shape[1:]))
    return out.reshape(n_chunks * chunk, *out.shape[2:])[:m]


def epig_scores(
    post: Posterior,
    params: Params,
    x: jax.Array,
    x_targets: jax.Array,
    prior_prec: jax.Array,
    key: jax.Array,
    num_samples_like: jax.Array,
) -> jax.Array:
    """EPIG of every candidate ``x`` (m, 2) for the targets ``x_targets`` (t, 2): (m,).

    Args:
        post: The dual-form posterior of the labelled set (``experiment.posterior_of``;
            for a greedy batch, of the labelled set plus the earlier picks).
        params: MAP parameters.
        x: Candidate inputs.
        x_targets: Target inputs (e.g. :func:`target_sample` of the grid).
        prior_prec: Prior precision :math:`\\tau`.
        key: PRNG key of the weight draws (fixed: the same draws every call).
        num_samples_like: Any array of length S, the number of joint samples (static
            shape, traced values), as in ``acquisition.mc_probabilities``.

    Returns:
        EPIG in nats, in ``x``'s dtype.

    Two compiled programs, both keyed on shapes only: the weight draws, and everything
    after them. (Compiled as one program, XLA fuses the random-number generation into
    each consumer of the draws: about 0.6 s more compilation for nothing.)
    """
    z = weight_draws(params, key, num_samples_like.shape[0])
    return _epig_from_draws(post, params, x, x_targets, prior_prec, z)


@_x64
@jax.jit
def _epig_from_draws(post, params, x, x_targets, prior_prec, z):
    draws = posterior_draws(post, prior_prec, z)
    probs_t = jax.nn.softmax(logit_samples(params, draws, x_targets.astype(x.dtype)), axis=1)  # (t, C, S)

    def scores(x_chunk):
        probs_x = jax.nn.softmax(logit_samples(params, draws, x_chunk), axis=1)
        return epig_from_probs(probs_x, probs_t)

    return _chunked(scores, CHUNK, x)


def precompile(post, params, x, x_targets, num_samples: int) -> None:
    """Compile :func:`epig_scores`' programs for these shapes without running them.

    Arguments as for :func:`epig_scores` (``num_samples`` = S, the prior precision is
    taken to be a float32 scalar, as ``experiment.scores_for`` passes it); any of them
    may be ``jax.ShapeDtypeStruct`` trees (e.g. ``jax.eval_shape`` of
    ``fit_posterior``). JAX keeps the compiled programs, so the first real call skips
    compilation.
    """
    with jax.enable_x64(True):
        key = jax.random.key(0)
        weight_draws.__wrapped__.lower(params, key, num_samples).compile()
        z = jax.eval_shape(lambda p, k: weight_draws.__wrapped__(p, k, num_samples), params, key)
        tau = jax.ShapeDtypeStruct((), jnp.float32)
        _epig_from_draws.__wrapped__.lower(post, params, x, x_targets, tau, z).compile()
