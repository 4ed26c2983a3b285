"""The same numbers on every machine (alcore/numerics.py), and a store that knows its platform.

Two machines are simulated on one: another core count (``taskset``) and another
oneDNN instruction-set cap, each a cause of different last bits without the settings.
What cannot be simulated (another CPU's L1 size, which Eigen's blocking follows) is
checked on the compiled programs instead: no contraction sums more terms than one
block.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sources
from alcore import compile_cache, laplace, numerics, training
from alcore import stages as st
from alcore.config import ExperimentConfig
from alcore.experiment import padded
from alcore.model import init_params
from store import files
from store.experiment import PlatformMix, Store
from tests.helpers import ROOT, TINY, run_flow

# ---------------------------------------------------------------- the settings


def test_a_users_own_settings_are_kept():
    env = {"XLA_FLAGS": "--xla_cpu_max_isa=AVX --xla_dump_to=/tmp/dump", "PJRT_NPROC": "4"}
    got = numerics.settings(env, x86_avx2=True)
    flags = got["XLA_FLAGS"].split()
    assert flags[:2] == ["--xla_cpu_max_isa=AVX", "--xla_dump_to=/tmp/dump"]  # theirs first, and theirs win
    assert "--xla_cpu_max_isa=AVX2" not in flags
    assert "--xla_cpu_enable_platform_dependent_math=false" in flags
    assert got["PJRT_NPROC"] == "4" and got["OPENBLAS_CORETYPE"] == "Haswell"
    assert got["TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"] == "false"


def test_x86_only_settings_stay_off_elsewhere_and_host_turns_all_off():
    got = numerics.settings({}, x86_avx2=False)
    assert "OPENBLAS_CORETYPE" not in got and "--xla_cpu_max_isa" not in got["XLA_FLAGS"]
    assert got["PJRT_NPROC"] == "1"
    assert numerics.settings({"BAL_NUMERICS": "host"}, x86_avx2=True) == {}


def test_this_process_computes_under_the_settings():
    if not numerics.cpu_has_avx2_fma():
        pytest.skip("the capped kernels need an x86-64 CPU with AVX2 and FMA; this one has none")
    if os.environ.get("BAL_NUMERICS") == "host":
        pytest.skip("BAL_NUMERICS=host turns the settings off")
    p = numerics.platform()
    assert p["settings"]["PJRT_NPROC"] == "1" and "--xla_cpu_max_isa=AVX2" in p["settings"]["XLA_FLAGS"]
    assert p["blas"].endswith("Haswell x1"), p["blas"]  # NumPy's OpenBLAS loaded after the settings
    assert p["late"] == []
    assert "\n" not in numerics.describe(p)


# ---------------------------------------------------------------- sums in fixed blocks


def test_contract_cuts_long_sums_into_blocks_and_agrees_with_einsum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3, 700)), rng.normal(size=(700, 4))
    with jax.enable_x64(True):
        got = np.asarray(laplace.contract("mcr,rk->mck", jnp.asarray(x), jnp.asarray(y)))
        jaxpr = jax.make_jaxpr(partial(laplace.contract, "mcr,rk->mck"))(jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(got, np.einsum("mcr,rk->mck", x, y), rtol=1e-12)
    assert sorted(_contracted_lengths(jaxpr.jaxpr)) == [(188, "float64"), (256, "float64"), (256, "float64")]


def _contracted_lengths(jaxpr) -> list[tuple[int, str]]:
    """(summed length, dtype) of every dot_general in a jaxpr, nested ones included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            shape = eqn.invars[0].aval.shape
            out.append((math.prod(shape[d] for d in lhs_contract), str(eqn.invars[0].aval.dtype)))
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out += _contracted_lengths(inner)
    return out


# Measured on a 32 KiB L1d: Eigen splits float64 sums after 256 terms, float32 after 512.
LONGEST = {"float64": 256, "float32": 512}


