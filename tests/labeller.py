"""A scripted person: answers a human-oracle run's forms through Prefect's REST API.

It reads each waiting form's points from the sidecar the flow writes
(``<experiment folder>/forms/<key>.json``), waits until the flow run is paused or
suspended on that form, and resumes it with ``POST /api/flow_runs/{id}/resume``
and ``{"run_input": {...}}``: exactly what a person's click in the UI sends.
``answer(point) -> class`` decides the labels (the tests use the ground truth).
"""

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def waiting_form(api_url: str, flow_run_id: str) -> str | None:
    """The key of the form a flow run waits on (None if it is not waiting): paused
    under the form's key, or suspended under ``<key>-suspended``."""
    run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=60).json()
    state = run.get("state") or {}
    if state.get("type") != "PAUSED":
        return None
    return state["state_details"].get("pause_key").removesuffix("-suspended")


def resume(api_url: str, flow_run_id: str, run_input: dict, attempts: int = 5) -> httpx.Response:
    """What the UI's *Resume* button sends; retried when the server answers 5xx (its
    SQLite database can be briefly locked under load: "database is locked", 503)."""
    for attempt in range(attempts):
        response = httpx.post(f"{api_url}/flow_runs/{flow_run_id}/resume", json={"run_input": run_input}, timeout=60)
        if response.status_code < 500 or attempt == attempts - 1:
            return response
        time.sleep(0.5 * (attempt + 1))
    return response


def truthful_input(form: dict, answer: Callable) -> dict:
    """The run input answering every field of a sidecar ``form`` with ``answer``."""
    return {field: str(answer(spec["point"])) for field, spec in form["fields"].items()}


def label_until_done(
    api_url: str,
    folder_glob: Callable[[], list[Path]],
    answer: Callable,
    *,
    done: Callable[[], bool],
    timeout: float = 600,
    stop_after: int | None = None,
    only: Callable[[str], bool] = lambda key: True,
    override: Callable[[dict], dict] | None = None,
) -> list[str]:
    """Answer every form as it appears until ``done()``; returns the answered keys.

    ``folder_glob()`` lists the sidecar files of the experiment. ``stop_after``:
    tick "stop after this round" on the form of that round. ``only(key)``:
    which forms to answer (the others are left waiting). ``override(form)``: answers
    to use instead of ``answer``'s for some fields.
    """
    answered: list[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return answered
        for path in sorted(folder_glob(), key=lambda p: p.stat().st_mtime):
            form = json.loads(path.read_text())
            if form["key"] in answered or not only(form["key"]):
                continue
            if waiting_form(api_url, form["flow_run_id"]) != form["key"]:
                continue
            run_input = {**truthful_input(form, answer), **(override(form) if override else {})}
            if stop_after is not None and form["ask"] == f"round-{stop_after:03d}":
                run_input["stop_after_this_round"] = True
            response = resume(api_url, form["flow_run_id"], run_input)
            response.raise_for_status()
            if response.json()["status"] != "ACCEPT":
                raise RuntimeError(f"answer to {form['key']} refused: {response.json()['details']}")
            answered.append(form["key"])
        time.sleep(0.1)
    raise TimeoutError(f"not done within {timeout} s; answered {answered}")
