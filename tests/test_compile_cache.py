"""Compiled programs kept on disk (alcore/compile_cache.py): a new process loads them
and computes the same bits as one that compiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alcore import compile_cache

ROOT = Path(__file__).resolve().parent.parent


def test_the_directory_is_per_cpu_and_can_be_turned_off(tmp_path):
    cpu = f"cpu-{compile_cache.cpu_fingerprint()}"
    assert len(cpu) == 16
    ours = {"XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache.configure(ours) == tmp_path / "bal-pipeline" / "jax" / cpu
    assert ours["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "bal-pipeline" / "jax" / cpu)
    assert ours["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0.0"
    # a child process inherits the variables; its own choice still wins over the parent's
    child = {**ours, compile_cache.SWITCH: str(tmp_path / "c")}
    assert compile_cache.configure(child) == tmp_path / "c" / cpu
    assert child["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "c" / cpu)
    off = {**ours, compile_cache.SWITCH: "off"}
    assert compile_cache.configure(off) is None and "JAX_COMPILATION_CACHE_DIR" not in off
    # the user's own JAX directory wins, and so does every option they set
    user = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"}
    assert compile_cache.configure(user) == Path("/elsewhere")
    assert user["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"


def _probe(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")} | {compile_cache.SWITCH: cache}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.numerics_probe"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_loaded_programs_compute_what_compiled_ones_do(tmp_path):
    compiled = _probe("off")
    assert compiled["compile_cache"] == {"hits": 0, "misses": 0}
    first = _probe(str(tmp_path))  # compiles, and writes every program
    assert first["compile_cache"]["hits"] == 0 and first["compile_cache"]["misses"] > 10
    (where,) = tmp_path.iterdir()
    assert where.name == f"cpu-{compile_cache.cpu_fingerprint()}" and len(list(where.iterdir())) > 10
    second = _probe(str(tmp_path))  # a new process: loads them
    assert second["compile_cache"]["misses"] == 0 and second["compile_cache"]["hits"] > 10
    assert first["hashes"] == compiled["hashes"] == second["hashes"]
