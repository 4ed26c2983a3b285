"""Operating the scheduled pipeline: make server / deploy / worker / stop, for real.

Every make target runs as a user would run it (``make`` with its default shell,
/bin/sh: dash on Debian), on a free port with a temporary SERVER_HOME, so a developer's
own .prefect-server is never touched. Two servers are started:

* ``sqlite_server``: ``make server`` with the defaults (loopback, SQLite); ``make
  deploy`` and ``make worker`` run a deployment; ``make stop`` stops a worker that is
  busy with a flow run, and the server.
* ``exposed_server``: ``make server HOST=0.0.0.0 AUTH=... DB=postgres``: every API
  call without the credential gets 401, the CLI and a flow run of the project work with
  it on PostgreSQL, a plain ``prefect worker start`` (no BAL_PROJECT_DIR, started
  elsewhere) runs deployments, two overlapping runs of one deployment run one after the
  other; ``make stop`` also stops PostgreSQL.
"""

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from store import files
from tests.helpers import PREFECT, ROOT, TINY, cli_args, free_port, run_flow, start_worker, stop_worker

pytestmark = pytest.mark.slow
# The tiny flow: seconds of compute, every stage exercised.
TINIEST = {
    "rounds": 1,
    "grid_size": 10,
    "n_initial": 12,
    "n_calibration": 10,
    "initial_epochs": 20,
    "epochs_per_round": 2,
    "calibration_grid_size": 4,
    "mc_samples": 4,
}
AUTH = "ops:pa ss'w$rd#1"  # a space, quotes, a dollar and a hash: passed verbatim
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# ---------------------------------------------------------------- processes, via /proc


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the state on (state, ppid, pgrp, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def pid_from(pidfile: Path) -> int:
    return int(pidfile.read_text().split()[0])


def private_dir(prefix: str) -> Path:
    """A temporary folder other users can traverse (PostgreSQL runs as `postgres`
    when the tests run as root; pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------- make


# What could leak in from the caller (`make test HOST=...` exports HOST to the tests)
_NOT_INHERITED = (
    *("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING", "MAKEFLAGS", "MFLAGS"),
    *("AUTH", "HOST", "PORT", "DB", "SERVER_HOME", "PG_DATA", "STOP_TIMEOUT", "UI_API_URL"),
)


def make_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def make(*args: str, env: dict | None = None, timeout: float = 300, user: str | None = None):
    """``make ARGS`` in the project, as a user runs it; returns the completed process."""
    command = ["make", "--no-print-directory", "-C", str(ROOT), *args]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env=env or make_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    proc.output = proc.stdout + proc.stderr
    return proc


def make_ok(*args: str, **kwargs):
    proc = make(*args, **kwargs)
    assert proc.returncode == 0, f"make {' '.join(args)} failed ({proc.returncode}):\n{proc.output[-4000:]}"
    return proc


class _RetryingClient(httpx.Client):
    """Retries 503, as Prefect's own client does (SQLite's "database is locked" under load)."""

    def request(self, *args, **kwargs) -> httpx.Response:
        for attempt in range(6):
            response = super().request(*args, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(0.5 * 2**attempt)
        return response


class Server:
    """A server started with ``make server``; its make arguments and API client."""

    def __init__(self, home: Path, port: int, args: list[str], auth: str | None, env: dict):
        self.home, self.port, self.args, self.auth, self.env = home, port, args, auth, env
        self.api = f"http://127.0.0.1:{port}/api"
        basic = None if auth is None else httpx.BasicAuth(*auth.split(":", 1))
        self.http = _RetryingClient(base_url=self.api, auth=basic, timeout=30)

    def client_env(self, **extra: str) -> dict:
        env = {**self.env, "PREFECT_API_URL": self.api, **extra}
        if self.auth is not None:
            env["PREFECT_API_AUTH_STRING"] = self.auth
        return env

    def deployment_id(self, name: str) -> str:
        return self.http.get(f"/deployments/name/active-learning/{name}").raise_for_status().json()["id"]

    def run_deployment(self, name: str, config: dict) -> str:
        response = self.http.post(
            f"/deployments/{self.deployment_id(name)}/create_flow_run", json={"parameters": {"config": config}}
        )
        return response.raise_for_status().json()["id"]

    def flow_run(self, run_id: str) -> dict:
        return self.http.get(f"/flow_runs/{run_id}").raise_for_status().json()

    def wait_for(self, run_id: str, timeout: float = 300) -> dict:
        return wait_until(
            lambda: (run := self.flow_run(run_id))["state_type"] in TERMINAL and run,
            timeout,
            interval=1,
            what=f"flow run {run_id} to finish",
        )

    def states(self, run_id: str) -> list[str]:
        states = self.http.get("/flow_run_states/", params={"flow_run_id": run_id}).raise_for_status().json()
        return [s["name"] for s in sorted(states, key=lambda s: s["timestamp"])]


def _start_server(prefix: str, *args: str, auth: str | None = None, **env_extra: str):
    home = private_dir(prefix)
    port = free_port()
    make_args = [f"PORT={port}", f"SERVER_HOME={home}", *args]
    env = make_env(PREFECT_HOME=str(home / "client-home"), **env_extra)
    server = Server(home, port, make_args, auth, env)
    proc = make_ok("server", *make_args, *([f"AUTH={auth}"] if auth else []), env=env)
    assert f"server up: http://127.0.0.1:{port}" in proc.output, proc.output
    return server, proc


def _cleanup(server: Server) -> None:
    """Stop whatever make stop left (a test failed half-way), then delete the folder."""
    make("stop", *server.args, env=server.env)
    for pidfile in server.home.glob("*.pid"):
        try:
            os.killpg(pid_from(pidfile), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass
    server.http.close()
    shutil.rmtree(server.home, ignore_errors=True)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _needs_postgres() -> Path:
    pg_bin = _pg_bin()
    if pg_bin is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL missing: .ci/run installs postgresql and postgresql-contrib")
        pytest.skip("Debian's postgresql and postgresql-contrib are not installed")
    return pg_bin


# ---------------------------------------------------------------- make stop, without Prefect


def _refusing_process(*traps: str) -> subprocess.Popen:
    """A process group (leader and a child) that ignores the given signals."""
    trap = f"trap '' {' '.join(traps)}; " if traps else ""
    return subprocess.Popen(["sh", "-c", f"{trap}sleep 600 & {trap}sleep 600"], start_new_session=True)


def test_make_stop_escalates_to_sigkill_and_cleans_stale_pid_files(tmp_path):
    home = private_dir("bal-stop-")
    try:
        stubborn = _refusing_process("INT", "TERM")
        time.sleep(0.3)  # let the traps be set
        (home / "worker.pid").write_text(f"{stubborn.pid}\n")  # the old Makefile's format: no start time
        exited = subprocess.Popen(["true"])
        exited.wait()
        (home / "server.pid").write_text(f"{exited.pid}\n")

        t0 = time.time()
        proc = make("stop", f"SERVER_HOME={home}", "STOP_TIMEOUT=2")
        elapsed = time.time() - t0

        assert proc.returncode == 0, proc.output
        assert f"worker: still running 2 s after SIGINT (pids {stubborn.pid} " in proc.output, proc.output
        assert f"worker: stopped by SIGKILL (pid {stubborn.pid}," in proc.output, proc.output
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert (
            f"server: not running (no process of group {exited.pid} is running); removed stale pid file" in proc.output
        )
        assert "nothing left running" in proc.output
        assert not list(home.glob("*.pid"))
        assert elapsed < 15, elapsed
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_make_stop_never_signals_a_process_that_took_over_a_recorded_pid():
    home = private_dir("bal-stop-")
    bystander = _refusing_process()
    try:
        # the pid file names a live process, but one started at another time than recorded
        (home / "server.pid").write_text(f"{bystander.pid} 1\n")
        proc = make("stop", f"SERVER_HOME={home}", "STOP_TIMEOUT=2")
        assert proc.returncode == 0, proc.output
        assert f"server: not running (pid {bystander.pid} now belongs to another process)" in proc.output
        time.sleep(0.5)
        assert bystander.poll() is None, "make stop signalled a process it did not start"
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()
        shutil.rmtree(home, ignore_errors=True)


def test_make_stop_reports_a_process_it_cannot_stop():
    """`make stop` run by another user than the one who started the server: the signal
    is refused; it says so, exits non-zero and keeps the pid file."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to run `make stop` as user nobody (running as uid {os.geteuid()})")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("needs a user 'nobody' to run `make stop` as; there is none")
    readable = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-r", str(ROOT / "Makefile")])
    if readable.returncode != 0:
        pytest.skip(f"user nobody cannot read {ROOT / 'Makefile'}, so cannot run `make stop` there")
    home = private_dir("bal-stop-")
    victim = _refusing_process()
    try:
        (home / "server.pid").write_text(f"{victim.pid}\n")
        proc = make("stop", f"SERVER_HOME={home}", "STOP_TIMEOUT=2", user="nobody")
        assert proc.returncode != 0, proc.output
        assert f"server: FAILED to stop (pid {victim.pid}): cannot send SIGTERM to process group {victim.pid}" in (
            proc.output
        )
        assert "Operation not permitted" in proc.output
        assert "nothing left running" not in proc.output
        assert (home / "server.pid").exists()
        assert victim.poll() is None
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        shutil.rmtree(home, ignore_errors=True)


