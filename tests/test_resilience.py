"""Losing the Prefect server mid-run (runtime/resilience.py).

The watchdog's tests drive it against a stand-in HTTP server in real time (they sleep
through its grace periods: slow tier); its messages and settings are checked without
it (fast). The end-to-end ones (slow) start a real ``prefect server start`` of their
own (its own PREFECT_HOME and SQLite file, never the session's server: they kill it),
run the CLI in a subprocess and SIGKILL the server's process group once rounds are
saved: restarted on the same port, the run completes with an uninterrupted run's
numbers; left down, the CLI ends within 60 s with one line, and the same command
resumes once the server is back.
"""

import asyncio
import http.server
import logging
import os
import re
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import prefect.client.base as client_base
import pytest

from runtime import resilience
from tests.helpers import cli_args, comparable, free_port, run_flow
from tests.outage import CONFIG, clean_run, lost_scenario, restart_scenario, rounds_cached

# ---------------------------------------------------------------- the watchdog alone


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


class StandIn:
    """An HTTP server answering ``/api/health``, stoppable and restartable on its port."""

    def __init__(self):
        self.port = free_port()
        self.server = None
        self.start()

    def start(self):
        self.server = http.server.HTTPServer(("127.0.0.1", self.port), _Health)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def api_url(self):
        return f"http://127.0.0.1:{self.port}/api"


def _record(name: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, "failed to process item", None, None)


@pytest.mark.slow  # real time: sleeps through the watch's grace
def test_watch_rides_out_a_short_outage_and_quiets_delivery_noise_meanwhile():
    server = StandIn()
    lost = []
    watch = resilience.ServerWatch(server.api_url, grace=3.0, interval=0.1, on_lost=lambda s, _: lost.append(s))
    watch.start()
    events_log = logging.getLogger("prefect.events.clients")
    try:
        time.sleep(0.3)
        assert watch.down_since is None and events_log.filter(_record(events_log.name))
        server.stop()
        time.sleep(0.5)
        assert watch.down_since is not None and watch.quiet()
        assert not events_log.filter(_record(events_log.name)), "delivery noise not held back during the outage"
        assert logging.getLogger("prefect.flow_runs").filter(_record("prefect.flow_runs")), "the run's own logs pass"
        server.start()
        time.sleep(0.5)
        assert watch.down_since is None and len(watch.outages) == 1 and 0.3 < watch.outages[0] < 1.5
        assert not lost
    finally:
        watch.stop()
        server.stop()
    assert events_log.filter(_record(events_log.name)), "the filter outlived the watch"


@pytest.mark.slow  # real time: sleeps through the watch's grace
def test_watch_declares_the_server_lost_after_the_grace_not_before():
    server = StandIn()
    lost = []
    watch = resilience.ServerWatch(
        server.api_url, grace=1.5, interval=0.1, on_lost=lambda s, problem: lost.append((s, problem))
    ).start()
    try:
        time.sleep(0.3)
        server.stop()
        t0 = time.monotonic()
        time.sleep(1.0)
        assert not lost
        while not lost and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert lost and 1.5 <= lost[0][0] < 2.0 and lost[0][1] == "connection refused"
        assert 1.5 <= time.monotonic() - t0 < 2.5
    finally:
        watch.stop()


@pytest.mark.slow  # real time: sleeps through the watch's grace
def test_a_busy_server_gets_longer_than_an_unreachable_one():
    """Connections accepted, no answer (a server busy catching up): not lost after
    ``grace``, only after ``busy_grace``."""
    listener = socket.create_server(("127.0.0.1", 0))  # never accepts: the kernel queues connections
    port = listener.getsockname()[1]
    lost = []
    watch = resilience.ServerWatch(
        f"http://127.0.0.1:{port}/api",
        grace=0.5,
        busy_grace=2.5,
        interval=0.05,
        timeout=0.2,
        on_lost=lambda s, problem: lost.append((s, problem)),
    ).start()
    t0 = time.monotonic()
    try:
        time.sleep(1.5)
        assert not lost and watch.down_since is not None and watch.unreachable_since is None
        while not lost and time.monotonic() - t0 < 6:
            time.sleep(0.05)
        assert lost and lost[0][1] == "no answer within 0.2 s"
        assert 2.5 <= time.monotonic() - t0 < 3.5
    finally:
        watch.stop()
        listener.close()


