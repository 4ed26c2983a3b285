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
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY
from tests.labeller import label_until_done, waiting_form
from tests.test_deployments_ui import _browser, _wait_for
from tests.test_human_oracle import forms, launch, ledger, results, truth, wait_until_waiting

pytestmark = [pytest.mark.slow, pytest.mark.server]
SHOTS = ROOT / "artifacts" / "ui"


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
        text = dialog.text
        assert f"({point[0]:.3f}, {point[1]:.3f})" in text, "the point's coordinates are not on the page"
        assert "Round 1 of 1" in text or "round 1 of 1" in text
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", selects[0])
        selects[0].click()
        option = _wait_for(
            driver,
            lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text.strip() == answer],
        )
        option[0].click()
        time.sleep(0.5)
        SHOTS.mkdir(parents=True, exist_ok=True)
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


def waiting_form_of(api: str, tmp_path: Path, key: str) -> str | None:
    found = list((tmp_path / "a").glob(f"al-*/forms/{key}.json"))
    if not found:
        return None
    return waiting_form(api, json.loads(found[0].read_text())["flow_run_id"])
