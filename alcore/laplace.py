r"""The full-GGN Laplace predictive in its exact dual (Woodbury) form.

With n labelled points and C classes the GGN is :math:`G = A^\top A`, where the
rows of :math:`A` (n·(C-1) x P) are :math:`B_i^\top J_i`, :math:`J_i` the Jacobian of
the logits at :math:`x_i` and :math:`B_i B_i^\top = \operatorname{diag}(p_i) -
p_i p_i^\top` the softmax cross-entropy Hessian. With the eigendecomposition
:math:`A A^\top = U \operatorname{diag}(s) U^\top` (an n(C-1) x n(C-1) matrix), the
posterior covariance :math:`\Sigma = (G + \tau I)^{-1}` satisfies, for any inputs,

.. math::
    J_x \Sigma J_{x'}^\top = \tfrac{1}{\tau} \Theta(x, x')
        - \sum_k \frac{(J_x A^\top u_k) (J_{x'} A^\top u_k)^\top}{\tau (s_k + \tau)},

where :math:`\Theta(x, x') = J_x J_{x'}^\top` is the network's empirical NTK. For an
MLP, :math:`\Theta` is a sum over layers of (layer-input inner products + 1) times
(output-sensitivity inner products), so no Jacobian is ever materialised. One
decomposition serves every prior precision, which makes calibration cheap.

This is the same posterior as laplax's ``curv_type="full"`` (dense GGN, Cholesky):
the tests check the predictive stds against laplax on random small nets.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alcore.model import Params, forward, n_layers

# Eigen, which runs XLA's float64 contractions on the CPU, splits a contraction's summed
# dimension into blocks sized from the L1 cache (256 float64 terms at 32 KiB L1d,
# measured), so a longer sum is added up in another order on a CPU with more L1. Sums
# longer than this are cut here into fixed blocks, each short enough never to be split,
# and added in order: the same numbers on every such CPU (alcore/numerics.py).
SUM_BLOCK = 256


def contract(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """``jnp.einsum(spec, x, y)`` for two operands and one summed index, its sum
    taken in fixed blocks of :data:`SUM_BLOCK` terms (see above). Same result as the
    plain einsum where the summed dimension is at most :data:`SUM_BLOCK` long."""
    inputs, out = spec.split("->")
    left, right = inputs.split(",")
    (index,) = [c for c in left if c in right and c not in out]
    ax, ay = left.index(index), right.index(index)
    k = x.shape[ax]
    if k <= SUM_BLOCK:
        return jnp.einsum(spec, x, y)
    total = None
    for start in range(0, k, SUM_BLOCK):
        stop = min(start + SUM_BLOCK, k)
        part = jnp.einsum(
            spec, jax.lax.slice_in_dim(x, start, stop, axis=ax), jax.lax.slice_in_dim(y, start, stop, axis=ay)
        )
        total = part if total is None else total + part
    return total


class Features(NamedTuple):
    """Per-layer quantities whose inner products give the NTK.

    ``inputs[l]``: the input of layer l+1, shape (n, d_l).
    ``sens[l]``: d logits / d pre-activation of layer l+1, shape (n, C, d_{l+1}).
    """

    inputs: tuple
    sens: tuple


def features(params: Params, x: jax.Array, xp=jnp) -> Features:
    """Layer inputs and output sensitivities of the MLP at inputs ``x`` (n, 2).

    ``xp=numpy`` computes them in NumPy (params and ``x`` as NumPy arrays).
    """
    inputs, acts = [], []
    h = x
    last = n_layers(params)
    for i in range(1, last + 1):
        inputs.append(h)
        layer = params[f"linear{i}"]
        h = h @ layer["kernel"] + layer["bias"]
        if i < last:
            h = xp.tanh(h)
            acts.append(h)
    n_classes = params[f"linear{last}"]["bias"].shape[0]
    delta = xp.broadcast_to(xp.eye(n_classes, dtype=x.dtype), (x.shape[0], n_classes, n_classes))
    sens = [delta]
    for i in range(last, 1, -1):
        kernel = params[f"linear{i}"]["kernel"]
        delta = (delta @ kernel.T) * (1.0 - acts[i - 2] ** 2)[:, None, :]
        sens.append(delta)
    return Features(tuple(inputs), tuple(reversed(sens)))


def ntk(f1: Features, f2: Features) -> jax.Array:
    """Empirical NTK blocks, shape (n1, C, n2, C)."""
    out = 0.0
    for a1, d1, a2, d2 in zip(f1.inputs, f1.sens, f2.inputs, f2.sens, strict=True):
        gram = contract("id,jd->ij", a1, a2) + 1.0  # (n1, n2): kernel and bias
        out = out + gram[:, None, :, None] * contract("icd,jed->icje", d1, d2)
    return out


def ntk_diag(f: Features) -> jax.Array:
    """Diagonal of the NTK per point and class, shape (n, C)."""
    out = 0.0
    for a, d in zip(f.inputs, f.sens, strict=True):
        out = out + (jnp.sum(a * a, axis=-1) + 1.0)[:, None] * jnp.sum(d * d, axis=-1)
    return out


def hessian_factor(logits: jax.Array, xp=jnp) -> jax.Array:
    r"""B with :math:`B B^\top = \operatorname{diag}(p) - p p^\top`, shape (n, C, C-1).

    The softmax cross-entropy Hessian has rank C-1 (its null vector is 1), so C-1
    columns suffice: :math:`B = (\operatorname{diag}(\sqrt p) - p \sqrt p^\top) Q`
    with Q an orthonormal basis of the complement of :math:`\sqrt p` (the right null
    vector of the square factor), taken from a Householder reflection.
    ``xp=numpy`` computes it in NumPy.
    """
    p = jax.nn.softmax(logits, axis=-1) if xp is jnp else _softmax_np(logits)
    sq = xp.sqrt(p)
    c = p.shape[-1]
    eye = xp.eye(c, dtype=p.dtype)
    square = sq[:, :, None] * eye - p[:, :, None] * sq[:, None, :]
    w = sq - eye[-1]  # reflects sqrt(p) onto the last basis vector; |sqrt(p)| = 1
    w = w / xp.maximum(xp.linalg.norm(w, axis=-1, keepdims=True), 1e-12)
    householder = eye - 2.0 * w[:, :, None] * w[:, None, :]
    return square @ householder[:, :, : c - 1]


def _softmax_np(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Posterior(NamedTuple):
    """What the dual form keeps of the training set: enough for any input and tau.

    ``eigvals`` and ``eigvecs`` are float64: the Gram matrix spans many orders of
    magnitude, and its small-eigenvalue directions carry the largest weight in the
    variance, so float32 there costs about 1e-4 of the max std (measured against a
    float64 computation; laplax's own float32 result is within 1e-5 of it).
    """

    train_features: Features
    factor: jax.Array  # (n, C, C-1): B_i, zero for masked (padding) points
    factored_sens: tuple  # per layer (n, C-1, d): B_i^T applied to the sensitivities
    eigvals: jax.Array  # (r,) eigenvalues s_k of A A^T, >= 0, r = n (C-1); float64
    eigvecs: jax.Array  # (r, r) U; float64


def _x64(fn):
    """Run ``fn`` with 64-bit types enabled (thread-local), so the small dense parts
    can be float64 while everything else stays float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapper


@_x64
@jax.jit
def fit_posterior(params: Params, x_train: jax.Array, mask: jax.Array) -> Posterior:
    """Decompose the GGN of the (masked) training set once.

    Args:
        params: MAP parameters.
        x_train: Training inputs, shape (n, 2); may be padded.
        mask: 1 for real points, 0 for padding, shape (n,).
    """
    feats = features(params, x_train)
    b = hessian_factor(forward(params, x_train)) * mask[:, None, None].astype(x_train.dtype)
    factored = tuple(jnp.einsum("ica,icd->iad", b, d) for d in feats.sens)
    n, k = b.shape[0], b.shape[2]
    gram = 0.0
    for a, d in zip(feats.inputs, factored, strict=True):  # small (r x r): all float64
        a, d = a.astype(jnp.float64), d.astype(jnp.float64)
        gram = gram + (contract("id,jd->ij", a, a) + 1.0)[:, None, :, None] * contract("iad,jbd->iajb", d, d)
    gram = gram.reshape(n * k, n * k)
    evals, evecs = jnp.linalg.eigh(0.5 * (gram + gram.T))
    return Posterior(feats, b, factored, jnp.maximum(evals, 0.0), evecs)


def _select(feats: Features, classes: jax.Array | None = None) -> Features:
    """Keep only the sensitivity of one class per input (all classes when None)."""
    if classes is None:
        return feats
    pick = lambda d: jnp.take_along_axis(d, classes[:, None, None], axis=1)  # noqa: E731
    return Features(feats.inputs, tuple(pick(d) for d in feats.sens))


def _float64(feats: Features) -> Features:
    """The features in float64. The predictive variance is a difference of two nearly
    equal terms where the data pin the function down, so float32 inner products there
    cost about 1e-4 of the max std; in float64 the error is about 1e-6 (measured
    against an all-float64 computation), at about 1.5x the time."""
    as64 = lambda arrays: tuple(a.astype(jnp.float64) for a in arrays)  # noqa: E731
    return Features(as64(feats.inputs), as64(feats.sens))


def _projections(post: Posterior, feats: Features) -> jax.Array:
    """J_x A^T U for inputs with (float64) ``feats``: shape (m, C', r), float64."""
    jat = 0.0
    train = _float64(Features(post.train_features.inputs, post.factored_sens))
    for a_x, d_x, a_t, d_t in zip(feats.inputs, feats.sens, train.inputs, train.sens, strict=True):
        g = contract("md,nd->mn", a_x, a_t) + 1.0  # (m, n)
        jat = jat + g[:, None, :, None] * contract("mcd,iad->mcia", d_x, d_t)
    m, c, n, k = jat.shape
    return contract("mcr,rk->mck", jat.reshape(m, c, n * k), post.eigvecs)


CHUNK = 64  # inputs per pass: the (chunk x C x r) float64 intermediates stay in a core's L2, beside another's


def _in_chunks(fn, x: jax.Array, *per_input) -> jax.Array:
    """``fn(x, *per_input)`` evaluated ``CHUNK`` inputs at a time (``lax.map``).

    Every output row depends only on its own input, so this is the same computation
    (bit for bit: the sums run over r, not over the inputs; measured on the tutorial's
    grid at 20-150 labels with chunks of 64 to 1,000). It is 2-3x faster on the grid
    than one pass because each pass's intermediates (a few chunk x C x r float64 arrays
    per layer) stay in cache instead of streaming 20 MB arrays through memory several
    times per layer; 125 inputs (about 0.6 MB at r = 192) keep them in a core's L2:
    a margin round's covariance blocks at 70 labels 120 -> 87 ms against 1,000 inputs.
    64 costs the same alone and less with every core busy (the default sweep's math on
    2 workers 439 -> 384 s, on 1 worker 339 s either way: benchmarks/sweep_speed).
    """
    m = x.shape[0]
    if m <= CHUNK:
        return fn(x, *per_input)
    n_chunks = -(-m // CHUNK)
    pad = lambda a: jnp.pad(a, [(0, n_chunks * CHUNK - m)] + [(0, 0)] * (a.ndim - 1))  # noqa: E731
    split = lambda a: pad(a).reshape(n_chunks, CHUNK, *a.shape[1:])  # noqa: E731
    out = jax.lax.map(lambda args: fn(*args), (split(x), *map(split, per_input)))
    return out.reshape(n_chunks * CHUNK, *out.shape[2:])[:m]


def _var(post, params, x, prior_prec, classes):
    tau = jnp.asarray(prior_prec, jnp.float64)
    h = 1.0 / (tau * (post.eigvals + tau))

    def var(x, *selected):
        feats = _float64(_select(features(params, x), *selected))
        v = ntk_diag(feats) / tau - contract("mck,k->mc", _projections(post, feats) ** 2, h)
        return jnp.maximum(v, 0.0).astype(x.dtype)

    return _in_chunks(var, x, *(() if classes is None else (classes,)))


@_x64
@jax.jit
def predictive_var(post: Posterior, params: Params, x: jax.Array, prior_prec: jax.Array) -> jax.Array:
    """Linearised predictive variance of every logit at inputs ``x``: (m, C)."""
    return _var(post, params, x, prior_prec, None)


@_x64
@jax.jit
def predictive_var_of(
    post: Posterior, params: Params, x: jax.Array, classes: jax.Array, prior_prec: jax.Array
) -> jax.Array:
    """Linearised predictive variance of logit ``classes[i]`` at input ``x[i]``: (m,).

    What acquisition needs (the std of the predicted class), at 1/C of the cost of
    :func:`predictive_var`.
    """
    return _var(post, params, x, prior_prec, classes)[:, 0]


def predictive_std(post: Posterior, params: Params, x: jax.Array, prior_prec) -> jax.Array:
    """Linearised predictive std of every logit at inputs ``x``: (m, C)."""
    return jnp.sqrt(predictive_var(post, params, x, jnp.asarray(prior_prec, jnp.float32)))


@_x64
@jax.jit
def predictive_cov(post: Posterior, params: Params, x: jax.Array, prior_prec: jax.Array) -> jax.Array:
    """Full linearised predictive covariance over all (input, logit) pairs.

    Returns shape (m, C, m, C): the joint Gaussian over the logits at ``x``.
    """
    feats = _float64(features(params, x))
    proj = _projections(post, feats)
    tau = jnp.asarray(prior_prec, jnp.float64)
    h = 1.0 / (tau * (post.eigvals + tau))
    cov = ntk(feats, feats) / tau - contract("mck,nek->mcne", proj * h, proj)
    return cov.astype(x.dtype)


def ntk_diag_blocks(f: Features) -> jax.Array:
    """The NTK's C x C block at each point, shape (n, C, C)."""
    out = 0.0
    for a, d in zip(f.inputs, f.sens, strict=True):
        out = out + (jnp.sum(a * a, axis=-1) + 1.0)[:, None, None] * contract("ncd,ned->nce", d, d)
    return out


@_x64
@jax.jit
def predictive_cov_blocks(post: Posterior, params: Params, x: jax.Array, prior_prec: jax.Array) -> jax.Array:
    """Linearised predictive covariance of the logits at each input separately: (m, C, C).

    What entropy, BALD and margin acquisition need; the cross-input blocks of
    :func:`predictive_cov` are never formed.
    """
    tau = jnp.asarray(prior_prec, jnp.float64)

    def blocks(x):
        feats = _float64(features(params, x))
        proj = _projections(post, feats)
        h = 1.0 / (tau * (post.eigvals + tau))
        cov = ntk_diag_blocks(feats) / tau - contract("mck,mek->mce", proj * h, proj)
        return cov.astype(x.dtype)

    return _in_chunks(blocks, x)
