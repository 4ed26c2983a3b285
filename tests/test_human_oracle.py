"""A person as the oracle, paused runs: a scripted labeller answers through the REST API.

The command line runs against the session's real Prefect server with
``--oracle human``; the labeller (tests/labeller.py) reads each form's points from
the sidecar the flow writes and resumes the paused run with the ground truth's
labels, as a person clicking *Resume* in the UI would. The deployment (suspended)
case and the browser are in test_human_oracle_ui.py.
"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alcore.problem import true_labels
from tests.helpers import ROOT, TINY, cli_args, run_flow
from tests.labeller import label_until_done, resume, waiting_form

pytestmark = [pytest.mark.slow, pytest.mark.server]

COMPARED = (
    "prior_precision",
    "active_accuracy",
    "chosen_indices",
    "chosen_labels",
    "initial_labels",
    "passive_accuracy",
)


def truth(point) -> int:
    return int(true_labels(np.asarray([point], np.float32))[0])


def launch(env: dict, config: dict, tmp_path: Path, name: str = "human") -> subprocess.Popen:
    with open(tmp_path / f"{name}.log", "w") as out:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "flows.active_learning", *cli_args({**config, "oracle": "human"})],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def forms(artifacts: Path):
    return lambda: list(artifacts.glob("al-*/forms/*.json"))


def results(artifacts: Path, oracle: str = "human") -> dict:
    for path in artifacts.glob("al-*/results.json"):
        doc = json.loads(path.read_text())
        if doc["config"]["oracle"] == oracle:
            return doc
    raise FileNotFoundError(f"no results of a {oracle} run under {artifacts}")


def ledger(artifacts: Path) -> list[dict]:
    path = next(artifacts.glob("al-*/answers.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_until_waiting(api: str, artifacts: Path, key: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(artifacts.glob(f"al-*/forms/{key}.json"))
        if found:
            run_id = json.loads(found[0].read_text())["flow_run_id"]
            if waiting_form(api, run_id) == key:
                return run_id
        time.sleep(0.2)
    raise TimeoutError(f"the run never waited on form {key}")


def test_paused_run_answered_through_the_api_equals_a_truth_oracle_run(prefect_server, tmp_path):
    env, api = prefect_server["env"], prefect_server["api_url"]
    config = {**TINY, "seed": 707, "passive": True, "artifacts_dir": str(tmp_path / "a")}
    proc = launch(env, config, tmp_path)
    answered = label_until_done(api, forms(tmp_path / "a"), truth, done=lambda: proc.poll() is not None)
    assert proc.wait() == 0, (tmp_path / "human.log").read_text()[-3000:]
    assert answered == ["initial-1", "calibration-1", "passive-1", "round-001-1", "round-002-1", "round-003-1"]
    human = results(tmp_path / "a")

    truth_run = run_flow(env, {**config, "oracle": "truth"})
    assert truth_run.returncode == 0, truth_run.stderr[-3000:]
    reference = results(tmp_path / "a", "truth")
    assert {k: human[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}
    assert human["label_sources"] == ["human"] * 3 and reference["label_sources"] == ["truth"] * 3
    entries = ledger(tmp_path / "a")
    assert [e["ask"] for e in entries] == ["initial", "calibration", "passive", "round-001", "round-002", "round-003"]
    for entry in entries:
        assert len(entry["input_id"]) == 36 and entry["answered_at"].endswith("+00:00") and entry["source"] == "human"
    # the rounds' forms were pre-filled with the model's guesses: where the truth equals the guess, the answer
    # is recorded as an accepted guess and is not counted as the person's own in the agreement
    rounds = [p for e in entries[3:] for p in e["points"]]
    assert all(p["guess"] in (0, 1, 2) and p["accepted_guess"] == (p["label"] == p["guess"]) for p in rounds)
    assert all(p.get("guess") is None for e in entries[:3] for p in e["points"])  # no model guess before the rounds
    accepted = [p["accepted_guess"] for p in rounds]
    assert human["accepted_guesses"] == accepted
    own = 3 - sum(accepted)
    assert human["agreement_with_truth"]["all"] == {"agree": 12 + 10 + own, "of": 22 + own, "fraction": 1.0}
    assert human["agreement_with_truth"]["rounds_accepted_guesses"] == sum(accepted)
    # labels.csv: every labelled item with the time of the answer that labelled it
    with open(human["files"]["labels"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 + 10 + 3 + (12 + 3)  # initial, calibration, rounds, passive
    by_ask = {e["ask"]: e["answered_at"] for e in entries}
    for row in rows:
        ask = f"round-{int(row['source'].split()[1]):03d}" if row["source"].startswith("round") else row["source"]
        assert row["answered_at"] == by_ask[ask]
    # ... and whether it was the model's guess accepted, as the ledger says
    rounds_rows = [r for r in rows if r["source"].startswith("round")]
    assert [r["accepted_guess"] == "True" for r in rounds_rows] == accepted

    # a re-run of the answered experiment asks nothing and changes nothing
    before = sorted(p.stat().st_mtime_ns for p in forms(tmp_path / "a")())
    again = run_flow(env, {**config, "oracle": "human"}, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.stat().st_mtime_ns for p in forms(tmp_path / "a")()) == before
    assert len(ledger(tmp_path / "a")) == 6
    assert {k: results(tmp_path / "a")[k] for k in COMPARED} == {k: human[k] for k in COMPARED}


def test_bad_answers_are_refused_and_the_run_keeps_waiting(prefect_server, tmp_path):
    env, api = prefect_server["env"], prefect_server["api_url"]
    config = {**TINY, "seed": 708, "rounds": 1, "artifacts_dir": str(tmp_path / "a")}
    proc = launch(env, config, tmp_path)
    try:
        run_id = wait_until_waiting(api, tmp_path / "a", "initial-1")
        good = {f"point_{n}": "0" for n in range(1, TINY["n_initial"] + 1)}
        bad = {
            "a wrong class": ({**good, "point_3": "7"}, "'7' is not one of ['0', '1', '2']"),
            "a missing field": ({k: v for k, v in good.items() if k != "point_5"}, "'point_5' is a required property"),
            "an unknown point": ({**good, "point_99": "1"}, "'point_99' was unexpected"),
            "cannot label, where it is not offered": ({**good, "point_1": "cannot label"}, "is not one of"),
        }
        for what, (run_input, reason) in bad.items():
            response = resume(api, run_id, run_input).json()
            assert response["status"] == "REJECT", what
            assert reason in response["details"]["reason"], (what, response["details"])
            assert waiting_form(api, run_id) == "initial-1", f"the run stopped waiting after {what}"
        assert not list((tmp_path / "a").glob("al-*/answers.jsonl")), "a refused answer reached the ledger"
        label_until_done(api, forms(tmp_path / "a"), truth, done=lambda: proc.poll() is not None)
        assert proc.wait() == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cannot_label_excludes_the_point_and_stop_ends_the_loop(prefect_server, tmp_path):
    env, api = prefect_server["env"], prefect_server["api_url"]
    config = {**TINY, "seed": 709, "rounds": 4, "artifacts_dir": str(tmp_path / "a")}
    proc = launch(env, config, tmp_path)
    skip_first_of_round_1 = lambda form: {"point_1": "cannot label"} if form["key"] == "round-001-1" else {}  # noqa: E731
    answered = label_until_done(
        api,
        forms(tmp_path / "a"),
        truth,
        done=lambda: proc.poll() is not None,
        stop_after=2,
        override=skip_first_of_round_1,
    )
    assert proc.wait() == 0, (tmp_path / "human.log").read_text()[-3000:]
    assert answered == ["initial-1", "calibration-1", "round-001-1", "round-001-2", "round-002-1"]
    doc = results(tmp_path / "a")
    entries = ledger(tmp_path / "a")
    skipped = entries[2]["points"][0]
    assert skipped["label"] is None
    assert skipped["index"] not in doc["chosen_indices"]  # never picked, in round 1 or later
    assert len(doc["active_accuracy"]) == 2 and doc["run"]["stopped_after_round"] == 2
    assert entries[-1]["stop"] is True


def test_an_expired_wait_ends_the_run_clearly_and_a_rerun_continues(prefect_server, tmp_path):
    env, api = prefect_server["env"], prefect_server["api_url"]
    config = {**TINY, "seed": 710, "rounds": 2, "label_wait_seconds": 6, "artifacts_dir": str(tmp_path / "a")}
    proc = launch(env, config, tmp_path)
    label_until_done(
        api,
        forms(tmp_path / "a"),
        truth,
        done=lambda: proc.poll() is not None,
        only=lambda key: key in ("initial-1", "calibration-1", "round-001-1"),
    )
    assert proc.wait() == 1
    last = (tmp_path / "human.log").read_text().strip().splitlines()[-1]
    assert last.startswith("Unanswered: nobody answered the form round-002-1 (Round 2 of 2, 1 point) within 6 s")
    assert "run the same command again: it continues from the waiting form" in last
    run_id = json.loads(next((tmp_path / "a").glob("al-*/forms/round-002-1.json")).read_text())["flow_run_id"]
    import httpx

    state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]
    assert (state["type"], state["name"]) == ("FAILED", "Unanswered") and "round-002-1" in state["message"]

    rerun = launch(env, {**config, "label_wait_seconds": 600}, tmp_path, "rerun")
    answered = label_until_done(api, forms(tmp_path / "a"), truth, done=lambda: rerun.poll() is not None)
    assert rerun.wait() == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert answered[0] == "round-002-1"  # the sidecar of the waiting form is written again, nothing before it
    assert [e["ask"] for e in ledger(tmp_path / "a")] == ["initial", "calibration", "round-001", "round-002"]
    doc = results(tmp_path / "a")
    assert doc["run"]["restored"][:4] == ["data", "initial", "calibration", "round-01"]
    assert len(doc["active_accuracy"]) == 2


def test_an_unanswered_run_with_retries_is_not_retried_into_asking_again(prefect_server, tmp_path):
    """On Prefect 3.9 a flow run with retries that returns Failed is retried in its
    process, and a retry resets the pause keys: the form would be asked again."""
    env, api = prefect_server["env"], prefect_server["api_url"]
    config = {**TINY, "seed": 711, "rounds": 1, "label_wait_seconds": 4, "artifacts_dir": str(tmp_path / "a")}
    out = open(tmp_path / "human.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.active_learning", *cli_args({**config, "oracle": "human"}), "--retries", "2"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.wait(timeout=300) == 1
    log = (tmp_path / "human.log").read_text()
    assert log.strip().splitlines()[-1].startswith("Unanswered: nobody answered the form initial-1 "), log[-3000:]
    assert log.count("waiting for a person to label") == 1, log[-3000:]
    run_id = json.loads(next((tmp_path / "a").glob("al-*/forms/initial-1.json")).read_text())["flow_run_id"]
    import httpx

    flow_run = httpx.get(f"{api}/flow_runs/{run_id}").json()
    assert flow_run["run_count"] == 1 and (flow_run["state"]["type"], flow_run["state"]["name"]) == (
        "FAILED",
        "Unanswered",
    )


def test_the_command_line_refuses_a_human_oracle_without_a_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    proc = run_flow(env, {"oracle": "human", "artifacts_dir": str(tmp_path / "a")}, timeout=120)
    assert proc.returncode == 2
    assert "a human oracle needs a Prefect server with its UI" in proc.stderr and "make server" in proc.stderr
    assert not (tmp_path / "a").exists()
