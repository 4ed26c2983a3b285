"""A run that outlives a short restart of its Prefect server, and ends cleanly when
the server is gone.

What Prefect does when the API disappears in the middle of a flow run (read in the
source of 3.8.8, unchanged in 3.9.1; measured here):

- Task runs are created client-side; their states, and flow-run heartbeats, are
  *events*, sent over a websocket by a background worker (``EventsWorker``). An event
  that cannot be sent costs ~7 s (11 reconnection attempts), then the worker logs a
  warning and an error that prints the whole event. The event is kept and sent again
  after the next successful reconnection, so nothing is lost if the server returns.
- Logs are sent in batches by another worker (``APILogWorker``) through Prefect's
  HTTP client.
- Flow-run states (the run's and the passive subflow's), subflow creation and
  artifacts (the report; the progress bar, updated from a thread of its own so the
  rounds do not wait for it) are *blocking* HTTP calls. Prefect's client retries a refused connection (only on a client
  that has connected once, which the run's has) ``PREFECT_CLIENT_MAX_RETRIES`` times
  (default 5) after 2, 4, 8, 16, 32 s (+-20 % jitter): a blocking call waits out an
  outage of about a minute, then raises ``httpx.ConnectError``. The flow engine then
  tries to report the failure, which waits another minute.
- At exit Prefect drains both workers (``threading._register_atexit``): with the
  server gone, every queued event costs ~7 s again. Measured before this module
  (``benchmarks/lost_server.py``'s configuration, server killed after round 6): the
  run raised ``ConnectError`` 67 s after the kill and exited 230 s after it, with 403
  lines on stderr (8 tracebacks, event dumps).

So a short restart needs little more than the client's retries, which this module
makes sure outlast the grace period below (:func:`_retries_for`). It adds
:class:`ServerWatch`, a thread that asks the server's ``/health`` every second:

- While the server does not answer, Prefect's delivery workers are kept quiet (one
  warning instead of event dumps; one line when the server is back), and a retrying
  client call wakes up as soon as the server answers again instead of finishing its
  back-off.
- When it cannot be reached for ``BAL_SERVER_GRACE_SECONDS`` (default 38; a server
  that accepts connections but does not answer gets 300 s) the server is lost: one line
  (which server, where the finished rounds are, the command that resumes), and the
  process ends at once with exit code 75 (``EX_TEMPFAIL``), skipping Prefect's
  exit-time flushing to a server that is not there.

Ending the process from the watchdog is as safe as ``kill -9``, which the project
already survives at any moment: stage files are written to a temporary file and
renamed, and a half-written Prefect result is treated as a cache miss (the stage is
recomputed, with identical numbers). The same command then resumes from the saved
rounds; it needs the server only for the UI, not for the cache.

Prefect has no public hook for waking a client's retry early, for retrying a refused
connection on a new client, for running before its exit-time flush or for skipping
it: those uses of its internals are in ``runtime/prefect_internals.py``.
"""

import base64
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from runtime import prefect_internals
from runtime.prefect_internals import DELIVERY_LOGGERS

EXIT_SERVER_LOST = 75  # EX_TEMPFAIL (sysexits.h): temporary failure, try again later
GRACE_ENV = "BAL_SERVER_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 38.0  # the run ends about 1.3 s after it: within 40 s of the loss (measured 41.3 s at 40)
PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 5.0  # /health does no work: slower than this, the server is busy
BUSY_GRACE_SECONDS = 300.0  # a server that accepts connections but does not answer
START_CHECK_SECONDS = 5.0  # at the start, the server gets this long to answer once
ANNOUNCE_AFTER_SECONDS = 3.0  # a warning only for an outage, not for one slow answer
# After the server is back, delivery attempts that started during the outage may
# still fail for a few seconds: their noise stays hidden that long.
QUIET_AFTER_RECOVERY_SECONDS = 15.0

log = logging.getLogger("prefect.resilience")


def grace_seconds() -> float:
    """How long the server may be unreachable before the run gives up on it."""
    value = os.environ.get(GRACE_ENV)
    if not value:
        return DEFAULT_GRACE_SECONDS
    try:
        grace = float(value)
    except ValueError:
        raise ValueError(f"{GRACE_ENV} must be a number of seconds (got {value!r})") from None
    if not 5 <= grace <= 3600:
        raise ValueError(f"{GRACE_ENV} must be between 5 and 3600 seconds (got {value!r})")
    return grace