@pytest.mark.slow  # real time: sleeps through the watch's grace
def test_a_retrying_call_wakes_when_the_server_answers_again():
    server = StandIn()
    watch = resilience.ServerWatch(server.api_url, grace=10.0, interval=0.1, on_lost=print).start()
    try:
        t0 = time.monotonic()
        watch.sleep(0.3)  # no outage: a plain sleep
        assert time.monotonic() - t0 >= 0.3
        server.stop()
        threading.Timer(0.6, server.start).start()
        t0 = time.monotonic()
        with resilience._retries_wake_on_recovery(watch):
            client_base.time.sleep(8.0)  # what Prefect's sync client calls between retries
            assert client_base.time.monotonic() > 0  # the rest of the module is the real one
        assert 0.5 < time.monotonic() - t0 < 2.0
        assert client_base.time is time, "the client's module was not restored"
        server.stop()  # the async client's sleep (log and event workers) wakes the same way
        threading.Timer(0.6, server.start).start()
        t0 = time.monotonic()
        asyncio.run(watch.asleep(8.0))
        assert 0.5 < time.monotonic() - t0 < 2.0
    finally:
        watch.stop()
        server.stop()


@pytest.mark.slow  # real time: sleeps through the watch's grace
def test_a_client_made_during_an_outage_retries_a_refused_connection():
    """Prefect's client retries a refused connection only once it has connected (a
    fresh one fails at once); under the guard every client counts as connected."""
    server = StandIn()
    url = server.api_url
    watch = resilience.ServerWatch(url, grace=10.0, interval=0.1, on_lost=print).start()
    try:
        server.stop()
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):
            client_base.PrefectHttpxSyncClient(base_url=url).get("/health")
        threading.Timer(0.6, server.start).start()
        t0 = time.monotonic()
        with resilience._retries_wake_on_recovery(watch), resilience._connect_errors_retried():
            assert client_base.PrefectHttpxSyncClient(base_url=url).get("/health").status_code == 200
        assert 0.5 < time.monotonic() - t0 < 3.0
        assert not client_base.PrefectHttpxSyncClient(base_url=url)._has_connected, "not restored"
    finally:
        watch.stop()
        server.stop()


def test_client_retries_outlast_the_grace():
    """A blocking API call must still be retrying when the watchdog decides, with
    the worst jitter (-20 % on every back-off)."""
    for grace in (5, 20, 40, 60, 300, 3600):
        n = resilience._retries_for(grace)
        assert 0.8 * sum(2**k for k in range(1, n + 1)) > grace + 3
    assert resilience._retries_for(resilience.DEFAULT_GRACE_SECONDS) <= 5, "Prefect's default already does it"


def test_lost_message_names_the_server_the_saved_rounds_and_the_command(tmp_path):
    folder = tmp_path / "al-abc"
    command = resilience.resume_command(["--rounds", "40", "--artifacts-dir", "/data/my runs"])
    assert command.endswith("-m flows.active_learning --rounds 40 --artifacts-dir '/data/my runs'")
    empty = resilience.lost_message("lost the Prefect server at http://h:1/api", folder, command, rounds=40)
    assert "no round of 40 finished yet" in empty and str(folder) in empty
    (folder / "rounds").mkdir(parents=True)
    for r in (1, 2, 3, 5):
        (folder / "rounds" / f"round-{r:03d}.joblib").write_bytes(b"x")
    line = resilience.lost_message("lost the Prefect server at http://h:1/api", folder, command, rounds=40)
    assert "\n" not in line
    assert line.startswith("error: lost the Prefect server at http://h:1/api;")
    assert f"rounds 1-3 of 40 are saved in {folder};" in line
    assert line.endswith(f"resume with: {command}")


def test_grace_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(resilience.GRACE_ENV, raising=False)
    assert resilience.grace_seconds() == resilience.DEFAULT_GRACE_SECONDS
    monkeypatch.setenv(resilience.GRACE_ENV, "25")
    assert resilience.grace_seconds() == 25
    for bad in ("soon", "1", "99999"):
        monkeypatch.setenv(resilience.GRACE_ENV, bad)
        with pytest.raises(ValueError, match=resilience.GRACE_ENV):
            resilience.grace_seconds()


def test_deployment_watch_is_a_no_op_outside_a_deployment_run(tmp_path):
    assert resilience.watch_deployment_run(tmp_path) is None  # no flow run at all


# ---------------------------------------------------------------- real server, real CLI

