"""The same numbers on every machine: numeric settings fixed before JAX and NumPy start.

Four libraries compute this project's numbers on the CPU, and each picks its kernels
by the host's instruction set or splits sums by its thread count, so the last bits of
a result follow the machine, and long trainings amplify them (an AMD AVX2 machine got
a passive baseline of 91.04 % where another machine got 91.14 %):

- XLA's LLVM-compiled ops follow the host's ISA: capped at AVX2
  (``--xla_cpu_max_isa=AVX2``; FMA stays on, as on every AVX2 machine).
- YNNPACK (forward matmuls, reductions) detects the CPU at run time and ignores that
  cap: ``--xla_cpu_enable_platform_dependent_math=false`` selects its consistent
  kernels, and ``--xla_cpu_experimental_ynn_fusion_type=-reduce`` keeps reductions,
  whose split follows the thread count, out of it.
- Eigen/oneDNN (every weight gradient) picks kernels by CPUID and splits work over
  the intra-op thread pool: ``TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false`` uses
  Eigen's plain kernels compiled into jaxlib, and ``PJRT_NPROC=1`` fixes the pool.
- NumPy's and SciPy's OpenBLAS (calibration, marginal likelihood, JAX's LAPACK calls)
  dispatch kernels by CPU (``SkylakeX`` on an AVX-512 machine, ``Haswell`` on AVX2)
  and the ECE curve changed with its thread count too (measured):
  ``OPENBLAS_CORETYPE=Haswell`` and ``OPENBLAS_NUM_THREADS=1``.

With these, the default experiment and every stage gave identical hashes on 1 and 2
cores and under oneDNN capped at AVX2 and SSE4.1 (simulated older machines); they are
set by :func:`configure`, which ``alcore/__init__.py`` calls, so every process that
imports the project before NumPy and JAX (the CLI, flows, deployment runs, the sweep's
local workers, tests, benchmarks) computes under them. What is left machine-dependent:
Eigen blocks a contraction's summed dimension by the L1 cache size (256 float64 terms
at 32 KiB, measured), which ``alcore.laplace`` avoids by summing longer contractions
in fixed blocks of 256; aarch64, and x86-64 machines without AVX2 and FMA, compute
other numbers (the capped kernels need AVX2; there nothing is capped).

A user's own ``XLA_FLAGS`` and variables are kept: a flag or variable the user set
wins over the project's, and :func:`platform` records what was in force, so stored
results say what computed them. ``BAL_NUMERICS=host`` turns the settings off (the
host's fastest kernels, machine-dependent numbers).
"""

import os
import platform as _platform
import sys

# Flags added to XLA_FLAGS (a flag the user's XLA_FLAGS already sets is left to them).
XLA_SETTINGS = (
    "--xla_cpu_max_isa=AVX2",
    "--xla_cpu_enable_platform_dependent_math=false",
    "--xla_cpu_experimental_ynn_fusion_type=-reduce",
)
# Variables set where the user has not set them.
ENV_SETTINGS = {
    "PJRT_NPROC": "1",
    "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
}
# Settings that exist only for x86-64 with AVX2 and FMA (elsewhere they would crash
# OpenBLAS or mean nothing).
X86_ONLY = {"--xla_cpu_max_isa", "OPENBLAS_CORETYPE"}
SWITCH = "BAL_NUMERICS"  # "host": no settings
RECORDED = ("XLA_FLAGS", *ENV_SETTINGS)

_late: list[str] = []  # libraries already loaded when configure() first ran


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def cpu_has_avx2_fma() -> bool:
    """Whether this is an x86-64 CPU with AVX2 and FMA (from /proc/cpuinfo on Linux)."""
    if _platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        pass
    return True  # x86-64 without /proc (macOS, Windows): assume a machine of this decade


def settings(environ=None, *, x86_avx2: bool | None = None) -> dict[str, str]:
    """The variables :func:`configure` sets: the user's values where they set them,
    the project's otherwise (``XLA_FLAGS``: the user's flags, then ours they lack)."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH, "").lower() == "host":
        return {}
    x86 = cpu_has_avx2_fma() if x86_avx2 is None else x86_avx2
    keep = (lambda name: True) if x86 else (lambda name: _flag_name(name) not in X86_ONLY)
    user_flags = environ.get("XLA_FLAGS", "").split()
    have = {_flag_name(f) for f in user_flags}
    flags = user_flags + [f for f in XLA_SETTINGS if keep(f) and _flag_name(f) not in have]
    out = {"XLA_FLAGS": " ".join(flags)} if flags else {}
    for name, value in ENV_SETTINGS.items():
        if keep(name):
            out[name] = environ.get(name, value)
    return out


def configure(environ=None) -> dict[str, str]:
    """Put the settings into the environment (idempotent); returns them.

    Must run before NumPy loads OpenBLAS and before jaxlib loads. Where NumPy came
    first, OpenBLAS's threads are limited at run time instead (its kernel family
    cannot change: :func:`platform` records the one loaded); where jaxlib came first,
    :func:`platform` notes it.
    """
    environ = os.environ if environ is None else environ
    values = settings(environ)
    environ.update(values)
    if environ is os.environ and not _late:
        _late.extend(name for name in ("jaxlib",) if name in sys.modules)
        if "numpy" in sys.modules and values.get("OPENBLAS_NUM_THREADS"):  # too late for the env variable
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=int(values["OPENBLAS_NUM_THREADS"]), user_api="blas")
    return values


def _blas() -> str:
    """NumPy's BLAS as loaded: library, version, kernel family, threads."""
    import numpy  # noqa: F401 - loads the library threadpoolctl inspects
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            return f"{lib['internal_api']} {lib['version']} {lib.get('architecture')} x{lib['num_threads']}"
    return "unknown"


def platform() -> dict:
    """The numeric platform this process computes on: what a stored stage records.

    The architecture, the versions of the libraries that compute, the settings in
    force, and the BLAS kernels actually loaded; not the CPU model, since the
    settings are what make different models agree.
    """
    import jax
    import jaxlib
    import numpy
    import scipy

    return {
        "arch": _platform.machine().lower().replace("amd64", "x86_64"),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "settings": {name: os.environ.get(name) for name in RECORDED if os.environ.get(name) is not None},
        "blas": _blas(),
        "late": list(_late),
    }


def describe(p: dict | None) -> str:
    """A platform in one short phrase, for messages."""
    if p is None:
        return "an unrecorded platform"
    s = p.get("settings", {})
    isa = next(
        (f.split("=", 1)[1] for f in s.get("XLA_FLAGS", "").split() if f.startswith("--xla_cpu_max_isa=")), "host"
    )
    return (
        f"{p.get('arch')}, jax {p.get('jax')}/jaxlib {p.get('jaxlib')}, numpy {p.get('numpy')}, scipy {p.get('scipy')}, "
        f"XLA ISA {isa}, {s.get('PJRT_NPROC', 'all')} XLA thread(s), BLAS {p.get('blas')}"
        + (f", loaded before the settings: {', '.join(p['late'])}" if p.get("late") else "")
    )


def exports() -> str:
    """The settings as shell ``export`` lines (``eval "$(python -m alcore)"``): for
    starting a process that does not import the project before NumPy (a Dask worker)."""
    import shlex

    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in settings().items())
