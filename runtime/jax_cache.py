"""JAX's persistent compilation cache for the project's processes."""

import os
from pathlib import Path

JAX_CACHE_ENV = "BAL_JAX_CACHE_DIR"


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (idempotent); returns its folder.

    Every run compiles the same programs (training scans, the grid prediction, the
    Laplace fit and map, the model's initialisation): with the cache, runs after the
    first (a schedule, a sweep, a resume) load them from disk instead. ``BAL_JAX_CACHE_DIR`` chooses the folder (default
    ``~/.cache/bal-pipeline/jax``); ``off`` disables it. Numbers do not change: the
    cache holds the compiled programs, not results.
    """
    import jax

    folder = os.environ.get(JAX_CACHE_ENV, str(Path.home() / ".cache" / "bal-pipeline" / "jax"))
    if folder.lower() == "off":
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
