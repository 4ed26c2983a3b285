"""A person as the oracle, in a real browser and on a deployment with a real worker.

- Chromium (Debian's, headless) answers a waiting run's form in the UI that
  ``prefect server start`` serves by default (the new React UI, at /v2): the map
  image renders, the point's coordinates are on the page, a class is chosen in the
  form's select and submitted, and the run continues with that label.
- A ``label`` deployment run on a process worker *suspends* on each form (its process
  exits); the worker is killed while the run waits, a new worker is started, then
  the scripted labeller answers: the results equal a truth-oracle run's.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from runtime import standby
from tests.helpers import ROOT, TINY, start_worker, stop_worker
from tests.labeller import label_until_done, waiting_form
from tests.test_deployments_ui import _browser, _wait_for
from tests.test_human_oracle import forms, launch, ledger, results, truth, wait_until_waiting

pytestmark = [pytest.mark.slow, pytest.mark.server]
SHOTS = ROOT / "artifacts" / "ui"
# a session server that is busy with another test's runs can take seconds to answer
HTTP = httpx.Client(timeout=60)


@pytest.mark.browser
def test_a_person_answers_the_form_in_the_browser(prefect_server, tmp_path):
    from selenium.webdriver.common.by import By

    env, api, ui = prefect_server["env"], prefect_server["api_url"], prefect_server["ui_url"]
    config = {**TINY, "seed": 711, "rounds": 1, "artifacts_dir": str(tmp_path / "a")}
    proc = launch(env, config, tmp_path)
    driver = None
    try:
        label_until_done(
            api, forms(tmp_path / "a"), truth, done=lambda: bool(waiting_form_of(api, tmp_path, "round-001-1")),
            only=lambda key: key in ("initial-1", "calibration-1"),
        )  # fmt: skip
        run_id = wait_until_waiting(api, tmp_path / "a", "round-001-1")
        form = json.loads(next((tmp_path / "a").glob("al-*/forms/round-001-1.json")).read_text())
        point = form["fields"]["point_1"]["point"]
        answer = str(1 - truth(point) if truth(point) < 2 else 0)  # not the truth: the UI's answer must win

        driver = _browser()
        driver.set_window_size(1400, 1700)  # room for the map and the form in one screenshot
        driver.get(f"{ui}/v2/runs/flow-run/{run_id}")
        assert _wait_for(driver, lambda: "Paused" in driver.find_element(By.TAG_NAME, "body").text)
        menu = driver.find_elements(By.XPATH, "//button[normalize-space()='Open menu' or @aria-label='Open menu']")
        menu[-1].click()
        resume = _wait_for(
            driver,
            lambda: [i for i in driver.find_elements(By.CSS_SELECTOR, "[role=menuitem]") if i.text.strip() == "Resume"],
        )
        resume[0].click()
        dialog = _wait_for(driver, lambda: driver.find_element(By.CSS_SELECTOR, "[role=dialog]"))
        selects = _wait_for(driver, lambda: dialog.find_elements(By.CSS_SELECTOR, "button[aria-haspopup=listbox]"))
        widths = _wait_for(
            driver,
            lambda: [
                w
                for w in driver.execute_script(
                    "return Array.from(arguments[0].querySelectorAll('img'))"
                    ".filter(i => i.src.startsWith('data:image/png')).map(i => i.complete ? i.naturalWidth : 0)",
                    dialog,
                )
                if w > 0
            ],
        )
        assert widths, "the uncertainty map did not render in the form"
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.execute_script(
            "Array.from(arguments[0].querySelectorAll('*')).forEach(e => { e.scrollTop = 0; });", dialog
        )
        time.sleep(0.5)
        driver.save_screenshot(str(SHOTS / "label-form-map.png"))
        text = dialog.text
        assert f"({point[0]:.3f}, {point[1]:.3f})" in text, "the point's coordinates are not on the page"
        assert "Round 1 of 1" in text
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", selects[0])
        selects[0].click()
        option = _wait_for(
            driver,
            lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text.strip() == answer],
        )
        option[0].click()
        time.sleep(0.5)
        driver.save_screenshot(str(SHOTS / "label-form.png"))
        submit = [b for b in dialog.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Resume"][-1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
        submit.click()
        assert proc.wait(timeout=180) == 0, (tmp_path / "human.log").read_text()[-3000:]
    finally:
        if driver is not None:
            driver.quit()
        if proc.poll() is None:
            proc.kill()
    doc = results(tmp_path / "a")
    assert doc["chosen_labels"] == [int(answer)] and doc["label_sources"] == ["human"]
    entry = ledger(tmp_path / "a")[-1]
    assert entry["ask"] == "round-001" and entry["points"][0]["label"] == int(answer)


def _resume_dialog(driver, ui: str, run_id: str):
    """Open a paused run's *Resume* dialog in the UI as a person does (the run's page,
    its menu, *Resume*); returns the dialog once its selects are there."""
    from selenium.webdriver.common.by import By

    driver.get(f"{ui}/v2/runs/flow-run/{run_id}")
    assert _wait_for(driver, lambda: "Paused" in driver.find_element(By.TAG_NAME, "body").text)
    menu = _wait_for(
        driver,
        lambda: driver.find_elements(By.XPATH, "//button[normalize-space()='Open menu' or @aria-label='Open menu']"),
    )
    menu[-1].click()
    resume = _wait_for(
        driver,
        lambda: [i for i in driver.find_elements(By.CSS_SELECTOR, "[role=menuitem]") if i.text.strip() == "Resume"],
    )
    resume[0].click()
    dialog = _wait_for(driver, lambda: driver.find_element(By.CSS_SELECTOR, "[role=dialog]"))
    assert _wait_for(driver, lambda: dialog.find_elements(By.CSS_SELECTOR, "button[aria-haspopup=listbox]"))
    return dialog


def _rendered_images(driver, dialog) -> list[int]:
    return _wait_for(
        driver,
        lambda: [
            w
            for w in driver.execute_script(
                "return Array.from(arguments[0].querySelectorAll('img'))"
                ".filter(i => i.src.startsWith('data:image/png')).map(i => i.complete ? i.naturalWidth : 0)",
                dialog,
            )
            if w > 0
        ],
    )


@pytest.mark.browser
def test_a_person_labels_three_rounds_of_digits_by_clicking(prefect_server, tmp_path):
    """Digits, a person in Chromium: each round's Resume dialog shows the digit's
    picture and a select pre-filled with the model's guess; the answers are chosen by
    clicking (round 1: another class; round 2: the guess, accepted with one click on
    Resume; round 3: another class), never sent through the API. The run's answers
    (ledger and results) are exactly the clicked ones, with the accepted guess marked."""
    from selenium.webdriver.common.by import By

    import sources
    from alcore.config import ExperimentConfig

    env, api, ui = prefect_server["env"], prefect_server["api_url"], prefect_server["ui_url"]
    artifacts = tmp_path / "a"
    config = {"data": "digits", "seed": 5, "rounds": 3, "initial_epochs": 60, "epochs_per_round": 5,
              "artifacts_dir": str(artifacts)}  # fmt: skip
    data = sources.draw(ExperimentConfig(**config, oracle="human"))
    proc = launch(env, config, tmp_path)
    driver = None
    clicked: list[str] = []
    guesses: list[str] = []
    try:
        # the initial points through the API (the rounds are the person's clicks)
        label_until_done(
            api, forms(artifacts), lambda point: 0, done=lambda: bool(waiting_form_of(api, tmp_path, "round-001-1")),
            only=lambda key: key == "initial-1",
            override=lambda form: {f: data.classes[int(data.y_initial[spec["index"]])] for f, spec in form["fields"].items()},
        )  # fmt: skip
        driver = _browser()
        driver.set_window_size(1400, 1700)
        for r in (1, 2, 3):
            key = f"round-{r:03d}-1"
            run_id = wait_until_waiting(api, artifacts, key, timeout=180)
            form = json.loads(next(artifacts.glob(f"al-*/forms/{key}.json")).read_text())
            guess = form["fields"]["point_1"]["guess"]
            dialog = _resume_dialog(driver, ui, run_id)
            assert len(_rendered_images(driver, dialog)) >= 2, "the digit's picture and the map did not render"
            assert f"Round {r} of 3" in dialog.text and "pre-filled with the model's guess" in dialog.text
            select = dialog.find_elements(By.CSS_SELECTOR, "button[aria-haspopup=listbox]")[0]
            assert select.text.strip() == guess, (select.text, guess)  # pre-filled, shown as such
            answer = guess if r == 2 else next(c for c in data.classes if c != guess)
            if answer != guess:
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", select)
                select.click()
                option = _wait_for(
                    driver,
                    lambda a=answer: [
                        o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text.strip() == a
                    ],
                )
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", option[0])
                option[0].click()
                assert _wait_for(driver, lambda a=answer, s=select: s.text.strip() == a)
            SHOTS.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(SHOTS / f"label-digits-round-{r}.png"))
            submit = [b for b in dialog.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Resume"][-1]
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
            submit.click()
            assert _wait_for(driver, lambda k=key, i=run_id: waiting_form(api, i) != k, timeout=60), (
                "the click was not taken"
            )
            clicked.append(answer)
            guesses.append(guess)
        assert proc.wait(timeout=300) == 0, (tmp_path / "human.log").read_text()[-3000:]
    finally:
        if driver is not None:
            driver.quit()
        if proc.poll() is None:
            proc.kill()
    entries = ledger(artifacts)
    assert [e["ask"] for e in entries] == ["initial", "round-001", "round-002", "round-003"]  # no calibration form
    given = [data.classes[e["points"][0]["label"]] for e in entries[1:]]
    assert given == clicked
    assert [e["points"][0]["accepted_guess"] for e in entries[1:]] == [False, True, False]
    assert [data.classes[e["points"][0]["guess"]] for e in entries[1:]] == guesses
    doc = results(artifacts)
    assert doc["chosen_class_names"] == clicked and doc["accepted_guesses"] == [False, True, False]
    assert (
        doc["agreement_with_truth"]["rounds"]["of"] == 2 and doc["agreement_with_truth"]["rounds_accepted_guesses"] == 1
    )
    log = (tmp_path / "human.log").read_text()
    assert f"point_1 = {clicked[1]!r} (the model's guess, accepted)" in log
    assert f"point_1 = {clicked[0]!r} (changed from the model's guess {guesses[0]!r})" in log


def waiting_form_of(api: str, tmp_path: Path, key: str) -> str | None:
    found = list((tmp_path / "a").glob(f"al-*/forms/{key}.json"))
    if not found:
        return None
    return waiting_form(api, json.loads(found[0].read_text())["flow_run_id"])


PREFECT = str(Path(sys.executable).parent / "prefect")


def _prefect(env, *args):
    proc = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-g", str(os.getpgid(pid))], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found if int(p) != pid]


def test_a_label_deployment_run_suspends_and_continues_on_a_new_worker(prefect_server, tmp_path):
    """The `label` deployment on a process worker: a form waits paused for
    label_hold_seconds (answered within them, the run goes on in the same process),
    then suspends (the flow's process exits, leaving a standby process ready); an
    answer then re-runs it from the top, in the standby, restoring what is done. The worker is SIGKILLed while the run is suspended and a
    new one started; the answers (the truth's, through the API) give exactly a
    truth-oracle run's results."""
    env = {**prefect_server["env"], "BAL_PROJECT_DIR": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    api = prefect_server["api_url"]
    artifacts = tmp_path / "a"
    hold = 8
    config = {
        **TINY, "seed": 712, "rounds": 2, "oracle": "human", "label_hold_seconds": hold, "artifacts_dir": str(artifacts)
    }  # fmt: skip
    _prefect(env, "work-pool", "create", "bal-pool", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--name", "label", "--params", json.dumps({"config": config}))
    first = start_worker(env, tmp_path / "worker-1.log")
    second = None
    try:
        out = _prefect(env, "deployment", "run", "active-learning/label", "--params", json.dumps({"config": config}))
        run_id = next(w for w in out.stdout.split() if len(w) == 36 and w.count("-") == 4)
        done = lambda: HTTP.get(f"{api}/flow_runs/{run_id}").json()["state_type"] in ("COMPLETED", "FAILED", "CRASHED")  # noqa: E731
        label_until_done(api, forms(artifacts), truth, done=lambda: waiting_form(api, run_id) == "round-001-1",
                         only=lambda key: key in ("initial-1", "calibration-1"), timeout=300)  # fmt: skip
        waited_from = time.time()
        state = HTTP.get(f"{api}/flow_runs/{run_id}").json()["state"]
        assert state["name"] == "Paused"  # held: the process waits label_hold_seconds first
        while state["name"] != "Suspended" and time.time() < waited_from + 60:
            time.sleep(0.2)
            state = HTTP.get(f"{api}/flow_runs/{run_id}").json()["state"]
        assert state["name"] == "Suspended" and state["state_details"]["pause_key"] == "round-001-1-suspended"
        assert time.time() - waited_from >= hold - 1.5
        deadline = time.time() + 30
        while _children(first.pid) and time.time() < deadline:  # the flow's process exits while it waits
            time.sleep(0.5)
        assert not _children(first.pid), "the suspended run's process is still alive"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        second = start_worker(env, tmp_path / "worker-2.log")
        label_until_done(api, forms(artifacts), truth, done=done, timeout=300)
        final = HTTP.get(f"{api}/flow_runs/{run_id}").json()
        second_log = (tmp_path / "worker-2.log").read_text()
        assert final["state_type"] == "COMPLETED", second_log[-3000:]
        # the suspended run's standby, started before the answer, took it over (runtime/standby.py)
        assert f"flow run {run_id} handed to its standby" in second_log, second_log[-3000:]
        assert not standby.socket_path(run_id).exists() and not standby.is_starting(run_id)
    finally:
        for worker in (first, second):
            if worker is not None:
                stop_worker(worker)
        for dep in HTTP.post(f"{api}/deployments/filter", json={}).json():
            if dep["name"] == "label":
                HTTP.delete(f"{api}/deployments/{dep['id']}")
    states = HTTP.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}).json()
    keys = [s["state_details"]["pause_key"] for s in states if s["type"] == "PAUSED"]
    # initial, calibration: answered while held (paused); round 1 held, then suspended; round 2 answered held
    assert keys[:5] == ["initial-1", "calibration-1", "round-001-1", "round-001-1-suspended", "round-002-1"], keys
    human = results(artifacts)
    from tests.helpers import run_flow
    from tests.test_human_oracle import COMPARED

    reference = run_flow(prefect_server["env"], {**config, "oracle": "truth"})
    assert reference.returncode == 0, reference.stderr[-3000:]
    truth_doc = results(artifacts, "truth")
    same = [k for k in COMPARED if k != "passive_accuracy"]  # off by default with a person labelling
    assert {k: human[k] for k in same} == {k: truth_doc[k] for k in same}
    assert human["passive_accuracy"] is None
    assert [e["ask"] for e in ledger(artifacts)] == ["initial", "calibration", "round-001", "round-002"]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_run_handed_to_its_standby_ends_on_a_signal_to_its_launcher(prefect_server, tmp_path):
    """`make stop` (and a worker cancelling a run) sends SIGTERM to a flow run's
    process: for a run handed to its standby (runtime/standby.py) that process is the
    launcher, which passes the signal on. The run, held on its next form in the
    standby, ends Crashed; the standby exits, and so does the launcher (by the same
    signal: tests/test_standby.py)."""
    env = {**prefect_server["env"], "BAL_PROJECT_DIR": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    api = prefect_server["api_url"]
    artifacts = tmp_path / "a"
    config = {
        **TINY, "seed": 713, "rounds": 3, "oracle": "human", "label_hold_seconds": 6, "artifacts_dir": str(artifacts)
    }  # fmt: skip
    _prefect(env, "work-pool", "create", "bal-pool", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--name", "label", "--params", json.dumps({"config": config}))
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        out = _prefect(env, "deployment", "run", "active-learning/label", "--params", json.dumps({"config": config}))
        run_id = next(w for w in out.stdout.split() if len(w) == 36 and w.count("-") == 4)
        state = lambda: HTTP.get(f"{api}/flow_runs/{run_id}").json()["state"]  # noqa: E731
        label_until_done(api, forms(artifacts), truth, done=lambda: waiting_form(api, run_id) == "round-001-1",
                         only=lambda key: key in ("initial-1", "calibration-1"), timeout=300)  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and not (
            state()["name"] == "Suspended" and standby.socket_path(run_id).exists() and not _children(worker.pid)
        ):
            time.sleep(0.2)
        assert standby.socket_path(run_id).exists(), "no standby listens for the suspended run"
        label_until_done(api, forms(artifacts), truth, done=lambda: waiting_form(api, run_id) == "round-002-1",
                         only=lambda key: key == "round-001-1", timeout=120)  # fmt: skip
        log = (tmp_path / "worker.log").read_text()
        handed = re.search(rf"flow run {run_id} handed to its standby \(pid (\d+)\)", log)
        assert handed, log[-3000:]
        standby_pid = int(handed.group(1))
        (launcher,) = psutil.Process(worker.pid).children(recursive=True)
        assert launcher.pid != standby_pid and not _gone(standby_pid)
        launcher.send_signal(signal.SIGTERM)  # while the run waits, held, on round 2's form
        launcher.wait(timeout=60)  # not our child: its status is the worker's, which logs it
        deadline = time.time() + 30
        while time.time() < deadline and not (_gone(standby_pid) and state()["type"] == "CRASHED"):
            time.sleep(0.2)
        assert state()["type"] == "CRASHED", state()
        assert _gone(standby_pid)
    finally:
        stop_worker(worker)
        for dep in HTTP.post(f"{api}/deployments/filter", json={}).json():
            if dep["name"] == "label":
                HTTP.delete(f"{api}/deployments/{dep['id']}")


def test_a_custom_run_of_the_label_deployment_with_nothing_changed_is_the_cli_experiment(prefect_server, tmp_path):
    """The UI's *Custom run* sends every field of the run form with its default (the
    deployment's parameters over the schema's): started through the API with exactly
    that payload (only artifacts_dir changed, which names no experiment), the run is
    the experiment of `--oracle human` without other flags: the same folder, asking
    first for the 20 initial points (no passive form of 70)."""
    from alcore.config import ExperimentConfig
    from runtime.cli import parse_config
    from store.layout import Workspace

    env = {**prefect_server["env"], "BAL_PROJECT_DIR": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    api = prefect_server["api_url"]
    artifacts = tmp_path / "a"
    _prefect(env, "work-pool", "create", "bal-pool", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--name", "label")  # prefect.yaml's own parameters
    worker = start_worker(env, tmp_path / "worker.log")
    run_id = None
    try:
        deployment = HTTP.get(f"{api}/deployments/name/active-learning/label").json()
        schema = deployment["parameter_openapi_schema"]
        defaults = {name: spec.get("default") for name, spec in schema["properties"].items()}
        payload = {**defaults, "config": {**defaults["config"], **deployment["parameters"]["config"]}}
        assert payload["config"]["passive"] is None and payload["config"]["oracle"] == "human"
        payload["config"]["artifacts_dir"] = str(artifacts)
        run = HTTP.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={"parameters": payload})
        run_id = run.raise_for_status().json()["id"]
        deadline = time.time() + 240
        while not list(artifacts.glob("al-*/forms/initial-1.json")) and time.time() < deadline:
            time.sleep(0.5)
        sidecars = [p.name for p in artifacts.glob("al-*/forms/*.json")]
        assert sidecars == ["initial-1.json"], (sidecars, (tmp_path / "worker.log").read_text()[-3000:])
        form = json.loads(next(artifacts.glob("al-*/forms/initial-1.json")).read_text())
        assert len(form["fields"]) == 20
        cli = parse_config(["--oracle", "human", "--artifacts-dir", str(artifacts)])[0]
        assert cli == ExperimentConfig(oracle="human", artifacts_dir=str(artifacts)) and cli.passive is False
        assert next(artifacts.glob("al-*")).name == Workspace.for_config(cli).root.name
        config_file = json.loads(next(artifacts.glob("al-*/config.json")).read_text())
        assert config_file == json.loads(json.dumps(cli.model_dump()))  # passive false, as resolved
    finally:
        if run_id is not None:
            HTTP.post(f"{api}/flow_runs/{run_id}/set_state", json={"state": {"type": "CANCELLING"}, "force": True})
        stop_worker(worker)
        for dep in HTTP.post(f"{api}/deployments/filter", json={}).json():
            if dep["name"] == "label":
                HTTP.delete(f"{api}/deployments/{dep['id']}")
