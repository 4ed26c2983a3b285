"""JAX's default PRNG (threefry2x32, partitionable) in NumPy, for laplax's weight draws.

Calibration needs laplax's standard normal weight draws, which are fixed by
``jax.random.key(0)``: a few hundred thousand numbers. Computing them with JAX costs
an XLA compilation of the sampler (about 0.5-0.8 s on a 2-core machine, more than
the draws are worth); these few lines of integer arithmetic cost milliseconds.

Keys and random bits are bit-identical to ``jax.random.split`` / ``jax.random.bits``
under ``jax_threefry_partitionable`` (JAX's default), uniforms bit-identical to
``jax.random.uniform``; normals apply the exact inverse error function in float64
where XLA uses a float32 polynomial, so they agree with ``jax.random.normal`` to
about 2e-5 (the tests check all four).
"""

import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def key(seed: int) -> np.ndarray:
    """The raw key of ``jax.random.key(seed)`` for a 32-bit seed: ``[0, seed]``."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must fit in 32 bits, got {seed}")
    return np.array([0, seed], np.uint32)


def _rotate_left(x: np.ndarray, d: int) -> np.ndarray:
    return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(key: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Threefry-2x32 block cipher (20 rounds) of counter pairs under ``key``."""
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    with np.errstate(over="ignore"):
        x0, x1 = x0 + ks[0], x1 + ks[1]
        for i in range(5):
            for r in _ROTATIONS[i % 2]:
                x0 = x0 + x1
                x1 = _rotate_left(x1, r) ^ x0
            x0 = x0 + ks[(i + 1) % 3]
            x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _counters(n: int) -> tuple[np.ndarray, np.ndarray]:
    count = np.arange(n, dtype=np.uint64)
    return (count >> np.uint64(32)).astype(np.uint32), (count & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def split(key: np.ndarray, num: int) -> np.ndarray:
    """``jax.random.split(key, num)`` as raw keys, shape (num, 2)."""
    return np.stack(threefry2x32(key, *_counters(num)), axis=1)


def bits(key: np.ndarray, size: int) -> np.ndarray:
    """``jax.random.bits(key, (size,))``: uint32."""
    b0, b1 = threefry2x32(key, *_counters(size))
    return b0 ^ b1


def uniform(key: np.ndarray, size: int, minval: float, maxval: float) -> np.ndarray:
    """``jax.random.uniform(key, (size,), float32, minval, maxval)``."""
    mantissa = (bits(key, size) >> np.uint32(9)) | np.uint32(0x3F800000)
    unit = mantissa.view(np.float32) - np.float32(1.0)
    lo, hi = np.float32(minval), np.float32(maxval)
    return np.maximum(lo, unit * (hi - lo) + lo)


def normal(key: np.ndarray, size: int) -> np.ndarray:
    """``jax.random.normal(key, (size,))``, float64 (see the module docstring)."""
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    from scipy.special import erfinv  # here: SciPy is 0.15 s of a new process's start

    return np.sqrt(2.0) * erfinv(uniform(key, size, lo, 1.0).astype(np.float64))
