"""Result files and parameter validation: no Prefect, no compute."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from alcore.config import ExperimentConfig
from flows.active_learning import parse_config
from store import files
from store.layout import Workspace, check_writable
from tests.helpers import ROOT

# ------------------------------------------------------------------ storage


def test_roundtrip_and_no_temporary_files_left(tmp_path):
    obj = {"a": np.arange(5, dtype=np.float32), "b": [1, "x"]}
    digest = files.save(tmp_path / "r.joblib", obj)
    assert len(digest) == 64
    back = files.load(tmp_path / "r.joblib")
    np.testing.assert_array_equal(back["a"], obj["a"])
    assert back["b"] == [1, "x"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.joblib"]


def test_files_of_the_previous_format_a_joblib_pickle_still_load(tmp_path):
    import hashlib
    import io

    import joblib

    obj = {"key": "k", "record": {"scores": np.linspace(0, 1, 1000)}, "platform": None, "seconds": 0.5}
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    payload = buf.getvalue()
    path = tmp_path / "old.joblib"
    path.write_bytes(files.MAGIC + struct.pack("<I", 3) + hashlib.sha256(payload).digest() + payload)
    back = files.load(path)
    np.testing.assert_array_equal(back["record"]["scores"], obj["record"]["scores"])
    assert back["seconds"] == 0.5
    files.save(path, obj)
    assert struct.unpack_from("<I", path.read_bytes(), 8)[0] == files.FORMAT_VERSION == 4


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[: len(b) // 2], "checksum mismatch"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "checksum mismatch"),
        (lambda b: b"NOTMAGIC" + b[8:], "bad magic"),
        (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "format version 99"),
        (lambda b: b"", "truncated"),
    ],
    ids=["half", "header-only", "flipped-byte", "magic", "version", "empty"],
)
def test_damaged_files_are_detected(tmp_path, damage, reason):
    path = tmp_path / "r.joblib"
    files.save(path, {"x": np.ones(100)})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(files.DamagedFile, match=reason) as info:
        files.load(path)
    assert str(path) in str(info.value)
    assert reason.split()[0] in files.verify(path)


def test_verify_reports_missing(tmp_path):
    assert files.verify(tmp_path / "nope.joblib") == "missing"


KILL_DURING_WRITE = """
import sys, numpy as np
from store import files
files.save(sys.argv[1], {"v": 1})
print("ready", flush=True)
files.save(sys.argv[1], {"v": 2, "big": np.random.default_rng(0).random(60_000_000)})
"""


@pytest.mark.slow  # a writer process, SIGKILLed mid-write of ~480 MB
def test_kill_during_write_leaves_the_old_file(tmp_path):
    """SIGKILL while a ~480 MB payload is being written: the old file stays intact."""
    path = tmp_path / "state.joblib"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_DURING_WRITE, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    import time

    deadline = time.time() + 60
    while not list(tmp_path.glob(".state.joblib.*.tmp")) and time.time() < deadline:
        time.sleep(0.005)
    tmp_files = list(tmp_path.glob(".state.joblib.*.tmp"))
    assert tmp_files, "the writer never started its temporary file"
    proc.kill()
    proc.wait()
    assert files.load(path) == {"v": 1}


# ------------------------------------------------------------------ config


def test_defaults_are_the_tutorials():
    c = ExperimentConfig()
    assert (c.seed, c.rounds, c.n_initial, c.n_calibration, c.grid_size) == (2392386, 50, 20, 30, 100)
    assert (c.learning_rate, c.batch_size, c.initial_epochs, c.epochs_per_round) == (1e-3, 10, 1000, 35)
    assert (c.n_passive, c.passive_epochs) == (70, 2750)


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--rounds", "-1"], "--rounds"),
        (["--grid-size", "1"], "--grid-size"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--learning-rate", "-1e-3"], "--learning-rate"),
        (["--learning-rate", "nan"], "--learning-rate"),
        (["--learning-rate", "inf"], "--learning-rate"),
        (["--initial-epochs", "0"], "--initial-epochs"),
        (["--epochs-per-round", "-5"], "--epochs-per-round"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--log-prior-prec-min", "nan"], "--log-prior-prec-min"),
        (["--log-prior-prec-min", "4", "--log-prior-prec-max", "1"], "log_prior_prec_min"),
        (["--acquisition", "oracle"], "--acquisition"),
        (["--curvature", "kfac"], "--curvature"),
        (["--artifacts-dir", "/etc/hostname/sub"], "artifacts_dir"),
        (["--artifacts-dir", "/proc/forbidden"], "artifacts_dir"),
    ],
)
def test_bad_input_is_rejected_naming_the_parameter(flags, names, capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(flags)
    assert info.value.code == 2
    assert names in capsys.readouterr().err


@pytest.mark.slow  # the command line, in a subprocess
def test_rejected_run_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.active_learning", "--rounds", "-3", "--artifacts-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--rounds" in proc.stderr and "greater than or equal to 0" in proc.stderr
    assert not out.exists()


def test_pydantic_rejects_the_same_values_the_cli_does():
    with pytest.raises(ValidationError, match="grid_size"):
        ExperimentConfig(grid_size=1)
    with pytest.raises(ValidationError, match="extra"):
        ExperimentConfig(gird_size=10)


def test_workspace_is_named_by_the_experiment_digest(tmp_path):
    from alcore.stages import experiment_digest

    c = ExperimentConfig(artifacts_dir=str(tmp_path))
    ws = Workspace.for_config(c)
    assert ws.root == tmp_path / f"al-{experiment_digest(c)}"
    ws.write_config(c)
    assert json.loads(ws.config_file.read_text())["seed"] == c.seed
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_every_label_counts_for_the_passive_baseline_when_asked():
    from alcore.config import held_out_labels, n_passive

    tutorial = ExperimentConfig()
    assert n_passive(tutorial) == 20 + 50  # the tutorial's comparison: initial + acquired
    honest = ExperimentConfig(count_all_labels=True)
    assert held_out_labels(honest) == 30 and n_passive(honest) == 20 + 30 + 50  # ECE's held-out labels count
    no_held_out = ExperimentConfig(count_all_labels=True, calibration="marglik")
    assert held_out_labels(no_held_out) == 0 and n_passive(no_held_out) == 20 + 50
    batches = ExperimentConfig(count_all_labels=True, acquisition_batch=5, rounds=10)
    assert n_passive(batches) == 20 + 30 + 50


def test_pool_data_default_to_no_held_out_labels_and_no_repicks():
    pool = ExperimentConfig(data="iris", n_initial=5)
    assert pool.calibration == "marglik" and pool.exclude_labelled
    assert ExperimentConfig(data="iris", n_initial=5, calibration="ece", exclude_labelled=False).calibration == "ece"
    tutorial = ExperimentConfig()
    assert tutorial.calibration == "ece" and not tutorial.exclude_labelled


def ui_custom_run_payload(deployment: dict) -> dict:
    """What the UI's *Custom run* of a deployment sends with nothing changed: every
    field of the flow's parameter schema with its default, the deployment's
    parameters over them."""
    from prefect.utilities.callables import parameter_schema

    from flows.active_learning import active_learning

    schema = parameter_schema(active_learning.fn).model_dump()
    defaults = {name: spec.get("default") for name, spec in schema["properties"].items()}
    return {**defaults, "config": {**defaults["config"], **deployment.get("parameters", {}).get("config", {})}}


@pytest.mark.parametrize("name", ["nightly", "smoke", "label"])
def test_a_custom_run_with_nothing_changed_is_the_cli_run_without_flags(name):
    """The UI sends every schema default explicitly: data-dependent defaults (the
    passive baseline off with a person labelling, marglik and no re-picks on pools)
    must still follow the data, as on the command line."""
    import yaml

    deployment = next(
        d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"] if d["name"] == name
    )
    payload = ui_custom_run_payload(deployment)
    assert payload["refresh"] is False and payload["accept_platform_mix"] is False
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in deployment.get("parameters", {}).get("config", {}).items()]
    assert ExperimentConfig(**payload["config"]) == parse_config(flags)[0]


@pytest.mark.parametrize("data", ["tutorial", "digits"])
@pytest.mark.parametrize("oracle", ["truth", "human"])
def test_the_schema_default_sent_back_keeps_the_data_dependent_defaults(data, oracle):
    full = json.loads(ExperimentConfig().model_dump_json()) | {"data": data, "oracle": oracle}
    config = ExperimentConfig(**full)
    assert config.passive is (oracle == "truth")
    assert config.calibration == ("ece" if data == "tutorial" else "marglik")
    assert config.exclude_labelled is (data != "tutorial")
    explicit = ExperimentConfig(data=data, oracle=oracle, passive=True, calibration="ece", exclude_labelled=False)
    assert ExperimentConfig(**json.loads(explicit.model_dump_json())) == explicit  # explicit values survive JSON
    assert (explicit.passive, explicit.calibration, explicit.exclude_labelled) == (True, "ece", False)


def test_the_curvatures_are_laplaxs():
    import typing

    from laplax.enums import CurvApprox

    from alcore.config import Curvature

    assert set(typing.get_args(Curvature)) == {c.value for c in CurvApprox}