def test_make_server_refuses_a_non_loopback_host_without_a_credential():
    home = private_dir("bal-refuse-")
    port = free_port()
    try:
        proc = make("server", "HOST=0.0.0.0", f"PORT={port}", f"SERVER_HOME={home}")
        assert proc.returncode != 0
        assert "refusing HOST=0.0.0.0 without AUTH" in proc.output
        assert "make server HOST=0.0.0.0 AUTH=user:password" in proc.output
        assert not (home / "server.pid").exists()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_make_server_db_postgres_says_what_to_install_when_postgresql_is_missing():
    home = private_dir("bal-nopg-")
    try:
        proc = make("server", "DB=postgres", "PG_BIN=/nonexistent", f"PORT={free_port()}", f"SERVER_HOME={home}")
        assert proc.returncode != 0
        assert "PostgreSQL is not installed" in proc.output
        assert "sudo apt-get install postgresql postgresql-contrib" in proc.output
        assert not (home / "server.pid").exists() and not (home / "pg").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_make_server_db_postgres_names_a_folder_the_postgres_user_cannot_reach():
    if os.geteuid() != 0:
        pytest.skip(
            f"needs root: only root's `make server DB=postgres` runs PostgreSQL as the 'postgres' user, whose "
            f"access to the data folder this checks (running as uid {os.geteuid()})"
        )
    _needs_postgres()
    home = private_dir("bal-pgperm-")
    closed = home / "closed"
    closed.mkdir(mode=0o700)
    try:
        proc = make("server", "DB=postgres", f"PG_DATA={closed / 'pg'}", f"PORT={free_port()}", f"SERVER_HOME={home}")
        assert proc.returncode != 0
        assert f"the 'postgres' user cannot reach {closed / 'pg'}" in proc.output, proc.output
        assert not (home / "server.pid").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------- the default server


