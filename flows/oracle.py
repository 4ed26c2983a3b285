"""A person as the oracle: forms in the Prefect UI, the run waiting in between.

The flow asks with :func:`ask`: it builds a form (a ``prefect.input.RunInput``
with one enum field per point, so a wrong class is refused by Prefect's schema
check before the flow sees it), whose description shows what to label and the
model's uncertainty map with the proposed points marked, and then waits:

- a deployment run (on a worker) *suspends*: the process exits and nothing is held
  while it waits; the answer reschedules the run, which replays from the top (every
  finished stage restored from the folder, every answer read from the ledger) and
  gets the answer back from the repeated suspension with the same key;
- any other run against a server *pauses*: the process polls every second.

Every answer goes to the experiment's ledger (``store.ledger``) before the flow
uses it, so a replay or a re-run never asks again for it. Keys name the form
(``round-007-1``: round 7, first form), so replays find their answers whatever
else happened in between.
"""

import json
import time
from pathlib import Path
from typing import Literal

import httpx
import pydantic
from prefect import get_run_logger
from prefect._flow_run_suspension import mark_flow_run_suspension_requested
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout, Pause
from prefect.input import RunInput
from prefect.input.actions import filter_flow_run_input
from prefect.input.run_input import keyset_from_base_key, keyset_from_paused_state
from prefect.states import Paused, Suspended
from prefect.utilities.engine import propose_state_sync

from store.files import write_text
from store.ledger import AnswerBook, FormAnswer, PointAnswer, now
from tasks.report import _data_uri

CANNOT_LABEL = "cannot label"
POLL_SECONDS = 0.25  # a paused run checks for the answer this often (one API read)
SERVER_GRACE_SECONDS = 120  # the server's own expiry of a paused run comes this much after ours


class Unanswered(Exception):
    """Nobody answered a form within the configured wait."""


class _Strict(RunInput):
    """A form that refuses unknown fields (an answer for a point that was not asked)."""

    model_config = pydantic.ConfigDict(extra="forbid")


def form_model(name: str, fields: list[tuple[str, str]], classes: list[str], *, allow_skip: bool, allow_stop: bool):
    """A RunInput with one required enum field per point (``fields``: name and
    description), plus ``stop_after_this_round`` when ``allow_stop``. Unknown fields
    are refused (``extra="forbid"``)."""
    choices = tuple(classes) + ((CANNOT_LABEL,) if allow_skip else ())
    label = Literal[choices]
    spec = {
        field: (label, pydantic.Field(..., title=field.replace("_", " ").capitalize(), description=text))
        for field, text in fields
    }
    if allow_stop:
        spec["stop_after_this_round"] = (
            bool,
            pydantic.Field(False, description="End the loop after this round (the report is written)."),
        )
    return pydantic.create_model(name, __base__=_Strict, **spec)


def how_to_continue() -> str:
    """What a person does after a wait expired, for the run's final message."""
    flow_run = get_run_context().flow_run
    if flow_run.deployment_id is not None:
        return "run the deployment again with the same parameters: it continues from the waiting form"
    return "run the same command again: it continues from the waiting form"


NO_SERVER = (
    "a human oracle needs a Prefect server with its UI, to answer the forms in: start one with `make server`, "
    "then run with PREFECT_API_URL=http://127.0.0.1:4200/api (e.g. `PREFECT_API_URL=http://127.0.0.1:4200/api "
    "make run ARGS='--oracle human'`), or deploy with `make deploy` and start the `label` deployment "
    "(`make worker`, then `.venv/bin/prefect deployment run active-learning/label`)"
)


def image_markdown(png: Path, alt: str) -> str:
    """An image for the form's description, embedded as a ``data:`` URI."""
    return f"![{alt}]({_data_uri(Path(png))})"


def _wait(form, description: str, key: str, timeout: int):
    """Suspend (a deployment's own run) or pause (anything else) until answered."""
    flow_run = get_run_context().flow_run
    model = form.with_initial_data(description=description)
    if flow_run.deployment_id is not None and flow_run.parent_task_run_id is None:
        return _suspend(model, key, timeout), "suspended"
    return _pause(model, key, timeout), "paused"


def _propose(client, proposed, model, keyset):
    """Save the form (schema and description) first, then show the run as waiting
    on it: Prefect's own pause and suspend do it the other way round, so a person
    (or a script) answering at once can be refused with "Run input schema not found".
    Returns the state the server answered with."""
    proposed.state_details.run_input_keyset = keyset
    try:
        model.save(keyset)
    except httpx.HTTPStatusError as e:  # saved by an earlier run of this flow (a replay): keep it
        if e.response.status_code != 409:
            raise
    return propose_state_sync(client=client, state=proposed, flow_run_id=get_run_context().flow_run.id)


