"""A suspended run's standby process (runtime/standby.py): what it compares before it
takes a run, and when it gives up. The hand-over itself, through a worker and a
deployment, is tests/test_human_oracle_ui.py's suspension test."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path

import httpx
import pytest

from runtime import standby

ROOT = Path(__file__).resolve().parent.parent


def test_the_lifetime_comes_from_the_environment_and_bad_values_are_refused():
    assert standby.lifetime_seconds({}) == standby.DEFAULT_SECONDS
    assert standby.lifetime_seconds({standby.SECONDS_ENV: " 90 "}) == 90
    assert standby.lifetime_seconds({standby.SECONDS_ENV: "0"}) == 0
    for bad in ("soon", "-1", "1.5"):
        with pytest.raises(ValueError, match=standby.SECONDS_ENV):
            standby.lifetime_seconds({standby.SECONDS_ENV: bad})


def test_the_code_fingerprint_follows_every_source_file_of_the_project(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    source = package / "sub" / "mod.py"
    source.write_text("x = 1\n")
    (tmp_path / "prefect.yaml").write_text("name: x\n")
    (tmp_path / "notes").mkdir()  # not a package: not followed
    monkeypatch.setattr(standby, "ROOT", tmp_path)
    before = standby.code_fingerprint()
    (tmp_path / "notes" / "scratch.py").write_text("y = 2\n")
    assert standby.code_fingerprint() == before
    source.write_text("x = 2\n")
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert standby.code_fingerprint() != before
    again = standby.code_fingerprint()
    (tmp_path / "prefect.yaml").write_text("name: y\n")
    assert standby.code_fingerprint() != again


def test_a_flow_process_not_started_by_the_launcher_starts_no_standby(monkeypatch):
    monkeypatch.setattr(standby, "LAUNCH_ENV", None)
    assert standby.spawn(uuid.uuid4(), None) is None
    monkeypatch.setattr(standby, "LAUNCH_ENV", {standby.SECONDS_ENV: "0"})
    monkeypatch.setenv(standby.LAUNCHED_ENV, "1")
    assert standby.spawn(uuid.uuid4(), None) is None  # lifetime 0: none


def _post(url: str, payload: dict) -> dict:
    """POST, retried while the server answers 503 (a fresh server does, for a moment)."""
    for _ in range(20):
        response = httpx.post(url, json=payload, timeout=60)
        if response.status_code != 503:
            break
        time.sleep(0.5)
    assert response.status_code in (200, 201), response.text
    return response.json()


def _paused_flow_run(api: str) -> str:
    flow = _post(f"{api}/flows/", {"name": "standby-test"})
    run_id = _post(f"{api}/flow_runs/", {"flow_id": flow["id"]})["id"]
    for state in ({"type": "RUNNING"}, {"type": "PAUSED", "name": "Suspended"}):
        _post(f"{api}/flow_runs/{run_id}/set_state", {"state": state, "force": True})
    return run_id


def _hand_over(env: dict, run_id: str) -> subprocess.CompletedProcess:
    """A launcher's hand-over from a process of its own (``hand_over`` only: the test
    reads what it returned)."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from runtime import standby; print(standby.hand_over({run_id!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PREFECT__FLOW_RUN_ID": run_id},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@contextlib.contextmanager
def _standby(prefect_server, tmp_path):
    """A real standby process (lifetime 120 s) for a new suspended flow run, once it
    listens, in a temporary folder short enough for a socket's path (107 bytes at
    most): its run id, process, socket, environment and log; killed and removed after."""
    short = Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    env = {**prefect_server["env"], "TMPDIR": str(short)}
    run_id = _paused_flow_run(prefect_server["api_url"])
    log = tmp_path / "standby.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.standby", run_id, "120", ""],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        sock = short / f"bal-standby-{os.getuid()}" / f"{run_id}.sock"
        deadline = time.time() + 60
        while not sock.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert sock.exists(), log.read_text()
        yield types.SimpleNamespace(run_id=run_id, proc=proc, sock=sock, env=env, log=log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.slow
def test_a_standby_refuses_another_environment_and_leaves_when_its_run_ends(prefect_server, tmp_path):
    """A real standby process for a suspended flow run on a real server: a launcher
    whose environment differs is refused (and told which variable) and the standby
    keeps waiting; a launcher of another run finds none; once the run is cancelled the
    standby leaves, removing its socket."""
    with _standby(prefect_server, tmp_path) as sb:
        api, env, run_id, proc, sock = prefect_server["api_url"], sb.env, sb.run_id, sb.proc, sb.sock
        refused = _hand_over({**env, "BAL_SOMETHING_NEW": "1"}, run_id)
        assert refused.stdout.strip() == "None", refused.stdout + refused.stderr
        assert "refused (the environment differs: BAL_SOMETHING_NEW)" in refused.stderr
        assert proc.poll() is None and sock.exists()  # still waiting for its run

        gone = _hand_over(env, str(uuid.uuid4()))
        assert gone.stdout.strip() == "None"  # another run: no standby, nothing said

        _post(f"{api}/flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLED"}, "force": True})
        assert proc.wait(timeout=30) == 0
        assert not sock.exists()
        assert "leaving: the run is Cancelled" in sb.log.read_text()