@pytest.fixture(scope="module")
def sqlite_server():
    server, _ = _start_server("bal-sqlite-")
    yield server
    _cleanup(server)


def test_make_deploy_and_make_worker_run_a_deployment(sqlite_server, tmp_path):
    server = sqlite_server
    proc = make_ok("deploy", *server.args, env=server.env)
    assert "bal-pool" in proc.output
    proc = make_ok("worker", *server.args, env=server.env | {"PREFECT_WORKER_QUERY_SECONDS": "2"})
    assert "worker: started (pid" in proc.output
    run_id = server.run_deployment("smoke", {**TINIEST, "artifacts_dir": str(tmp_path)})
    run = server.wait_for(run_id)
    assert run["state_type"] == "COMPLETED", (run["state"], (server.home / "worker.log").read_text()[-3000:])
    assert json.loads(next(tmp_path.glob("al-*/results.json")).read_text())["run"]["flow_run_id"] == run_id


def test_schedules_are_opt_in(sqlite_server):
    """make deploy creates no schedule (and removes one an earlier deploy made);
    SCHEDULES=smoke turns on the smoke deployment's hourly schedule, nothing else."""
    server = sqlite_server

    def schedules() -> dict:
        out = {}
        for name in ("nightly", "smoke", "label"):
            deployment = server.http.get(f"/deployments/name/active-learning/{name}").raise_for_status().json()
            out[name] = [s["schedule"] for s in deployment["schedules"]]
        return out

    make_ok("deploy", *server.args, env=server.env)
    assert schedules() == {"nightly": [], "smoke": [], "label": []}
    proc = make_ok("deploy", *server.args, "SCHEDULES=smoke", env=server.env)
    assert "schedule on: active-learning/smoke, every hour" in proc.output
    found = schedules()
    assert [s["interval"] for s in found["smoke"]] == [3600.0] and found["nightly"] == found["label"] == []
    make_ok("deploy", *server.args, "SCHEDULES=smoke", env=server.env)  # again: still one schedule
    assert len(schedules()["smoke"]) == 1
    make_ok("deploy", *server.args, env=server.env)
    assert schedules() == {"nightly": [], "smoke": [], "label": []}
    bad = make("deploy", *server.args, "SCHEDULES=hourly", env=server.env)
    assert bad.returncode == 2 and "SCHEDULES=hourly is not a choice" in bad.output


