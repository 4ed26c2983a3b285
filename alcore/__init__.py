"""Core math of Bayesian active learning on the 2D three-class problem.

JAX / flax / optax / laplax, and NumPy where compiling would cost more than running.
This package never imports Prefect and does no file I/O (JAX keeps its compiled
programs on disk, alcore/compile_cache.py): the Prefect tasks in
``tasks/`` add persistence, logging and artifacts.
"""

from alcore import compile_cache, numerics

# Before anything imports NumPy or JAX: the numeric settings that make every x86-64
# machine with AVX2 compute the same numbers (alcore/numerics.py), and the compiled
# programs kept on disk for the next process (alcore/compile_cache.py).
numerics.configure()
compile_cache.configure()

__version__ = "0.1.0"

# Bump when a change to the math changes any number a round produces: it is part of
# every persisted result's cache key, so old cached rounds are not reused.
# 2: the numeric settings of alcore/numerics.py; 3: each round records its prediction change
# (the stop rule); the cold start, the retraining schedules, the prior in the loss,
# stochastic batches (the data and round records); 4: an image's pixels share one scale,
# the network's depth a field (one hidden layer for pools of more than two features)
MATH_VERSION = "4"