def _retries_for(grace: float) -> int:
    """The fewest client retries whose back-off (2 + 4 + ... + 2^n s, 20 % jitter
    down) outlasts ``grace`` plus the watch's detection lag (one interval, one probe):
    a blocking call to an unreachable server must still be waiting when the watch
    decides, or it fails the run first, with tracebacks. (Against a busy server each
    attempt waits out PREFECT_API_REQUEST_TIMEOUT, 60 s by default: six attempts
    outlast BUSY_GRACE_SECONDS.)"""
    n = 1
    while 0.8 * (2 ** (n + 1) - 2) <= grace + PROBE_INTERVAL_SECONDS + PROBE_TIMEOUT_SECONDS:
        n += 1
    return n


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that started this process (the one that resumes the run)."""
    if argv is None and getattr(sys, "orig_argv", None):
        return shlex.join(sys.orig_argv)
    args = sys.argv[1:] if argv is None else argv
    return shlex.join([sys.executable, "-m", "flows.active_learning", *args])


def saved_rounds(folder: Path) -> int:
    """Consecutive round files from round 1."""
    from store.layout import Workspace

    workspace, r = Workspace(Path(folder)), 0
    while workspace.round_file(r + 1).exists():
        r += 1
    return r


def lost_message(what: str, folder: Path, command: str, *, rounds: int | None = None) -> str:
    """The one line a user reads when the run ends for want of its server.

    ``what`` says what happened to which server ("lost the Prefect server at ...").
    """
    done = saved_rounds(folder)
    of = f" of {rounds}" if rounds is not None else ""
    if done:
        saved = f"rounds 1-{done}{of} are saved in {folder}"
    else:
        saved = f"no round{of} finished yet (finished stages are saved in {folder})"
    return f"error: {what}; {saved}; once the server is back, resume with: {command}"


class ServerWatch:
    """Polls ``<api>/health`` from a daemon thread; calls ``on_lost`` once the server
    is lost, and hides Prefect's delivery noise while it does not answer.

    A probe finds the server in one of three states:

    - *answers*: any HTTP answer below 500 (an auth-protected or Cloud API may refuse
      the probe and still be there);
    - *unreachable*: the connection is refused or cannot be made, it breaks without an
      answer, or a 5xx (a proxy in front of a dead server): the server is down. Lost
      after ``grace`` seconds of this;
    - *busy*: the connection is accepted but no answer comes within 5 s. The process
      is there (measured once after a restart: a server catching up on re-sent events,
      SQLite "database is locked", no answer for 40+ s) and may catch up, so this does
      not count towards ``grace``; lost only after ``busy_grace`` seconds without an
      answer.
    """

    def __init__(
        self,
        api_url: str,
        *,
        grace: float,
        on_lost: Callable[[float, str], None],
        interval: float = PROBE_INTERVAL_SECONDS,
        timeout: float = PROBE_TIMEOUT_SECONDS,
        busy_grace: float = BUSY_GRACE_SECONDS,
    ):
        self.api_url = api_url.rstrip("/")
        self.grace = grace
        self.busy_grace = max(busy_grace, grace)
        self.interval = interval
        self.timeout = timeout
        self.on_lost = on_lost
        self.down_since: float | None = None  # no answer since (unreachable or busy)
        self.unreachable_since: float | None = None  # unreachable, not even busy, since
        self.last_problem = ""  # what the last failed probe saw
        self.back_at: float | None = None
        self.outages: list[float] = []  # seconds each finished outage lasted
        self._back = threading.Condition()  # notified when the server answers again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bal-server-watch", daemon=True)
        self._client = httpx.Client(timeout=timeout, headers=_auth_headers())
        self._filter = _QuietFilter(self)
        self._raise_exceptions = logging.raiseExceptions

    def probe(self) -> str:
        """``answers``, ``busy`` or ``unreachable`` (what it saw in ``last_problem``)."""
        try:
            status = self._client.get(f"{self.api_url}/health").status_code
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            self.last_problem = f"no answer within {self.timeout:g} s"
            return "busy"
        except httpx.ConnectError as e:
            self.last_problem = "connection refused" if "refused" in str(e).lower() else f"cannot connect: {e}"
            return "unreachable"
        except httpx.HTTPError as e:
            self.last_problem = type(e).__name__
            return "unreachable"
        if status >= 500:
            self.last_problem = f"HTTP {status}"
            return "unreachable"
        return "answers"

    def quiet(self) -> bool:
        """Whether Prefect's delivery workers are to be kept quiet now."""
        if self.down_since is not None:
            return True
        return self.back_at is not None and time.monotonic() - self.back_at < QUIET_AFTER_RECOVERY_SECONDS

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` that ends early when the server answers again after an outage."""
        with self._back:
            outages = len(self.outages)
            self._back.wait_for(lambda: len(self.outages) != outages, timeout=seconds)

    async def asleep(self, seconds: float) -> None:
        """``anyio.sleep`` that ends (within 0.2 s) when the server answers again."""
        import anyio

        outages, deadline = len(self.outages), time.monotonic() + seconds
        while len(self.outages) == outages and (left := deadline - time.monotonic()) > 0:
            await anyio.sleep(min(0.2, left))

    def start(self) -> "ServerWatch":
        for name in DELIVERY_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (``probe`` still works: the exit-time check uses it)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout + self.interval)
        for name in DELIVERY_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        logging.raiseExceptions = self._raise_exceptions

    def _loop(self) -> None:
        announced = False
        while not self._stop.wait(self.interval):
            state = self.probe()
            now = time.monotonic()
            if state == "answers":
                if self.down_since is not None:
                    with self._back:
                        self.outages.append(now - self.down_since)
                        self.down_since = self.unreachable_since = None
                        self.back_at = now
                        self._back.notify_all()
                    logging.raiseExceptions = self._raise_exceptions
                    if announced:
                        log.warning(
                            "The Prefect server at %s answers again after %.0f s", self.api_url, self.outages[-1]
                        )
                    announced = False
                continue
            if self.down_since is None:
                self.down_since = now
                # APILogWorker reports a failed batch on stderr itself unless this is off
                logging.raiseExceptions = False
            if state == "busy":
                self.unreachable_since = None
            elif self.unreachable_since is None:
                self.unreachable_since = now
            if self.unreachable_since is not None and now - self.unreachable_since >= self.grace:
                self.on_lost(now - self.unreachable_since, self.last_problem)
                return
            if now - self.down_since >= self.busy_grace:
                self.on_lost(now - self.down_since, self.last_problem)
                return
            if not announced and now - self.down_since >= ANNOUNCE_AFTER_SECONDS:  # not for one missed probe
                announced = True
                limit = self.busy_grace if state == "busy" else self.grace
                log.warning(
                    "The Prefect server at %s does not answer (%s); the run goes on and waits up to %.0f s for it",
                    self.api_url,
                    self.last_problem,
                    limit,
                )


class _QuietFilter(logging.Filter):
    def __init__(self, watch: ServerWatch):
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.watch.quiet()


def _auth_headers() -> dict:
    """The basic-auth header Prefect's client sends, if the server wants one."""
    from prefect.settings import get_current_settings

    auth = get_current_settings().api.auth_string
    if auth is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.get_secret_value().encode()).decode()}


_exiting = threading.Lock()
_watching: "ServerWatch | None" = None  # the watch of this process, if any
_process_guard = ExitStack()  # a deployment run's guard: open until the process ends


def _exit_now(message: str, code: int = EXIT_SERVER_LOST) -> None:
    """Print ``message`` as the last line and end the process without exit handlers
    (they would flush events and logs to a server that is gone). Only the first
    caller prints; a second one (another thread) just waits for the end."""
    if not _exiting.acquire(blocking=False):
        time.sleep(3600)  # the first caller is ending the process
    logging.disable(logging.CRITICAL)  # nothing else is printed after the message
    try:
        sys.stdout.flush()
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    finally:
        prefect_internals.exit_without_flush(code)


def _set_watching(watch: "ServerWatch | None") -> None:
    global _watching
    _watching = watch


def _reachable_within(watch: "ServerWatch", seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while watch.probe() == "unreachable":
        if time.monotonic() >= deadline:
            return False
        time.sleep(watch.interval)
    return True


def _skip_flush_if_gone(watch: "ServerWatch", message: str) -> None:
    """At interpreter exit, before Prefect drains its event and log workers (they
    were registered earlier, and these hooks run last-registered first): if the server
    does not answer, say so and exit with status 0 instead of waiting on it."""
    if watch.probe() == "unreachable":
        _exit_now(message, code=0)


@contextmanager
def _retries_wake_on_recovery(watch: ServerWatch) -> Iterator[None]:
    """Prefect's client sleeps 2, 4, 8, 16, 32 s between retries (the base is fixed):
    a call that failed at the kill and retried after 14 s waits until 30 s, however soon
    the server is back (measured: 17 s lost after an 18 s outage). While this is in
    force, a retry's sleep ends as soon as the watch sees the server answer again."""
    with prefect_internals.client_retry_sleeps(watch.sleep, watch.asleep):
        yield


@contextmanager
def _connect_errors_retried() -> Iterator[None]:
    """Prefect's client retries a refused connection only on a client instance that has
    connected before (to fail fast on a wrong URL). Clients made during an outage then
    fail at once: measured, the passive subflow's tracking task run, created on a fresh
    client after the kill, failed the run although the server was back 15 s later. The
    guard has checked the URL at the start, so clients made while it holds count as
    connected: a refused connection is an outage, retried like any other."""
    with prefect_internals.clients_count_as_connected():
        yield


@contextmanager
def guard(
    folder: Path, *, rounds: int | None = None, argv: list[str] | None = None, resume: str | None = None
) -> Iterator[ServerWatch | None]:
    """Watch the configured Prefect API while the block runs (see the module docstring).

    On entry, a server that cannot be reached within 5 s ends the process with the one
    line. While the block runs, a server that cannot be reached for the grace period
    (or accepts connections and does not answer for 300 s) ends it the same way, and so
    does an exception while the server does not answer. Meanwhile client calls retry
    through the outage (:func:`_connect_errors_retried`, :func:`_retries_wake_on_recovery`).
    After a normal end, a server gone by the time the process exits does not hold the
    exit up (it exits 0 with a warning line).

    Args:
        folder: The experiment folder (named in the message: where the rounds are).
        rounds: The configured number of rounds, for the message.
        argv: The command's arguments if not ``sys.argv`` (for the resume command).
        resume: What resumes the run, if not this process's command line.

    Yields:
        The watch, or None when no API URL is configured (nothing to watch).
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    api_url = PREFECT_API_URL.value()
    if not api_url:
        yield None
        return
    grace = grace_seconds()
    command = resume or resume_command(argv)
    server = f"the Prefect server at {api_url}"

    def lost(seconds: float | None, problem: str = "") -> None:
        detail = "it does not answer" if seconds is None else f"{problem or 'no answer'} for {seconds:.0f} s"
        _exit_now(lost_message(f"lost {server} ({detail})", folder, command, rounds=rounds))

    watch = ServerWatch(api_url, grace=grace, on_lost=lost)
    if not _reachable_within(watch, START_CHECK_SECONDS):
        what = f"cannot reach {server} ({watch.last_problem})"
        _exit_now(lost_message(what, folder, command, rounds=rounds))
    with ExitStack() as stack:
        needed = _retries_for(grace)
        if PREFECT_CLIENT_MAX_RETRIES.value() < needed:
            stack.enter_context(temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: needed}))
        watch.start()
        stack.callback(watch.stop)
        stack.enter_context(_retries_wake_on_recovery(watch))
        stack.enter_context(_connect_errors_retried())
        _set_watching(watch)
        stack.callback(_set_watching, None)
        try:
            yield watch
        except Exception:
            # The run failed. If the server does not answer, that is why (a blocking
            # call gave up), and a normal exit would wait on flushing to it.
            down_since = watch.down_since
            if down_since is not None:
                lost(time.monotonic() - down_since, watch.last_problem)
            if watch.probe() != "answers":
                lost(None)
            raise
    prefect_internals.before_exit_flush(
        _skip_flush_if_gone,
        watch,
        f"warning: {server} does not answer at exit; the run is complete ({folder}), "
        "its last task states and logs are not sent",
    )


def watch_deployment_run(folder: Path, *, rounds: int | None = None) -> ServerWatch | None:
    """The guard for a flow run a worker started, for the rest of its process.

    A deployment run does not go through the CLI's ``main``: a worker starts
    ``python -m prefect.engine`` for it, which calls the flow function. Called at the
    start of the flow's body, this watches the server the same way; the message names
    ``prefect flow-run retry <id>`` as what resumes (the worker reports the run Crashed
    once it reaches the server again; the retry finds the finished stages cached).
    Does nothing outside a deployment run (the CLI has its guard) or if this process
    already has a watch.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if _watching is not None or flow_run is None or flow_run.deployment_id is None:
        return None
    return _process_guard.enter_context(guard(folder, rounds=rounds, resume=f"prefect flow-run retry {flow_run.id}"))