def test_make_stop_stops_a_busy_worker_its_flow_run_and_the_server(sqlite_server, tmp_path):
    server = sqlite_server
    if not (server.home / "worker.pid").exists():
        make_ok("worker", *server.args, env=server.env | {"PREFECT_WORKER_QUERY_SECONDS": "2"})
    worker_pid = pid_from(server.home / "worker.pid")
    server_pid = pid_from(server.home / "server.pid")
    # a run long enough to be still running when make stop comes
    run_id = server.run_deployment("smoke", {**TINY, "rounds": 400, "artifacts_dir": str(tmp_path)})
    wait_until(lambda: server.flow_run(run_id)["state_type"] == "RUNNING", 120, what="the run to start")
    flow_processes = descendants(worker_pid)
    assert flow_processes, "the worker runs the flow in a child process"

    t0 = time.time()
    proc = make("stop", *server.args, env=server.env)
    elapsed = time.time() - t0

    assert proc.returncode == 0, proc.output
    assert "worker: its children (process groups " in proc.output and "ended on SIGTERM" in proc.output, proc.output
    assert f"worker: stopped (pid {worker_pid}, SIGINT," in proc.output, proc.output
    assert f"server: stopped (pid {server_pid}, SIGTERM," in proc.output, proc.output
    assert "SIGKILL" not in proc.output, proc.output
    assert proc.output.rstrip().endswith("nothing left running")
    left = [pid for pid in (worker_pid, server_pid, *flow_processes) if alive(pid)]
    assert not left, f"still alive after make stop: {left}"
    assert not (server.home / "worker.pid").exists() and not (server.home / "server.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.api}/health", timeout=2)
    print(f"\nmake stop: busy worker, its flow run and the server gone in {elapsed:.1f} s")

    again = make("stop", *server.args, env=server.env)
    assert again.returncode == 0
    assert "worker: not running (no pid file)" in again.output
    assert "server: not running (no pid file)" in again.output

    # The interrupted run recorded its end, so it holds no concurrency slot after a restart
    make_ok("server", *server.args, env=server.env)
    run = server.flow_run(run_id)
    assert run["state_type"] == "CRASHED", run["state"]
    assert "termination signal" in run["state"]["message"]
    deployment = server.http.get(f"/deployments/{server.deployment_id('smoke')}").json()
    assert deployment["global_concurrency_limit"]["active_slots"] == 0


# ---------------------------------------------------------------- exposed, authenticated, on PostgreSQL


