"""Which functions XLA compiles inside a block, for benchmarks and tests."""

import contextlib
import logging
from collections.abc import Iterator

import jax


class _Listener(logging.Handler):
    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Finished XLA compilation of" in message:
            self.names.append(message.split(" of ", 1)[1].split(" in ")[0])


@contextlib.contextmanager
def xla_compilations() -> Iterator[list[str]]:
    """Yield a list that fills with the names (``jit(f)``) of the functions XLA compiles
    until the block ends, from JAX's ``jax_log_compiles`` records."""
    names: list[str] = []
    listener = _Listener(names)
    logger = logging.getLogger("jax")
    logger.addHandler(listener)
    jax.config.update("jax_log_compiles", True)
    try:
        yield names
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(listener)