def test_a_temporary_folder_too_long_for_a_socket_falls_back_to_tmp(monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", "/" + "x" * 80)
    assert standby.standby_dir() == Path("/tmp") / f"bal-standby-{os.getuid()}"
    monkeypatch.setattr(tempfile, "tempdir", "/short")
    assert standby.standby_dir() == Path("/short") / f"bal-standby-{os.getuid()}"


@pytest.mark.slow
def test_a_launcher_ends_as_its_standby_ended():
    """The launcher's own end mirrors the standby's: its exit code, or death by the
    same signal (what the worker and `make stop` see)."""
    for status, expected in ((("exit", 0), 0), (("exit", 3), 3), (("signal", 15), -15), (("signal", 2), -2)):
        code = f"from runtime.standby import _exit_like; _exit_like({status!r})"
        assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == expected, status


def test_no_standby_where_its_folder_is_not_private(monkeypatch):
    """Another user who could write the standbys' folder could listen in a standby's
    place and be handed a run's environment (its API key) and streams."""
    short = tempfile.mkdtemp(prefix="sb-", dir="/tmp")  # short enough for a socket: no fallback to /tmp
    monkeypatch.setattr(tempfile, "tempdir", short)
    folder = standby.standby_dir()
    assert folder.parent == Path(short)
    assert standby.private_dir() == folder and folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o733)
    assert standby.private_dir() is None
    run_id = str(uuid.uuid4())
    (folder / f"{run_id}.sock").touch()  # whatever listens there is not asked
    assert standby.hand_over(run_id) is None
    shutil.rmtree(short)


@pytest.mark.slow
def test_make_stop_dismisses_idle_standbys(prefect_server, tmp_path):
    """``python -m runtime.standby --dismiss`` (what ``make stop`` runs once the worker
    is stopped) makes a real, listening standby leave at once, socket removed, while
    its run is still suspended; nothing is left to dismiss after."""
    dismiss = [sys.executable, "-m", "runtime.standby", "--dismiss"]
    with _standby(prefect_server, tmp_path) as sb:
        out = subprocess.run(dismiss, env=sb.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "standbys: 1 dismissed", out.stdout + out.stderr
        assert sb.proc.wait(timeout=30) == 0
        assert not sb.sock.exists()
        assert "leaving: dismissed (make stop)" in sb.log.read_text()
        again = subprocess.run(dismiss, env=sb.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert again.stdout.strip() == "standbys: 0 dismissed"


def test_old_standby_logs_are_pruned_but_not_a_live_standbys(monkeypatch):
    """Every suspension leaves a log: those whose last line is over a week old go, unless
    their standby still listens (a real socket here) or is starting (a live pid)."""
    short = tempfile.mkdtemp(prefix="sb-", dir="/tmp")
    monkeypatch.setattr(tempfile, "tempdir", short)
    folder = standby.private_dir()
    week = time.time() - standby.LOG_KEEP_SECONDS - 60
    runs = {name: str(uuid.uuid4()) for name in ("old", "fresh", "listening", "starting")}
    for name, run_id in runs.items():
        log = folder / f"{run_id}.log"
        log.write_text("...")
        if name != "fresh":
            os.utime(log, (week, week))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(standby.socket_path(runs["listening"])))
    listener.listen(1)
    standby.starting_path(runs["starting"]).write_text(str(os.getpid()))
    try:
        assert standby.prune_logs() == [folder / f"{runs['old']}.log"]
        assert sorted(p.stem for p in folder.glob("*.log")) == sorted(
            runs[n] for n in ("fresh", "listening", "starting")
        )
    finally:
        listener.close()
        shutil.rmtree(short, ignore_errors=True)
