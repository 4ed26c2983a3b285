"""Core math of Bayesian active learning on the 2D three-class problem.

JAX / flax / optax / laplax, and NumPy where compiling would cost more than running.
This package never imports Prefect and does no file I/O: the Prefect tasks in
``tasks/`` add persistence, logging and artifacts.
"""

__version__ = "0.1.0"

# Bump when a change to the math changes any number a round produces: it is part of
# every persisted result's cache key, so old cached rounds are not reused.
MATH_VERSION = "1"
