"""XLA's compiled programs kept on disk, so that a new process loads them instead of
compiling them again.

Every process of this project compiles the same few dozen JAX programs (training,
the posterior, the scores, at a handful of paddings): 5.0-5.5 s of compilation for
the rounds left at round 49 of digits, against 1.1-1.2 s to load them from JAX's
persistent compilation cache (measured). That is what a person waits for when a suspended run
comes back in a new process, and what every sweep worker, test and command pays.

A loaded program is the very machine code a compilation would produce: JAX keys an
entry by the program, the compile options, the jax/jaxlib versions and ``XLA_FLAGS``
(the numeric settings of :mod:`alcore.numerics` included). The host's CPU is not in
that key, and code generated for one CPU can crash or compute differently on
another, so the directory is per CPU: ``<root>/cpu-<fingerprint>``, the fingerprint
taken from ``/proc/cpuinfo``'s model name and flags.

``BAL_JAX_CACHE_DIR``: the cache's root instead of ``$XDG_CACHE_HOME/bal-pipeline/jax``
(``~/.cache/bal-pipeline/jax``), or ``off``. A user's own ``JAX_COMPILATION_CACHE_DIR``
wins. The directory can be deleted at any time; it holds no result.
"""

import hashlib
import os
import platform as _platform
import sys
from pathlib import Path

SWITCH = "BAL_JAX_CACHE_DIR"
OWNED = "BAL_JAX_CACHE_IN_FORCE"  # what this project put into JAX_COMPILATION_CACHE_DIR (not the user)
# JAX reads these at import; jax.config.update sets them when JAX came first.
OPTIONS = {
    "jax_persistent_cache_min_compile_time_secs": 0.0,  # the default (1 s) would skip every program here
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


def cpu_fingerprint() -> str:
    """A short hash of what decides the code XLA generates for this CPU."""
    ident = [_platform.machine()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    ident.append(line.split(":", 1)[1].strip())
                if len(ident) == 3:
                    break
    except OSError:
        ident.append(_platform.processor())
    return hashlib.sha256("\n".join(ident).encode()).hexdigest()[:12]


def user_cache(environ=None) -> Path:
    """The project's folder in the user's cache: ``$XDG_CACHE_HOME/bal-pipeline``
    (``~/.cache/bal-pipeline``). Compiled programs and the code version live under it."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bal-pipeline"


def directory(environ=None) -> Path | None:
    """Where the project keeps compiled programs on this CPU (None: off)."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(SWITCH, "")
    if chosen.lower() == "off":
        return None
    root = Path(chosen) if chosen else user_cache(environ) / "jax"
    return root / f"cpu-{cpu_fingerprint()}"


def configure(environ=None) -> Path | None:
    """Turn the cache on for this process and the processes it starts (through JAX's
    own variables); returns the directory in force (None: off). Idempotent."""
    environ = os.environ if environ is None else environ
    inherited = environ.get("JAX_COMPILATION_CACHE_DIR")
    if inherited and inherited != environ.get(OWNED):  # the user's own
        return Path(inherited)
    where = directory(environ)
    options = {**OPTIONS, "jax_compilation_cache_dir": None if where is None else str(where)}
    if where is None:  # off: nothing of a parent's setting is left
        environ.pop("JAX_COMPILATION_CACHE_DIR", None)
        environ.pop(OWNED, None)
    else:
        environ["JAX_COMPILATION_CACHE_DIR"] = environ[OWNED] = str(where)
        for name, value in OPTIONS.items():
            environ.setdefault(name.upper(), str(value))
    if environ is os.environ and "jax" in sys.modules:  # too late for the variables
        import jax

        for name, value in options.items():
            jax.config.update(name, value)
    return where