# The benchmark's configuration with fewer rounds: the loop still lasts ~25 s on 2
# cores, longer than the outage, so rounds run after the server is back.
SLOW_CONFIG = {**CONFIG, "rounds": 30}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The configuration run once without interruption, on a server of its own."""
    return clean_run(tmp_path_factory.mktemp("uninterrupted"), SLOW_CONFIG)


def _clock(line: str) -> float:
    """Seconds since midnight of a Prefect console line (``HH:MM:SS.mmm | ...``)."""
    hours, minutes, seconds = line.split(" | ", 1)[0].split(":")
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def _after_last_recovery(stderr: str) -> float:
    """Seconds from the watch's last "answers again" to the run's next log line."""
    lines = stderr.splitlines()
    back = max(i for i, line in enumerate(lines) if "answers again after" in line)
    after = next(line for line in lines[back + 1 :] if re.search(r" \| (Flow|Task) run '", line))
    return (_clock(after) - _clock(lines[back])) % 86400


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.slow
def test_server_restarted_mid_run_the_run_completes_with_identical_results(uninterrupted, tmp_path):
    run = restart_scenario(tmp_path, SLOW_CONFIG, outage=12, kill_after_round=3)
    print(
        f"\nrestart: server down {run['server_down_seconds']:.1f} s, {run['rounds_saved_while_down']} rounds "
        f"saved meanwhile, exit {run['exit_after_server_back_seconds']:.1f} s after its return, run "
        f"{run['seconds']:.1f} s"
    )
    assert run["returncode"] == 0, _tail(run["stderr"])
    assert run["server_down_seconds"] >= 12 and run["rounds_saved_at_kill"] < SLOW_CONFIG["rounds"]
    # Rounds report through Prefect's event stream, which buffers while the server is
    # down, so the loop goes on; what blocks (a subflow's end, the flow run's state)
    # goes through as soon as the watch sees the server answer, not at the end of
    # Prefect's back-off (up to 16 s more). (Measured twice in ~10 restarts: the
    # restarted SQLite server answered, then accepted connections without answering for
    # ~50 s, "database is locked": the watch's last "answers again" is the moment to
    # measure from.)
    assert _after_last_recovery(run["stderr"]) < 8, _tail(run["stderr"])
    assert run["results"] is not None and comparable(run["results"]) == comparable(uninterrupted["results"])
    assert "Traceback" not in run["stderr"], _tail(run["stderr"])
    assert "failed to process item" not in run["stderr"], "Prefect's event dumps were not held back"
    assert f"The Prefect server at {run['api_url']} answers again after" in run["stderr"]


@pytest.mark.slow
def test_server_lost_for_good_one_line_within_60_s_and_the_same_command_resumes(uninterrupted, tmp_path):
    run = lost_scenario(tmp_path, SLOW_CONFIG, kill_after_round=3)
    print(f"\nlost: exit {run['exit_after_kill_seconds']:.1f} s after the kill, resume {run['resume_seconds']:.1f} s")
    assert run["returncode"] == resilience.EXIT_SERVER_LOST, _tail(run["stderr"])
    assert run["exit_after_kill_seconds"] < 60
    last = run["stderr_last_line"]
    lost = rf"error: lost the Prefect server at {re.escape(run['api_url'])} \(connection refused for \d+ s\); "
    assert re.match(lost, last), _tail(run["stderr"])
    assert f"rounds 1-{run['rounds_saved']} of {SLOW_CONFIG['rounds']} are saved in {run['folder']};" in last
    assert last.endswith(f"resume with: {run['command']}")
    assert "Traceback" not in run["stderr"] and "failed to process item" not in run["stderr"]
    # besides the run's own INFO lines, only the watch's warning and the final line
    extra = [line for line in run["stderr"].splitlines() if not re.match(r"[\d:.]+ \| INFO {4}\| ", line)]
    assert len(extra) <= 4, "\n".join(extra[:20])

    assert run["resume_returncode"] == 0, _tail(run["resume_stderr"])
    assert rounds_cached(run["results"]) >= run["rounds_saved"] >= 3
    assert comparable(run["results"]) == comparable(uninterrupted["results"])


@pytest.mark.slow
def test_unreachable_server_at_the_start_is_one_line_and_nothing_runs(tmp_path):
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    config = {"rounds": 2, "grid_size": 20, "artifacts_dir": str(tmp_path)}
    args = cli_args(config)
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "home")}
    t0 = time.monotonic()
    proc = run_flow(env, config, timeout=120)
    assert proc.returncode == resilience.EXIT_SERVER_LOST, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot reach the Prefect server at {api} (connection refused);"), proc.stderr[
        -3000:
    ]
    assert last.endswith(shlex.join([sys.executable, "-m", "flows.active_learning", *args]))
    assert "Traceback" not in proc.stderr
    assert not list(Path(tmp_path).glob("al-*/rounds/*")), "a round ran without a server"
    print(f"\nunreachable at start: exit after {time.monotonic() - t0:.1f} s")