@pytest.fixture(scope="module")
def exposed_server():
    _needs_postgres()
    # the slot re-check is 30 s by default: 2 s keeps the overlap test short
    server, proc = _start_server(
        "bal-pg-",
        "HOST=0.0.0.0",
        "DB=postgres",
        auth=AUTH,
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2",
    )
    assert "listening on 0.0.0.0" in proc.output and "PostgreSQL in" in proc.output, proc.output
    yield server
    _cleanup(server)


@pytest.fixture(scope="module")
def plain_worker(exposed_server):
    """``prefect worker start --pool bal-pool`` as Prefect's docs start it: from another
    folder, no BAL_PROJECT_DIR, only the API's address and credential."""
    server = exposed_server
    make_ok("deploy", *server.args, env=server.env)  # the credential comes from make server's record
    workdir = private_dir("bal-plain-worker-")
    env = server.client_env(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_HOME=str(workdir / "home"))
    env.pop("BAL_PROJECT_DIR", None)
    worker = start_worker(env, workdir / "worker.log", cwd=workdir)
    yield {"process": worker, "log": workdir / "worker.log"}
    stop_worker(worker)
    shutil.rmtree(workdir, ignore_errors=True)


def _listening_on_all_addresses(port: int) -> bool:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and local == f"00000000:{port:04X}":
            return True
    return False


