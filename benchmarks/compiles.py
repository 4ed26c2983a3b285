"""Which functions XLA compiles inside a block: the tests' helper, for the benchmarks."""

from tests.helpers import xla_compilations  # noqa: F401