def _pause(model, key: str, timeout: int):
    """Pause the run on a form and poll for the answer every ``POLL_SECONDS``.

    Prefect's ``pause_flow_run`` polls at whole seconds and lets the server fail
    the run when its timeout passes, with a generic message. Here the server's
    timeout is a little later than the wait, so when the wait expires the flow still
    ends the run itself, with a message that says which form is waiting and how to
    continue (see :class:`Unanswered`).
    """
    flow_run_id = get_run_context().flow_run.id
    proposed = Paused(timeout_seconds=timeout + SERVER_GRACE_SECONDS, reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    with get_client(sync_client=True) as client:
        state = _propose(client, proposed, model, keyset)
        if state.is_running():  # this form was answered before (the key has fired)
            return model.load(keyset)
        if not state.is_paused():
            raise RuntimeError(f"the run could not wait for the form {key}: the server answered {state}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state and flow_run.state.is_running():
                return model.load(keyset)
    raise FlowPauseTimeout(f"nobody answered the form {key} within {timeout} s")


def _suspend(model, key: str, timeout: int):
    """Suspend the run on a form: the process exits (``Pause``) and the answer
    reschedules the run, which replays from the top and gets here again with the
    same key: the server then refuses the suspension (the key has fired) and the
    answer is loaded. The server fails the run when ``timeout`` passes."""
    proposed = Suspended(timeout_seconds=timeout, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    with get_client(sync_client=True) as client:
        state = _propose(client, proposed, model, keyset)
    if state.is_running():
        return model.load(keyset)
    if not state.is_paused():
        raise RuntimeError(f"the run could not suspend on the form {key}: the server answered {state}")
    mark_flow_run_suspension_requested(get_run_context().flow_run.id, state)
    raise Pause(state=state)


def _write_sidecar(path: Path, key, ask, attempt, points, fields, classes) -> None:
    """The form's points with their exact coordinates, as JSON beside the folder's
    other files: for answering without the UI (a script reads the points here and
    answers through the API)."""
    content = {
        "key": key,
        "ask": ask,
        "attempt": attempt,
        "flow_run_id": str(get_run_context().flow_run.id),
        "classes": classes,
        "fields": {
            f: {"index": int(i), "point": [float(v) for v in xy]}
            for (i, xy, _), (f, _) in zip(points, fields, strict=True)
        },
    }
    write_text(path, json.dumps(content, indent=2) + "\n")


def _input_id(state_name: str, key: str) -> str | None:
    """The flow-run input the answer came in (its id), for the ledger."""
    found = filter_flow_run_input(key_prefix=keyset_from_base_key(f"{state_name}-{key}")["response"], limit=1)
    return str(found[0].id) if found else None


def ask(
    book: AnswerBook,
    *,
    ask: str,
    title: str,
    points: list[tuple[int, list[float], str]],
    classes: list[str],
    body: str,
    wait_seconds: int,
    allow_skip: bool,
    allow_stop: bool,
) -> FormAnswer:
    """Ask a person to label ``points`` (index, coordinates, text for the form) and
    record the answer in the ledger before returning it.

    Raises:
        Unanswered: nobody answered within ``wait_seconds`` (a paused run; a
            suspended run's expiry is the server's).
    """
    attempt = len(book.for_ask(ask)) + 1
    key = f"{ask}-{attempt}"
    fields = [(f"point_{n}", text) for n, (_, _, text) in enumerate(points, start=1)]
    form = form_model(f"Labels-{ask}", fields, classes, allow_skip=allow_skip, allow_stop=allow_stop)
    _write_sidecar(book.path.parent / "forms" / f"{key}.json", key, ask, attempt, points, fields, classes)
    log = get_run_logger()
    log.info("waiting for a person to label %d point(s): %s (form %s)", len(points), title, key)
    try:
        value, how = _wait(form, f"## {title}\n\n{body}", key, wait_seconds)
    except FlowPauseTimeout:
        raise Unanswered(f"nobody answered the form {key} ({title}) within {wait_seconds} s") from None
    answer = FormAnswer(
        ask=ask,
        attempt=attempt,
        points=[
            PointAnswer(index, list(map(float, xy)), None if (v := getattr(value, f)) == CANNOT_LABEL else int(v))
            for (index, xy, _), (f, _) in zip(points, fields, strict=True)
        ],
        stop=bool(getattr(value, "stop_after_this_round", False)),
        input_id=_input_id(how, key),
        answered_at=now(),
    )
    book.append(answer)
    log.info("answer recorded for %s: %s", title, answer.labels)
    return answer
