"""The flow end to end, in real subprocesses against the session's Prefect server."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from alcore import problem
from alcore.experiment import accuracy, predict
from store import files
from tests.helpers import ROOT, TINY, cli_args, comparable, folder_of, results, run_flow

pytestmark = [pytest.mark.slow, pytest.mark.server]

STAGES = ("acquire", "label", "retrain", "evaluate")


def round_restored(doc: dict, r: int) -> bool:
    """Whether round r came from the folder; a round is restored or computed whole."""
    restored = f"round-{r:02d}" in doc["run"]["restored"]
    computed = [f"round-{r:02d}/{s}" in doc["run"]["computed"] for s in STAGES]
    assert computed == [not restored] * 4, f"round {r}: restored {restored}, computed {computed}"
    return restored


def test_tiny_flow_outputs_exist_and_agree(prefect_server, tmp_path):
    config = {**TINY, "seed": 101, "artifacts_dir": str(tmp_path)}
    folder = folder_of(run_flow(prefect_server["env"], config))
    doc = results(folder)
    assert doc["config"]["rounds"] == 3 and len(doc["active_accuracy"]) == 3
    assert doc["prior_precision"] > 0
    grid = np.asarray(problem.grid_points(TINY["grid_size"]))
    for idx, point, label in zip(doc["chosen_indices"], doc["chosen_points"], doc["chosen_labels"], strict=True):
        np.testing.assert_allclose(grid[idx], point, rtol=1e-6)
        assert label == int(problem.true_label(np.asarray(point, np.float32)))
    # every round file holds the state the reported numbers come from
    labels = np.asarray(problem.true_labels(grid))
    for r in range(1, 4):
        record = files.load(folder / "rounds" / f"round-{r:03d}.joblib")["record"]
        assert record["round"] == r and len(record["y_labelled"]) == TINY["n_initial"] + r
        assert accuracy(predict(record["state"].params, grid), labels) == doc["active_accuracy"][r - 1]
        assert record["labels"] == [doc["chosen_labels"][r - 1]]
    passive = files.load(next((folder.parent / "passive").glob("passive-*.joblib")))["record"]
    assert passive["accuracy"] == doc["passive_accuracy"] and len(passive["y"]) == TINY["n_initial"] + 3
    for name in ("data", "prediction", "uncertainty", "misclassification", "accuracy", "calibration"):
        assert (folder / "plots" / f"{name}.png").stat().st_size > 5000
    with Image.open(folder / "plots" / "rounds.gif") as gif:
        assert gif.n_frames == 3
    assert set(doc["run"]["wall_seconds"]) >= {"data", "initial", "calibration", "round-03/evaluate"}
    assert doc["run"]["restored"] == [] and doc["label_sources"] == ["truth"] * 3
    # artifacts reached the server
    found = httpx.post(
        f"{prefect_server['api_url']}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [doc["run"]["flow_run_id"]]}}},
    ).json()
    by_key = {a["key"]: a for a in found}
    prefix = doc["artifact_prefix"]  # a hash of the folder's path: two artifact folders never share keys
    assert {prefix + k for k in ("summary", "round-accuracy", "progress", "results", "animation", "labels")} <= set(
        by_key
    )
    assert "data:image/png;base64," in by_key[prefix + "summary"]["data"]
    # artifacts that open: the content inline, no file:// link
    assert '"final_active_accuracy"' in by_key[prefix + "results"]["data"]
    assert "data:image/gif;base64," in by_key[prefix + "animation"]["data"]
    assert not any("file://" in str(a["data"]) for a in found)
    labels = by_key[prefix + "labels"]
    labels = json.loads(labels["data"]) if isinstance(labels["data"], str) else labels["data"]
    assert len(labels) == TINY["n_initial"] + TINY["n_calibration"] + 3 + len(passive["y"])
    assert [row["source"] for row in labels].count("round 2") == 1
    assert (folder / "labels.csv").read_text().count("\n") == len(labels) + 1
    assert by_key[prefix + "progress"]["data"] == 100.0
    table = by_key[prefix + "round-accuracy"]
    assert len(json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]) == 3


def test_stop_when_ends_the_rounds_at_the_rules_signal_and_is_in_no_key(prefect_server, tmp_path):
    # a threshold of 100 % signals as soon as the rule has its 3 rounds
    config = {**TINY, "seed": 303, "rounds": 5, "passive": False, "plots": False, "artifacts_dir": str(tmp_path)}
    proc = run_flow(prefect_server["env"], {**config, "stop_when": "stable:100"})
    doc = results(folder_of(proc))
    assert len(doc["active_accuracy"]) == 3 and doc["run"]["stopped_after_round"] == 3
    assert doc["run"]["stopped_by"] == "rule" and doc["stop_rule"]["signals_after_round"] == 3
    assert "changed on" in proc.stderr + proc.stdout and len(doc["prediction_change_per_round"]) == 3
    # without the rule, the same folder: its three rounds restored, two more computed
    again = results(folder_of(run_flow(prefect_server["env"], config)))
    assert again["run"]["restored"][-1] == "round-03" and len(again["active_accuracy"]) == 5
    assert again["active_accuracy"][:3] == doc["active_accuracy"] and again["run"]["stopped_by"] is None


def _launch(env, config):
    return subprocess.Popen(
        [sys.executable, "-m", "flows.active_learning", *cli_args(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_sigkill_then_resume_equals_an_uninterrupted_run(prefect_server, tmp_path):
    config = {**TINY, "seed": 202, "rounds": 8, "epochs_per_round": 300, "artifacts_dir": str(tmp_path)}
    env = prefect_server["env"]
    proc = _launch(env, config)
    rounds_dir = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("al-*/rounds/round-002.joblib"))
        if found:
            rounds_dir = found[0].parent
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert rounds_dir is not None, "the flow never finished round 2"
    assert not (rounds_dir.parent / "results.json").exists(), "killed too late: the run had finished"
    finished = len(list(rounds_dir.glob("round-*.joblib")))
    assert 2 <= finished < 8

    resumed = results(folder_of(run_flow(env, config)))
    # nothing finished is computed again: the rounds whose files exist are restored
    assert [round_restored(resumed, r) for r in range(1, 9)] == [r <= finished for r in range(1, 9)]
    assert {"data", "initial", "calibration"} <= set(resumed["run"]["restored"])

    fresh = results(folder_of(run_flow(env, config, "--refresh")))
    assert fresh["run"]["restored"] == []
    assert comparable(resumed) == comparable(fresh)


def test_damaged_round_file_is_reported_and_recomputed(prefect_server, tmp_path):
    config = {**TINY, "seed": 303, "rounds": 4, "artifacts_dir": str(tmp_path)}
    env = prefect_server["env"]
    folder = folder_of(run_flow(env, config))
    before = results(folder)
    damaged = folder / "rounds" / "round-003.joblib"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    passive_file = next((folder.parent / "passive").glob("passive-*.joblib"))
    passive_file.write_bytes(passive_file.read_bytes()[:100])  # truncated

    proc = run_flow(env, config)
    after = results(folder_of(proc))
    assert str(damaged) in proc.stdout + proc.stderr and "checksum mismatch" in proc.stdout + proc.stderr
    assert any(str(damaged) in w for w in after["run"]["warnings"])
    assert [round_restored(after, r) for r in range(1, 5)] == [True, True, False, False]
    assert files.verify(damaged) is None
    assert str(passive_file) in proc.stdout + proc.stderr and files.verify(passive_file) is None
    assert comparable(after) == comparable(before)


def test_changed_parameter_reuses_nothing_and_extension_reuses_everything(prefect_server, tmp_path):
    config = {**TINY, "seed": 404, "rounds": 3, "artifacts_dir": str(tmp_path)}
    env = prefect_server["env"]
    base = results(folder_of(run_flow(env, config)))

    changed_folder = folder_of(run_flow(env, {**config, "learning_rate": 0.002}))
    changed = results(changed_folder)
    assert changed_folder.name != f"al-{base['config_hash']['experiment']}"
    assert changed["run"]["restored"] == []

    extended = results(folder_of(run_flow(env, {**config, "rounds": 5})))
    assert [round_restored(extended, r) for r in range(1, 6)] == [True, True, True, False, False]
    assert "calibration" in extended["run"]["restored"]
    assert extended["active_accuracy"][:3] == base["active_accuracy"]
    assert extended["chosen_points"][:3] == base["chosen_points"]


def test_status_lists_what_is_cached(prefect_server, tmp_path):
    config = {**TINY, "seed": 101, "rounds": 2, "artifacts_dir": str(tmp_path)}
    folder_of(run_flow(prefect_server["env"], config))
    proc = subprocess.run(
        [sys.executable, "-m", "flows.active_learning", *cli_args(config), "--status"],
        cwd=ROOT,
        env=prefect_server["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    status = json.loads(proc.stdout)
    rows = {row["stage"]: row for row in status["stages"]}
    assert rows["round-002"]["state"] == "ok" and rows["round-002"]["bytes"] > 1000
    assert 0 < rows["round-001"]["accuracy"] <= 1
    assert rows["calibration"]["prior_prec"] > 0
    assert rows["passive"]["state"] == "ok" and 0 < rows["passive"]["accuracy"] <= 1


def test_flow_retry_resumes_from_the_cache(prefect_server, tmp_path):
    """A run that crashes after round 2 and is retried by Prefect (same flow run id)."""
    config = {**TINY, "seed": 505, "rounds": 4, "artifacts_dir": str(tmp_path)}
    env = {**prefect_server["env"], "BAL_FAULT_ONCE": "after-round-2"}
    proc = run_flow(env, config, "--retries", "1")
    doc = results(folder_of(proc))
    assert "injected fault at after-round-2" in proc.stdout + proc.stderr
    assert [round_restored(doc, r) for r in range(1, 5)] == [True, True, False, False]
    flow_run = httpx.get(f"{prefect_server['api_url']}/flow_runs/{doc['run']['flow_run_id']}").json()
    assert flow_run["run_count"] == 2 and flow_run["state_type"] == "COMPLETED"
    fresh = results(folder_of(run_flow(prefect_server["env"], config, "--refresh")))
    assert comparable(doc) == comparable(fresh)


def test_a_termination_signal_swallowed_by_a_gc_callback_still_ends_the_run(prefect_server, tmp_path):
    """SIGTERM received during a garbage collection, where Python prints and ignores the
    exception Prefect's handler raises: the run still ends at the next stage, crashed
    with Prefect's termination message, its process ended by the signal (before the
    fix it went on to its last round). The passive subflow it started is not waited for."""
    config = {**TINY, "seed": 515, "rounds": 30, "artifacts_dir": str(tmp_path)}
    env = {**prefect_server["env"], "BAL_FAULT_ONCE": "sigterm-in-gc:after-round-2"}
    proc = run_flow(env, config, timeout=300)
    output = proc.stdout + proc.stderr
    assert "Exception ignored" in output and "TerminationSignal" in output, output[-3000:]  # it was swallowed
    assert proc.returncode == -signal.SIGTERM, output[-3000:]
    [folder] = tmp_path.glob("al-*")
    assert (folder / "rounds" / "round-002.joblib").exists() and not (folder / "results.json").exists()
    assert "round 3/30" not in output and "round 4/30" not in output, output[-3000:]
    crashed = [ln.split("'")[1] for ln in output.splitlines() if "Flow run '" in ln and "Crash detected" in ln]
    runs = httpx.post(
        f"{prefect_server['api_url']}/flow_runs/filter", json={"flow_runs": {"name": {"any_": crashed}}}
    ).json()
    assert [r["state_type"] for r in runs] == ["CRASHED"] and "termination signal" in runs[0]["state"]["message"]


def test_resume_needs_only_the_folder_not_prefect_home(prefect_server, tmp_path):
    """A finished experiment re-run with an empty PREFECT_HOME (a new machine, a fresh
    container): everything is restored from the folder, nothing recomputed, same
    numbers; the run graph shows one restore node and no stage of a restored round."""
    config = {**TINY, "seed": 606, "artifacts_dir": str(tmp_path / "a")}
    first = results(folder_of(run_flow(prefect_server["env"], config)))
    env = {**prefect_server["env"], "PREFECT_HOME": str(tmp_path / "empty-home")}
    again = results(folder_of(run_flow(env, config)))
    assert again["run"]["restored"] == ["data", "initial", "calibration", "round-01", "round-02", "round-03", "passive"]
    assert again["run"]["computed"] == []
    assert comparable(again) == comparable(first)
    assert not (tmp_path / "empty-home" / "storage").exists()  # Prefect stored no result of its own
    graph = httpx.get(f"{prefect_server['api_url']}/flow_runs/{again['run']['flow_run_id']}/graph-v2").json()
    labels = [(n[1] if isinstance(n, list) else n)["label"] for n in graph["nodes"]]
    assert "restore/data, initial, calibration, rounds 1-3, passive" in labels
    assert not [label for label in labels if label.startswith("passive")]  # restored: no subflow
    assert not [label for label in labels if label.startswith("round-")]
    assert "report/plots-and-artifacts" in labels