def _websocket_refused(url: str, token: str | None) -> bool:
    """Whether the server closes a websocket after Prefect's auth message carrying
    ``token`` (without a token: no auth message at all, and no 'prefect' subprotocol)."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, subprotocols=["prefect"] if token else None, open_timeout=10) as ws:
            if token:
                ws.send(json.dumps({"type": "auth", "token": token}))
            ws.recv(timeout=3)  # a refused socket is closed; an accepted one stays quiet
    except (ConnectionClosed, InvalidStatus):
        return True
    except TimeoutError:
        return False
    return False


def test_exposed_server_answers_nothing_but_health_without_the_credential(exposed_server):
    server = exposed_server
    assert _listening_on_all_addresses(server.port), "HOST=0.0.0.0 was not honoured"
    spec = server.http.get("/openapi.json").raise_for_status().json()
    anonymous = httpx.Client(base_url=server.api, timeout=30)
    wrong = httpx.Client(base_url=server.api, auth=httpx.BasicAuth("ops", "wrong"), timeout=30)
    open_operations = []
    for path, methods in spec["paths"].items():
        for method in methods:
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            url = path
            for part in [p for p in url.split("/") if p.startswith("{")]:
                url = url.replace(part, "00000000-0000-0000-0000-000000000000")
            body = None if method == "get" else {}
            code = anonymous.request(method.upper(), url, json=body).status_code
            if code != 401:
                open_operations.append((method.upper(), path, code))
    assert wrong.get("/flows/count").status_code == 401 and wrong.post("/flows/count").status_code == 401
    # Prefect leaves the health probes open (for load balancers and Kubernetes)
    assert sorted(open_operations) == [("GET", "/health", 200), ("GET", "/ready", 200)], open_operations
    assert server.http.post("/flows/count").status_code == 200
    # websockets are outside the HTTP middleware: each checks an auth message itself
    for path in ("events/in", "events/out", "logs/out", "task_runs/subscriptions/scheduled"):
        assert _websocket_refused(f"ws://127.0.0.1:{server.port}/api/{path}", token=None), path
        assert _websocket_refused(f"ws://127.0.0.1:{server.port}/api/{path}", token="ops:wrong"), path
    assert not _websocket_refused(f"ws://127.0.0.1:{server.port}/api/events/in", token=server.auth)
    print(
        f"\n{sum(len(m) for m in spec['paths'].values())} API operations: all 401 without the credential but health, ready"
    )


def test_prefect_cli_needs_the_credential(exposed_server):
    server = exposed_server
    without = server.client_env()
    without.pop("PREFECT_API_AUTH_STRING")
    proc = subprocess.run([PREFECT, "work-pool", "ls"], env=without, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "401 Unauthorized" in proc.stdout + proc.stderr
    proc = subprocess.run(
        [PREFECT, "work-pool", "ls"], env=server.client_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_flow_run_of_the_project_on_postgres_with_the_credential(exposed_server, tmp_path):
    server = exposed_server
    proc = run_flow(server.client_env(), {**TINIEST, "artifacts_dir": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(next(tmp_path.glob("al-*/results.json")).read_text())
    run_id = results["run"]["flow_run_id"]
    assert server.flow_run(run_id)["state_type"] == "COMPLETED"
    # the run is in the project's PostgreSQL cluster, and the server made no SQLite file
    psql = _needs_postgres() / "psql"
    pg_data = server.home / "pg"
    command = [str(psql), "-X", "-h", str(pg_data), "-U", "prefect", "-d", "prefect", "-tAc"]
    query = f"SELECT state_type FROM flow_run WHERE id = '{run_id}'"
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    row = subprocess.run([*command, query], capture_output=True, text=True, timeout=30)
    assert row.stdout.strip() == "COMPLETED", row.stdout + row.stderr
    extensions = subprocess.run([*command, "SELECT extname FROM pg_extension"], capture_output=True, text=True)
    assert "pg_trgm" in extensions.stdout.split()
    assert not (server.home / "prefect.db").exists()


def test_a_small_sweep_on_postgres(exposed_server, tmp_path):
    """A 2-worker sweep against the PostgreSQL-backed server: every experiment's task
    run lands there, in the sweep's run, and the server logs no "database is locked"
    (SQLite's complaint under concurrent writers)."""
    server = exposed_server
    sets = [f"--set={k}={v}" for k, v in TINIEST.items() if k != "rounds"]
    proc = subprocess.run(
        [sys.executable, "-m", "flows.sweep", "--seeds", "2", "--first-seed", "31", "--strategies", "max_std,bald",
         "--label-budget", "2", "--workers", "2", "--artifacts-dir", str(tmp_path), *sets],
        cwd=ROOT, env=server.client_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(next(tmp_path.glob("sweep-*/results.json")).read_text())
    assert len(doc["experiments"]) == 4
    runs = server.http.post(
        "/task_runs/filter", json={"task_runs": {"flow_run_id": {"any_": [doc["flow_run_id"]]}}, "limit": 20}
    ).json()
    assert sum(t["name"].startswith("experiment/") and t["state_type"] == "COMPLETED" for t in runs) == 4
    assert "database is locked" not in (server.home / "server.log").read_text()


def test_a_plain_worker_runs_a_deployment(exposed_server, plain_worker, tmp_path):
    server = exposed_server
    run_id = server.run_deployment("smoke", {**TINIEST, "artifacts_dir": str(tmp_path)})
    run = server.wait_for(run_id)
    assert run["state_type"] == "COMPLETED", (run["state"], plain_worker["log"].read_text()[-3000:])
    results = json.loads(next(tmp_path.glob("al-*/results.json")).read_text())
    assert results["run"]["flow_run_id"] == run_id and len(results["active_accuracy"]) == 1


def test_overlapping_runs_of_a_deployment_run_one_after_the_other(exposed_server, plain_worker, tmp_path):
    """ENQUEUE: of two runs created together, one waits (AwaitingConcurrencySlot) until
    the other has finished, then runs; both complete and the outputs are whole."""
    server = exposed_server
    deployment = server.http.get(f"/deployments/{server.deployment_id('smoke')}").json()
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert deployment["global_concurrency_limit"]["limit"] == 1
    config = {**TINY, "artifacts_dir": str(tmp_path)}
    ids = [server.run_deployment("smoke", config), server.run_deployment("smoke", config)]
    runs = [server.wait_for(run_id, timeout=420) for run_id in ids]
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [r["state"] for r in runs]
    first, second = sorted(runs, key=lambda r: r["start_time"])
    assert second["start_time"] >= first["end_time"], "the runs overlapped"
    assert "AwaitingConcurrencySlot" in server.states(second["id"]), server.states(second["id"])
    assert (server.home / "concurrency_leases").is_dir(), "leases are not kept in files"
    # outputs whole: every stage file verifies; results.json is the second run's, from the cache
    folder = next(tmp_path.glob("al-*"))
    for path in [*folder.glob("*.joblib"), *folder.glob("rounds/*.joblib"), *tmp_path.glob("passive/*.joblib")]:
        assert files.verify(path) is None, path
    results = json.loads((folder / "results.json").read_text())
    assert results["run"]["flow_run_id"] == second["id"]
    assert len(results["active_accuracy"]) == TINY["rounds"]
    assert results["run"]["computed"] == [], results["run"]  # the second run restored every stage
    assert len(results["run"]["restored"]) == 3 + TINY["rounds"] + 1  # data, initial, calibration, rounds, passive
    gap = (second["start_time"], first["end_time"])
    print(f"\noverlap test: first ended {gap[1]}, second started {gap[0]}")


def test_a_deployment_of_a_vanished_clone_says_what_is_missing(exposed_server, plain_worker, tmp_path):
    """Deploy from a copy of the project, delete the copy: the run fails in its first
    pull step with a message naming the folder and what to do."""
    server = exposed_server
    clone = tmp_path / "moved-clone"
    for name in ("alcore", "tasks", "flows", "prefect.yaml"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, clone / name)
    deploy = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--name", "smoke"],
        cwd=clone,
        env=server.client_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    shutil.rmtree(clone)
    try:
        run = server.wait_for(server.run_deployment("smoke", {**TINIEST, "artifacts_dir": str(tmp_path)}))
        assert run["state_type"] in {"CRASHED", "FAILED"}
        logs = server.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}).json()
        text = "\n".join(entry["message"] for entry in logs) + plain_worker["log"].read_text()
        assert f"the project folder {clone}, recorded when the deployment was made, is missing" in text, text[-3000:]
        assert "run make deploy again" in text
    finally:
        make_ok("deploy", *server.args, env=server.env)  # the real clone's deployments back


