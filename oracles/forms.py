"""A person's forms in the Prefect UI, and the run waiting in between (paused or suspended).

The flow asks with :func:`ask`: it builds a form (a ``prefect.input.RunInput``
with one enum field per point, so a wrong class is refused by Prefect's schema
check before the flow sees it), whose description shows what to label and the
model's uncertainty map with the proposed points marked, and then waits:

- a deployment run (on a worker) first *pauses* for ``hold_seconds`` (a person who
  is answering gets the next form in the same process), then *suspends*
  (``prefect.flow_runs.suspend_flow_run``): the process exits and nothing is held
  while it waits; the answer reschedules the run, which replays from the top (every
  finished stage restored from the folder, every answer read from the ledger) and
  gets the answer back from the repeated suspension with the same key (see :func:`_wait`);
- any other run against a server *pauses*: the process checks for the answer ten
  times a second, and ends the run itself when the wait is over (see :func:`_pause`).

A form can only be saved once the server has accepted the pause (on Prefect 3.9 the
server deletes what was saved under the pause's keys when it accepts it), so an
answer sent the moment the run shows as paused could still find no form ("Run input
schema not found"). The form's sidecar (its points, for answering without the UI) is
therefore written once the form is saved: whoever answers when it appears is not
refused.

Every answer goes to the experiment's ledger (``store.ledger``) before the flow
uses it, so a replay or a re-run never asks again for it. Keys name the form
(``round-007-1``: round 7, first form), so replays find their answers whatever
else happened in between.
"""

import inspect
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import httpx
import pydantic
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput, keyset_from_base_key, keyset_from_paused_state
from prefect.input.actions import filter_flow_run_input, read_flow_run_input
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync

from runtime import standby
from store.files import write_text
from store.ledger import AnswerBook, FormAnswer, PointAnswer, now
from tasks.report import data_uri

CANNOT_LABEL = "cannot label"
POLL_SECONDS = 0.1  # a paused run checks for the answer this often (one light API read)
SERVER_GRACE_SECONDS = 120  # the server's own expiry of a paused run comes this much after ours


class Unanswered(Exception):
    """Nobody answered a form within the configured wait."""


