"""Deployments from prefect.yaml, a schedule run by a real worker, the run graph, the UI.

One module-scoped deployment: the smoke deployment of prefect.yaml, deployed to the
session server with a 10 s interval schedule, and a process worker; the tests read
the first run the schedule created.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from alcore import strategies
from tests.helpers import ROOT, start_worker, stop_worker

pytestmark = [pytest.mark.slow, pytest.mark.server]
PREFECT = str(Path(sys.executable).parent / "prefect")
STAGES = ("acquire", "label", "retrain", "evaluate")


def _prefect(env, *args, timeout=180):
    proc = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def scheduled_run(prefect_server, tmp_path_factory):
    env = {**prefect_server["env"], "BAL_PROJECT_DIR": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    api = prefect_server["api_url"]
    out = tmp_path_factory.mktemp("scheduled")
    smoke = next(d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"] if d["name"] == "smoke")
    params = {"config": {**smoke["parameters"]["config"], "artifacts_dir": str(out)}}
    t0 = time.time()
    _prefect(env, "work-pool", "create", "bal-pool", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--name", "smoke", "--interval", "10", "--params", json.dumps(params))
    worker = start_worker(env, out / "worker.log")
    run = None
    try:
        deadline = time.time() + 420
        while time.time() < deadline:
            runs = httpx.post(
                f"{api}/flow_runs/filter",
                json={
                    "flow_runs": {
                        "tags": {"all_": ["auto-scheduled"]},
                        "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}},
                    },
                    "limit": 5,
                },
            ).json()
            if runs:
                run = runs[0]
                break
            time.sleep(2)
        elapsed = time.time() - t0
    finally:
        stop_worker(worker)
        for dep in httpx.post(f"{api}/deployments/filter", json={}).json():
            httpx.delete(f"{api}/deployments/{dep['id']}")
    assert run is not None, f"no scheduled run finished; worker log:\n{(out / 'worker.log').read_text()[-3000:]}"
    print(f"\nschedule test: deploy -> completed scheduled run in {elapsed:.1f} s")
    return {"run": run, "out": out, "api": api, "ui": prefect_server["ui_url"], "elapsed": elapsed}


def test_schedule_created_a_run_that_completed_and_wrote_results(scheduled_run):
    run = scheduled_run["run"]
    assert run["state_type"] == "COMPLETED", run["state"]
    assert "auto-scheduled" in run["tags"] and "smoke" in run["tags"]
    results = list(scheduled_run["out"].glob("al-*/results.json"))
    assert len(results) == 1
    doc = json.loads(results[0].read_text())
    # the 10 s schedule may have completed a second run (resumed from the cache) since
    writer = httpx.get(f"{scheduled_run['api']}/flow_runs/{doc['run']['flow_run_id']}").json()
    assert "auto-scheduled" in writer["tags"] and writer["deployment_id"] == run["deployment_id"]
    assert len(doc["active_accuracy"]) == 3


def test_run_graph_reads_like_the_algorithm(scheduled_run):
    graph = httpx.get(f"{scheduled_run['api']}/flow_runs/{scheduled_run['run']['id']}/graph-v2").json()
    nodes = [n[1] if isinstance(n, list) else n for n in graph["nodes"]]
    labels = {n["label"] for n in nodes}
    expected = {
        "data/generate",
        "model/initial-training",
        "model/calibrate-prior",
        "report/plots-and-artifacts",
        "passive/subflow",
    } | {f"round-{r:02d}/{s}" for r in (1, 2, 3) for s in STAGES}
    assert expected <= labels, expected - labels
    subflows = [n for n in nodes if n["kind"] == "flow-run"]
    assert len(subflows) == 1 and subflows[0]["label"].startswith("passive-baseline")
    by_label = {n["label"]: n for n in nodes}
    # the loop's order shows as dependencies: a round's retrain depends on its acquire's output chain
    parents = {p["id"] for p in by_label["round-02/acquire"]["parents"]}
    assert by_label["round-01/retrain"]["id"] in parents
    assert any(a["type"] == "progress" for a in graph["artifacts"])


def test_parameters_form_has_descriptions_defaults_and_bounds(scheduled_run):
    deployment_id = scheduled_run["run"]["deployment_id"]
    flow_run = httpx.get(f"{scheduled_run['api']}/flow_runs/{scheduled_run['run']['id']}").json()
    assert flow_run["deployment_id"] == deployment_id
    schema = httpx.get(f"{scheduled_run['api']}/flows/{flow_run['flow_id']}").json()
    assert schema["name"] == "active-learning"
    # the deployment is deleted at fixture teardown; the schema is the flow's, regenerate it
    from prefect.utilities.callables import parameter_schema

    from flows.active_learning import active_learning

    s = parameter_schema(active_learning).model_dump()
    config = s["definitions"]["ExperimentConfig"]["properties"]
    assert config["grid_size"]["minimum"] == 2 and config["grid_size"]["default"] == 100
    rate = config["learning_rate"]  # empty by default (data-dependent), bounded when given
    number = next(a for a in rate["anyOf"] if a.get("type") == "number")
    assert number["exclusiveMinimum"] == 0 and rate["default"] is None
    assert config["acquisition"]["enum"] == list(strategies.names())
    assert all(p.get("description") for p in config.values())


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing: .ci/run installs them")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    opts.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait_for(driver, predicate, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is still rendering
            pass
        time.sleep(0.5)
    return predicate()


@pytest.mark.browser
def test_ui_shows_the_run_its_tasks_and_the_rendered_summary(scheduled_run):
    from selenium.webdriver.common.by import By

    run = scheduled_run["run"]
    shots = ROOT / "artifacts" / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    driver = _browser()
    try:
        driver.get(f"{scheduled_run['ui']}/runs/flow-run/{run['id']}")
        assert _wait_for(driver, lambda: run["name"] in driver.find_element(By.TAG_NAME, "body").text)
        assert _wait_for(driver, lambda: driver.find_elements(By.TAG_NAME, "canvas")), "run graph not drawn"
        time.sleep(2)  # let the graph settle for the screenshot
        driver.save_screenshot(str(shots / "flow-run.png"))
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Completed" in body
        clicked = _wait_for(
            driver,
            lambda: driver.execute_script(
                "const t = Array.from(document.querySelectorAll('.p-tab'))"
                ".find(e => e.textContent.trim() === 'Task Runs');"
                "if (t) { t.click(); return true; } return false;"
            ),
        )
        assert clicked, "no 'Task Runs' tab on the flow run page"
        names = ["data/generate", "model/calibrate-prior", "round-03/evaluate", "report/plots-and-artifacts"]
        assert _wait_for(driver, lambda: all(n in driver.find_element(By.TAG_NAME, "body").text for n in names)), names
        driver.save_screenshot(str(shots / "flow-run-task-runs.png"))

        artifacts = httpx.post(
            f"{scheduled_run['api']}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
        ).json()
        summary = next(a for a in artifacts if a["key"].endswith("-summary"))
        driver.get(f"{scheduled_run['ui']}/artifacts/artifact/{summary['id']}")
        widths = _wait_for(
            driver,
            lambda: [
                w
                for w in driver.execute_script(
                    "return Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
                    ".map(i => i.complete ? i.naturalWidth : 0)"
                )
                if w > 0
            ],
            timeout=60,
        )
        assert widths, "the summary's embedded plots did not render"
        driver.save_screenshot(str(shots / "summary-artifact.png"))
    finally:
        driver.quit()