def test_make_stop_stops_the_server_and_its_postgres(exposed_server, plain_worker):
    server = exposed_server
    worker = plain_worker["process"]
    os.killpg(worker.pid, signal.SIGINT)  # not make's worker: stopped as it was started
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:  # not what this test is about (seen once in CI): say so, go on
        print("plain worker still running 60 s after SIGINT; killed. Its log ends:")
        print("\n".join(plain_worker["log"].read_text(errors="replace").splitlines()[-40:]))
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    postmaster = int((server.home / "pg" / "postmaster.pid").read_text().split()[0])
    server_pid = pid_from(server.home / "server.pid")
    proc = make("stop", *server.args, env=server.env)
    assert proc.returncode == 0, proc.output
    assert "worker: not running (no pid file)" in proc.output
    assert f"server: stopped (pid {server_pid}, SIGTERM," in proc.output
    assert "postgres: stopped" in proc.output
    assert not alive(server_pid) and not alive(postmaster)
    assert not (server.home / "pg" / "postmaster.pid").exists()


# ---------------------------------------------------------------- two runs by hand


@pytest.mark.server
def test_two_cli_runs_of_the_same_experiment_at_once_both_finish(prefect_server, tmp_path):
    """No deployment, no limit: two processes run the same configuration into the same
    folder at the same time. Stage files are written atomically under unique names and
    the numbers are deterministic, so both finish and the files are whole."""
    config = {**TINIEST, "rounds": 2, "artifacts_dir": str(tmp_path)}

    command = [sys.executable, "-m", "flows.active_learning", *cli_args(config)]
    env = prefect_server["env"]
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    outputs = [p.communicate(timeout=600) for p in procs]
    summaries = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-4000:]
        summary = json.loads(out[: out.index("experiment folder:")])
        summaries.append({k: v for k, v in summary.items() if not k.endswith("_seconds")})  # timings differ
    assert summaries[0] == summaries[1] and "final_active_accuracy" in summaries[0]
    folder = Path(summaries[0]["folder"])
    for path in [*folder.glob("*.joblib"), *folder.glob("rounds/*.joblib"), *tmp_path.glob("passive/*.joblib")]:
        assert files.verify(path) is None, path
    results = json.loads((folder / "results.json").read_text())
    assert len(results["active_accuracy"]) == 2
    assert results["active_accuracy"][-1] == summaries[0]["final_active_accuracy"]