@pytest.mark.parametrize(
    "n_features,n_classes,n_labelled", [(2, 3, 170), (64, 10, 70)], ids=["tutorial-170-labels", "digits-70-labels"]
)
def test_no_contraction_sums_more_than_one_block(n_features, n_classes, n_labelled):
    """The Laplace programs and the training scan at sizes the sweeps reach (the dual
    form's width r = 2 x 256 and 9 x 72): no sum longer than an L1-sized block, so no
    CPU splits one where another does not."""
    params = init_params(seed=0, hidden=32, in_dim=n_features, n_classes=n_classes)
    rng = np.random.default_rng(1)
    x_pad, y_pad, mask = padded(rng.normal(size=(n_labelled, n_features)).astype(np.float32), n_classes=n_classes)
    pool = jnp.asarray(rng.normal(size=(3000, n_features)).astype(np.float32))
    with jax.enable_x64(True):
        fit = laplace.fit_posterior.__wrapped__
        post = fit(params, jnp.asarray(x_pad), jnp.asarray(mask))
        tau = jnp.float32(1.0)
        programs = [
            jax.make_jaxpr(fit)(params, jnp.asarray(x_pad), jnp.asarray(mask)),
            jax.make_jaxpr(laplace.predictive_var_of.__wrapped__)(post, params, pool, jnp.zeros(3000, jnp.int32), tau),
            jax.make_jaxpr(laplace.predictive_cov_blocks.__wrapped__)(post, params, pool, tau),
        ]
    tx = training.make_optimizer(learning_rate=1e-3)
    for batch_size, prior in ((10, None), (0, 1.0)):  # the tutorial's mini-batches; the pools' full batches
        schedule = training.epoch_batches(n_points=n_labelled, n_epochs=2, batch_size=batch_size, max_points=len(x_pad))
        args, static = training._scan_args(
            params, tx.init(params), jnp.asarray(x_pad), jnp.asarray(y_pad), schedule, prior
        )
        programs.append(jax.make_jaxpr(partial(training._train_scan, tx=tx, **static))(*args))
    lengths = [pair for program in programs for pair in _contracted_lengths(program.jaxpr)]
    assert lengths, "no contraction found: the check would be empty"
    too_long = [(k, dtype) for k, dtype in lengths if k > LONGEST[dtype]]
    assert not too_long


# ---------------------------------------------------------------- two simulated machines


def _probe(prefix: list[str], extra_env: dict) -> dict:
    """``tests/numerics_probe.py`` in a fresh process whose environment has none of the
    settings: the project must set them itself. Each compiles its own programs (no
    compiled program shared through alcore/compile_cache.py)."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.RECORDED and k != "ONEDNN_MAX_CPU_ISA"}
    env = {k: v for k, v in env.items() if not k.startswith("JAX_")} | {compile_cache.SWITCH: "off"}
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "tests.numerics_probe"],
        cwd=ROOT,
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_simulated_machines_compute_the_same_numbers():
    if not numerics.cpu_has_avx2_fma():
        pytest.skip("the capped kernels need an x86-64 CPU with AVX2 and FMA; this one has none")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        pytest.skip("simulating another core count needs two visible cores and taskset")
    one_core = _probe(["taskset", "-c", str(cpus[0])], {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    all_cores = _probe([], {"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert one_core["platform"] == all_cores["platform"]
    assert one_core["hashes"] == all_cores["hashes"]


# ---------------------------------------------------------------- a store that knows its platform


def _elsewhere(platform: dict) -> dict:
    return {**platform, "arch": "aarch64", "blas": "openblas 0.3.31 NEOVERSEN1 x1"}


def test_resuming_from_another_platform_is_refused_before_compute(tmp_path):
    config = ExperimentConfig(**TINY, artifacts_dir=str(tmp_path))
    Store(config).save(st.DATA, sources.draw(config))
    other = Store(config)
    other.platform = _elsewhere(other.platform)
    with pytest.raises(PlatformMix) as refused:
        other.restore()
    message = str(refused.value)
    assert "\n" not in message and "--accept-platform-mix" in message
    assert "aarch64" in message and "x86_64" in message and "data.joblib" in message
    assert other.status()["stages"][0]["state"] == "other-platform"
    accepting = Store(config, accept_platform_mix=True)
    accepting.platform = _elsewhere(accepting.platform)
    restored = accepting.restore()
    assert restored.data is not None
    assert restored.platforms == {"data": Store(config).platform}


@pytest.mark.slow
@pytest.mark.server
def test_the_command_line_refuses_a_mix_and_accepts_it_when_asked(prefect_server, tmp_path):
    config = {**TINY, "seed": 19, "artifacts_dir": str(tmp_path), "passive": False}
    first = run_flow(prefect_server["env"], config)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = next(tmp_path.glob("al-*"))
    path = folder / "rounds" / "round-002.joblib"
    content = files.load(path)
    files.save(path, {**content, "platform": _elsewhere(content["platform"])})
    refused = run_flow(prefect_server["env"], config)
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("PlatformMix: refusing to resume from ") and "round-002.joblib" in last
    assert "--accept-platform-mix" in last and "aarch64" in last
    accepted = run_flow(prefect_server["env"], config, "--accept-platform-mix")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    doc = json.loads((folder / "results.json").read_text())
    assert doc["platform"]["mixed"] is True
    assert set(doc["platform"]["other_platforms"]) == {"round-02"}
    assert doc["platform"]["this_run"] == content["platform"]
    assert doc["run"]["restored"] == ["data", "initial", "calibration", "round-01", "round-02", "round-03"]