class _Strict(RunInput):
    """A form that refuses unknown fields (an answer for a point that was not asked),
    and calls ``after_save`` once Prefect has saved it (schema and description)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    after_save: ClassVar[Callable[[], None] | None] = None

    @classmethod
    def save(cls, keyset, flow_run_id=None) -> None:
        super().save(keyset, flow_run_id=flow_run_id)
        if cls.after_save is not None:
            cls.after_save()


def form_model(
    name: str,
    fields: list[tuple[str, str]],
    classes: list[str],
    *,
    allow_skip: bool,
    allow_stop: bool,
    guesses: list[str | None] | None = None,
):
    """A RunInput with one enum field per point (``fields``: name and description),
    plus ``stop_after_this_round`` when ``allow_stop``. A point with a guess (the
    model's class, ``guesses``) is pre-filled with it, so one click on *Resume*
    accepts every guess; a point without one is required. Unknown fields are refused
    (``extra="forbid"``)."""
    choices = tuple(classes) + ((CANNOT_LABEL,) if allow_skip else ())
    label = Literal[choices]
    guesses = guesses or [None] * len(fields)
    spec = {}
    for n, ((field, text), guess) in enumerate(zip(fields, guesses, strict=True), start=1):
        title = f"Point {n}" + (f" (pre-filled with the model's guess: {guess})" if guess is not None else "")
        spec[field] = (label, pydantic.Field(... if guess is None else guess, title=title, description=text))
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


# Set while this process waits for a person (a form shown, not yet answered): a
# person's run warms its programs up in that idle time (flows.active_learning.warm_up).
WAITING = threading.Event()

NO_SERVER = (
    "a human oracle needs a Prefect server with its UI, to answer the forms in: start one with `make server`, "
    "then run with PREFECT_API_URL=http://127.0.0.1:4200/api (e.g. `PREFECT_API_URL=http://127.0.0.1:4200/api "
    "make run ARGS='--oracle human'`), or deploy with `make deploy` and start the `label` deployment "
    "(`make worker`, then `.venv/bin/prefect deployment run active-learning/label`)"
)


def image_markdown(png: Path, alt: str) -> str:
    """An image for the form's description, embedded as a ``data:`` URI."""
    return f"![{alt}]({data_uri(Path(png))})"


def _wait(form, describe: Callable[[], str], key: str, timeout: int, after_save: Callable[[], None], hold: int = 0):
    """Pause (any run) or, for a deployment's own run, pause ``hold`` seconds and then
    suspend, until answered; ``after_save`` runs once the form is saved. Returns the
    answer and the base key its input was saved under (``paused-<key>``,
    ``suspended-<key>-suspended``).

    ``describe()`` draws the form's description (its pictures: 0.3-0.7 s, measured):
    before the run waits, since the form must be saved as soon as the server accepts
    the wait (a person may answer the moment the run shows as waiting), and not at all
    when a replay takes back an answer given after the suspension.

    A deployment's run first *pauses* for ``hold`` seconds: its process stays, so a
    person who is answering gets the next form within a second. When nobody answered
    within ``hold``, the run leaves the pause and *suspends* (under the key
    ``<key>-suspended``): the process exits and frees the worker's slot; the answer
    reschedules the run, which replays from the top and gets the answer back from the
    repeated suspension (a key that has fired before is refused by the server and the
    answer saved under it returned). An accepted suspension raises ``Pause``
    (``suspend_flow_run``): the process ends, and the server fails the run when
    ``timeout`` passes.
    """
    flow_run = get_run_context().flow_run

    def form_with(description: str | None):
        model = form.with_initial_data(description=description)
        model.after_save = after_save
        return model

    if flow_run.deployment_id is None or flow_run.parent_task_run_id is not None:
        return _pause(form_with(describe()), key, timeout), f"paused-{key}"
    suspend_key = f"{key}-suspended"
    fired = _fired_keys(flow_run.id)
    model = form_with(None if suspend_key in fired else describe())
    if suspend_key not in fired:
        hold = min(hold, timeout)
        if key not in fired and hold > 0:
            try:
                return _pause(model, key, hold), f"paused-{key}"
            except FlowPauseTimeout:
                _leave_pause(flow_run.id)
        answered = _answer(model, keyset_from_base_key(f"paused-{key}"))
        if answered is not None:  # answered while the hold ran out
            return answered, f"paused-{key}"
        timeout = max(1, timeout - hold)
        standby.spawn(flow_run.id, inspect.getsourcefile(get_run_context().flow.fn))  # the next process, made ready
    return suspend_flow_run(wait_for_input=model, timeout=timeout, key=suspend_key), f"suspended-{suspend_key}"


def _fired_keys(flow_run_id) -> set[str]:
    """The pause and suspension keys this run has used (the server refuses them again)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).empirical_policy.pause_keys or set()


def resumed_after_suspension() -> bool:
    """Whether this run is a deployment's run started again after it suspended on a
    form (its replay takes back the answer that started it). False when the server
    cannot say: this only decides when the warm-up starts."""
    flow_run = get_run_context().flow_run
    if flow_run.deployment_id is None:
        return False
    try:
        return any(k.endswith("-suspended") for k in _fired_keys(flow_run.id))
    except httpx.HTTPError:  # PrefectHTTPStatusError is one
        return False


def _leave_pause(flow_run_id) -> None:
    """Back to Running from a pause nobody answered (a person who answers from now on
    is refused, "not paused", until the suspension's form is saved)."""
    with get_client(sync_client=True) as client:
        propose_state_sync(client=client, state=Running(), flow_run_id=flow_run_id)


def _answer(model, keyset):
    """The answer saved under ``keyset`` (None when there is none: ``RunInput.load``
    would return the form's defaults, the model's guesses, as if they were answered)."""
    if read_flow_run_input(keyset["response"]) is None:
        return None
    return model.load(keyset)


def _pause(model, key: str, timeout: int):
    """Pause the run on a form and poll for the answer every ``POLL_SECONDS``.

    This is ``prefect.flow_runs.pause_flow_run``'s sequence (propose the pause, save
    the form once it is accepted, poll), with one difference: its ``timeout`` is also
    the server's, and the server replaces any state proposed after it with its own
    "The flow was ... and never resumed" (measured on 3.9.1: the run's ``Unanswered``
    message, which names the waiting form and says how to continue, was lost). Here
    the server's timeout is a little later than the wait, so when the wait expires
    the flow still ends the run itself (see :class:`Unanswered`).

    Raises:
        FlowPauseTimeout: nobody answered within ``timeout`` seconds.
    """
    flow_run_id = get_run_context().flow_run.id
    proposed = Paused(timeout_seconds=timeout + SERVER_GRACE_SECONDS, reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=proposed, flow_run_id=flow_run_id)
        if state.is_running():  # this form was answered before (the key has fired)
            answered = _answer(model, keyset)
            if answered is None:
                raise RuntimeError(f"the form {key} was asked before in this run and its answer is not on the server")
            return answered
        if not state.is_paused():
            raise RuntimeError(f"the run could not wait for the form {key}: the server answered {state}")
        model.save(keyset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state and flow_run.state.is_running():
                return model.load(keyset)
    raise FlowPauseTimeout(f"nobody answered the form {key} within {timeout} s")


def _write_sidecar(path: Path, key, ask, attempt, points, fields, classes, guesses) -> None:
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
            f: {"index": int(i), "point": [float(v) for v in xy], "guess": guess}
            for (i, xy, _), (f, _), guess in zip(points, fields, guesses, strict=True)
        },
    }
    write_text(path, json.dumps(content, indent=2) + "\n")


def _input_id(base_key: str) -> str | None:
    """The flow-run input the answer came in (its id), for the ledger."""
    found = filter_flow_run_input(key_prefix=keyset_from_base_key(base_key)["response"], limit=1)
    return str(found[0].id) if found else None


def ask(
    book: AnswerBook,
    *,
    ask: str,
    title: str,
    points: list[tuple[int, list[float], str]],
    classes: list[str],
    body: Callable[[], str],
    wait_seconds: int,
    allow_skip: bool,
    allow_stop: bool,
    guesses: list[int | None] | None = None,
    hold_seconds: int = 0,
) -> FormAnswer:
    """Ask a person to label ``points`` (index, coordinates, text for the form) and
    record the answer in the ledger before returning it. ``body()``: the form's text
    below its title, drawn only if the form is shown. ``guesses``: the model's
    class of each point (None: no guess), pre-filled in the form; the ledger records
    whether each answer is that guess accepted or the person's own.
    ``hold_seconds``: how long a deployment's run waits paused before it suspends.

    Raises:
        Unanswered: nobody answered within ``wait_seconds`` (a paused run; a
            suspended run's expiry is the server's).
        prefect.exceptions.Pause: the run suspended (a deployment run): its
            process ends here, and the answer replays it.
    """
    attempt = len(book.for_ask(ask)) + 1
    key = f"{ask}-{attempt}"
    fields = [(f"point_{n}", text) for n, (_, _, text) in enumerate(points, start=1)]
    guesses = guesses or [None] * len(points)
    named = [None if g is None else classes[g] for g in guesses]
    form = form_model(f"Labels-{ask}", fields, classes, allow_skip=allow_skip, allow_stop=allow_stop, guesses=named)
    sidecar = book.path.parent / "forms" / f"{key}.json"
    log = get_run_logger()

    def waiting() -> None:  # the form is saved: the run now waits on it (a replay that finds its answer does not)
        _write_sidecar(sidecar, key, ask, attempt, points, fields, classes, named)
        log.info("waiting for a person to label %d point(s): %s (form %s)", len(points), title, key)
        WAITING.set()

    try:
        value, saved_under = _wait(
            form, lambda: f"## {title}\n\n{body()}", key, wait_seconds, after_save=waiting, hold=hold_seconds
        )
    except FlowPauseTimeout:
        raise Unanswered(f"nobody answered the form {key} ({title}) within {wait_seconds} s") from None
    finally:
        WAITING.clear()
    given = [None if (v := getattr(value, f)) == CANNOT_LABEL else classes.index(v) for f, _ in fields]
    answer = FormAnswer(
        ask=ask,
        attempt=attempt,
        points=[
            PointAnswer(index, list(map(float, xy)), label, guess, None if guess is None else label == guess)
            for (index, xy, _), label, guess in zip(points, given, guesses, strict=True)
        ],
        stop=bool(getattr(value, "stop_after_this_round", False)),
        input_id=_input_id(saved_under),
        answered_at=now(),
    )
    book.append(answer)
    log.info("answer recorded for %s: %s", title, describe_answer(answer, classes))
    return answer


def describe_answer(answer: FormAnswer, classes: list[str]) -> str:
    """An answer in the form's own terms, for the log: ``point_1 = 'cat' (the
    model's guess, accepted), point_2 = 'dog' (changed from 'cat')``."""
    parts = []
    for n, p in enumerate(answer.points, start=1):
        text = f"point_{n} = " + (repr(classes[p.label]) if p.label is not None else CANNOT_LABEL)
        if p.accepted_guess:
            text += " (the model's guess, accepted)"
        elif p.guess is not None:
            text += f" (changed from the model's guess {classes[p.guess]!r})"
        parts.append(text)
    return ", ".join(parts) + ("; stop after this round" if answer.stop else "")
