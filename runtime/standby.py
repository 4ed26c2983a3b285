"""A suspended run's next process, started before the person answers.

A deployment's run that suspends on a form (``oracles/forms.py``) ends its process; the
answer reschedules the run and the worker starts a new process, which imports Prefect,
JAX and the flow again (2.7-3.3 s measured on an idle machine, 4.9 s under load) before
its replay even begins. A standby moves that work to before the answer:

- At the suspension the run starts one detached process (:func:`spawn`), a *standby*,
  which imports what the flow's process will import and then listens on a Unix socket
  named by the flow run's id (:func:`serve`).
- Every flow run of the deployments starts as :func:`launch` (prefect.yaml's command):
  a Python that imports nothing heavy. When a standby for its flow run listens, it hands
  the standby its environment, working directory, arguments and standard streams
  (``socket.send_fds``); the standby runs Prefect's engine exactly as the process would
  have, and the launcher stays the worker's process: it passes SIGTERM, SIGINT and
  SIGHUP on and exits with the standby's status (killed by a signal: the same signal).
  Without a standby, or when it refuses, the launcher runs the engine itself, as before.

A standby refuses (the launcher then runs the engine itself, and says why on stderr)
when a source file of the project or the environment's installed packages changed since
it imported, or when the launcher's environment differs from the one it started with
(Prefect and JAX read their settings at import). Unused, it exits when its lifetime is
over (``BAL_STANDBY_SECONDS`` in the worker's environment, 3600 by default; 0 starts
none), when the run left its suspension without it (started elsewhere, cancelled,
expired), when the server has not answered for a minute, or when its launcher dies
after the hand-over (it then stops the run with SIGTERM, as a killed process would have
stopped); ``make stop`` dismisses the idle ones (:func:`dismiss`). Its log, until the
hand-over, is ``<flow run id>.log`` beside its socket in :func:`standby_dir`
(removed a week after its last line, :func:`prune_logs`).

This module imports nothing but the standard library at import time: the launcher
must stay cheap.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECONDS_ENV = "BAL_STANDBY_SECONDS"
DEFAULT_SECONDS = 3600
LAUNCHED_ENV = "BAL_LAUNCHED"  # set by launch(): this process may start a standby
# Per-launch variables (the run's id, Prefect's control channel): never compared.
PER_LAUNCH_PREFIX = "PREFECT__"
IGNORED_ENV = {"_", "PWD", "OLDPWD", "SHLVL", LAUNCHED_ENV}
SERVER_PATIENCE_SECONDS = 60  # a server silent this long: the standby gives up
LEFT_SUSPENSION_SECONDS = 15  # running this long without it: the run went on elsewhere
POLL_SECONDS = 2.0
STARTING_WAIT_SECONDS = 30  # a launcher waits this long for a standby still preparing
LOG_KEEP_SECONDS = 7 * 86400  # a standby's log is removed this long after its last line
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MESSAGE_BYTES = 1 << 20
DISMISSED = "dismissed"  # what _take returns for dismiss()'s message

# What a standby prepares once its imports are done (registered by a module the flow
# imports, with :func:`preparer`): called with the flow run's parameters, returns what
# it did (for the standby's log).
PREPARE = None

# The environment the launcher started with (before the flow changed any of it): what
# a standby for this run is started with, and compared against.
LAUNCH_ENV: dict[str, str] | None = None


def standby_dir() -> Path:
    """Where standbys listen and log, private to the user: in the temporary folder,
    or in /tmp where that folder's path is too long for a socket's (107 bytes)."""
    folder = Path(tempfile.gettempdir()) / f"bal-standby-{os.getuid()}"
    if len(os.fsencode(folder)) + len("/12345678-1234-1234-1234-123456789012.4194304.tmp") > 107:
        folder = Path("/tmp") / f"bal-standby-{os.getuid()}"
    return folder


def socket_path(flow_run_id: str) -> Path:
    return standby_dir() / f"{flow_run_id}.sock"


def private_dir() -> Path | None:
    """:func:`standby_dir`, created if need be, or None when it is not this user's
    alone (another user could then listen in a standby's place and be handed a run's
    environment and streams): no standby then."""
    folder = standby_dir()
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(folder) or folder.is_symlink():
        print(f"{folder} is not private to this user: no standby", file=sys.stderr, flush=True)
        return None
    return folder


def lifetime_seconds(env=os.environ) -> int:
    """``BAL_STANDBY_SECONDS`` (a whole number of seconds, 0: no standby)."""
    raw = env.get(SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{SECONDS_ENV}={raw!r}: expected a whole number of seconds (0: no standby)") from None
    if value < 0:
        raise ValueError(f"{SECONDS_ENV}={raw!r}: expected 0 or more seconds")
    return value


def _compared(env) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(PER_LAUNCH_PREFIX) and k not in IGNORED_ENV}


def code_fingerprint() -> tuple:
    """The project's Python sources and prefect.yaml (path, size, mtime), and the
    environment's site-packages folders' mtimes (an install changes them)."""
    files = [ROOT / "prefect.yaml"]
    for package in sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file()):
        files.extend(sorted(package.rglob("*.py")))
    entries = []
    for path in files:
        try:
            st = path.stat()
            entries.append((str(path), st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            entries.append((str(path), None, None))
    for folder in sorted({p for p in sys.path if p.endswith("site-packages")}):
        try:
            entries.append((folder, None, os.stat(folder).st_mtime_ns))
        except FileNotFoundError:
            pass
    return tuple(entries)


def preparer(fn):
    """Register ``fn(parameters) -> str`` as what a standby does after its imports,
    before it listens (e.g. run the flow's JAX programs once): the first answer after
    a suspension then finds it done."""
    global PREPARE
    PREPARE = fn
    return fn


# ---------------------------------------------------------------- the launcher


def launch() -> None:
    """A flow run's process (prefect.yaml's command): in a session of its own, hand the
    run to its standby if one listens, else run Prefect's engine here."""
    global LAUNCH_ENV
    if os.getpgid(0) != os.getpid():
        os.setsid()  # make stop signals a worker's flow runs by their sessions
    LAUNCH_ENV = dict(os.environ)
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID", "")
    if run_id and len(sys.argv) <= 1:
        status = hand_over(run_id)
        if status is not None:
            _exit_like(status)
    os.environ[LAUNCHED_ENV] = "1"
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


def starting_path(flow_run_id: str) -> Path:
    return standby_dir() / f"{flow_run_id}.starting"


def _listening(path: Path) -> bool:
    """Whether a standby listens at ``path`` (a socket left by a killed one is removed)."""
    if not path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(str(path))
        return True
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
        return False
    except OSError:
        return False
    finally:
        probe.close()


def is_starting(run_id: str) -> bool:
    """Whether a standby for the run is starting (its marker names a live process)."""
    try:
        return _alive(int(starting_path(run_id).read_text()))
    except (OSError, ValueError):
        return False


def _wait_ready(run_id: str, *, wait: bool = True) -> bool:
    """Whether the run's standby listens, waiting (up to STARTING_WAIT_SECONDS) for
    one still importing: it is ahead of a process started now."""
    path = socket_path(run_id)
    deadline = time.monotonic() + (STARTING_WAIT_SECONDS if wait else 0)
    while not path.exists():
        if not is_starting(run_id):
            return path.exists()  # no standby starting (or it died)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def hand_over(run_id: str) -> tuple[str, int] | None:
    """Give the run to its standby and wait for its end: ("exit", code) or ("signal",
    number); None when no standby took it (none listens, or it refused)."""
    path = socket_path(run_id)
    if not path.parent.is_dir() or private_dir() is None or not _wait_ready(run_id):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.settimeout(5)
        conn.connect(str(path))
        payload = {"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv}
        socket.send_fds(conn, [json.dumps(payload).encode()], [0, 1, 2])
        reply = conn.recv(4096).decode()
    except OSError as exc:
        print(f"standby for flow run {run_id} not reached ({exc}): starting here", file=sys.stderr, flush=True)
        conn.close()
        return None
    if not reply.startswith("ok "):
        why = reply.removeprefix("no ") or "no answer"
        print(
            f"standby for flow run {run_id} refused ({why}): starting here",
            file=sys.stderr,
            flush=True,
        )
        conn.close()
        return None
    pid = int(reply.split()[1])
    print(f"flow run {run_id} handed to its standby (pid {pid})", file=sys.stderr, flush=True)

    def pass_on(signum, frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, pass_on)
    conn.settimeout(None)
    while True:
        try:
            message = conn.recv(4096).decode()
        except InterruptedError:  # a signal passed on (PEP 475 retries, but be safe)
            continue
        if not message:  # the standby died without a word (SIGKILL, OOM)
            _wait_gone(pid)
            return ("exit", 1)
        kind, value = message.split()
        return (kind, int(value))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: the standby's parent may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _exit_like(status: tuple[str, int]) -> None:
    kind, value = status
    sys.stdout.flush()
    sys.stderr.flush()
    if kind == "signal":
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        time.sleep(5)
        os._exit(128 + value)
    os._exit(value)


def dismiss() -> tuple[int, int]:
    """Ask every standby of this user that listens to leave (``make stop``, once the
    worker is stopped: no run will be handed over). Returns (dismissed, starting): a
    standby still importing cannot be asked yet; it leaves a minute after the server
    stops answering."""
    folder = standby_dir()
    if not folder.is_dir() or private_dir() is None:
        return 0, 0
    dismissed = 0
    for path in sorted(folder.glob("*.sock")):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.settimeout(5)
            conn.connect(str(path))
            conn.sendall(json.dumps({"dismiss": True}).encode())
            dismissed += 1
            conn.recv(16)  # closed once the standby read it (it may be polling the server)
        except ConnectionRefusedError:  # a killed standby's socket
            path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            conn.close()
    starting = sum(is_starting(p.stem) for p in folder.glob("*.starting"))
    return dismissed, starting


def prune_logs(keep_seconds: float = LOG_KEEP_SECONDS) -> list[Path]:
    """Remove the standbys' logs in :func:`standby_dir` whose last line is older than
    ``keep_seconds``, but not one whose standby still listens or starts; returns the
    removed ones (every :func:`spawn` prunes: the folder does not grow with every
    suspension)."""
    removed = []
    cutoff = time.time() - keep_seconds
    for log in standby_dir().glob("*.log"):
        run_id = log.stem
        try:
            old = log.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if old and not _listening(socket_path(run_id)) and not is_starting(run_id):
            log.unlink(missing_ok=True)
            removed.append(log)
    return removed


# ---------------------------------------------------------------- the flow's side


def spawn(flow_run_id, entrypoint: str | None) -> subprocess.Popen | None:
    """Start a standby for ``flow_run_id`` (about to suspend), unless this process was
    not started by :func:`launch` (its deployment predates the standby), the lifetime
    is 0, or one already listens. ``entrypoint``: the deployment's
    file (``path/to/file.py``), whose imports the standby makes. Never raises: a standby
    only saves time."""
    try:
        if LAUNCH_ENV is None or os.environ.get(LAUNCHED_ENV) != "1":
            return None
        seconds = lifetime_seconds(LAUNCH_ENV)
        if seconds == 0 or _listening(socket_path(str(flow_run_id))) or is_starting(str(flow_run_id)):
            return None
        folder = private_dir()
        if folder is None:
            return None
        prune_logs()
        env = dict(LAUNCH_ENV)
        log = open(folder / f"{flow_run_id}.log", "ab")
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "runtime.standby", str(flow_run_id), str(seconds), entrypoint or ""],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        starting_path(str(flow_run_id)).write_text(str(process.pid))
        return process
    except Exception as exc:  # noqa: BLE001 - never stop a run for a standby
        print(f"no standby started: {exc!r}", file=sys.stderr, flush=True)
        return None


# ---------------------------------------------------------------- the standby


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} standby {os.getpid()}: {message}", flush=True)


def _entrypoint_imports(entrypoint: str) -> list[str]:
    """The absolute imports at the top of the entrypoint's file."""
    import ast

    path = entrypoint.rsplit(":", 1)[0]
    file = Path(path) if Path(path).is_absolute() else ROOT / path
    names = []
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


class _Watch:
    """The flow run's state, polled: why the standby should give up, or None."""

    def __init__(self, flow_run_id: str, started: float, seconds: int):
        from prefect.client.orchestration import get_client

        self.client = get_client(sync_client=True)
        self.client.__enter__()
        self.flow_run_id = flow_run_id
        self.until = started + seconds
        self.heard = time.monotonic()
        self.not_running = time.monotonic()

    def reason_to_go(self) -> str | None:
        now = time.monotonic()
        if now > self.until:
            return "its lifetime is over"
        try:
            state = self.client.read_flow_run(self.flow_run_id).state
        except Exception as exc:  # noqa: BLE001 - the server may be down for a while
            if now - self.heard > SERVER_PATIENCE_SECONDS:
                return f"the server has not answered for {SERVER_PATIENCE_SECONDS} s ({exc!r})"
            return None
        self.heard = now
        if state is None:
            return None
        if state.is_final():
            return f"the run is {state.name}"
        if not state.is_running():
            self.not_running = now
        elif now - self.not_running > LEFT_SUSPENSION_SECONDS:
            return "the run is running elsewhere"
        return None


def serve(flow_run_id: str, seconds: int, entrypoint: str) -> None:
    """The standby's life: import, listen, take the run (or give up), run it."""
    started = time.monotonic()
    own_env = dict(os.environ)
    fingerprint = code_fingerprint()
    import importlib

    import prefect.flow_engine  # noqa: F401 - what prefect.engine imports (not itself: runpy runs it as __main__)

    for name in _entrypoint_imports(entrypoint) if entrypoint else []:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the engine will report it, as without a standby
            _log(f"import {name} failed: {exc!r}")
    watch = _Watch(flow_run_id, started, seconds)
    if PREPARE is not None:
        t0 = time.monotonic()
        try:
            did = PREPARE(watch.client.read_flow_run(flow_run_id).parameters)
            _log(f"prepared: {did} ({time.monotonic() - t0:.2f} s)")
        except Exception as exc:  # noqa: BLE001 - preparing only saves time
            _log(f"preparing failed: {exc!r}")
    path = socket_path(flow_run_id)
    if private_dir() is None:
        raise RuntimeError(f"{path.parent} is not private to this user")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    listener.bind(str(partial))
    listener.listen(1)
    os.replace(partial, path)  # the launcher only ever finds a socket that listens
    inode = os.stat(path).st_ino
    _remove_marker(flow_run_id)
    _log(f"listening for flow run {flow_run_id} ({time.monotonic() - started:.2f} s to get ready)")
    listener.settimeout(POLL_SECONDS)
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                reason = watch.reason_to_go()
                if reason:
                    _log(f"leaving: {reason}")
                    return
                continue
            taken = _take(conn, own_env, fingerprint)
            if taken is DISMISSED:
                _log("leaving: dismissed (make stop)")
                return
            if taken is not None:
                break
    finally:
        listener.close()
        try:
            if os.stat(path).st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass
    watch.client.__exit__(None, None, None)
    _run(conn, *taken, own_env)


def _take(conn: socket.socket, own_env: dict, fingerprint: tuple):
    """The launcher's payload and streams, once accepted; None (and the launcher told
    why) when refused; :data:`DISMISSED` when :func:`dismiss` asks it to leave."""
    try:
        conn.settimeout(5)
        data, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 3)
        if not data:  # a probe (spawn's _listening)
            conn.close()
            return None
        payload = json.loads(data)
    except (OSError, ValueError) as exc:
        _log(f"a launcher's hand-over failed: {exc!r}")
        conn.close()
        return None
    if "dismiss" in payload:  # dismiss(): no run to take, leave
        for fd in fds:
            os.close(fd)
        conn.close()
        return DISMISSED
    refusal = None
    if code_fingerprint() != fingerprint:
        refusal = "the project's sources or packages changed since it started"
    else:
        theirs, ours = _compared(payload["env"]), _compared(own_env)
        differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if differ:
            refusal = f"the environment differs: {', '.join(differ)}"
    if refusal or len(fds) != 3:
        refusal = refusal or f"got {len(fds)} streams, not 3"
        _log(f"refused: {refusal}")
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(f"no {refusal}".encode())
        except OSError:
            pass
        conn.close()
        return None
    conn.sendall(f"ok {os.getpid()}".encode())
    return payload, fds


def _run(conn: socket.socket, payload: dict, fds: list[int], own_env: dict) -> None:
    """Become the flow run's process: its streams, environment (the launcher's, with
    what this process's imports set, as in a process that imported them itself), folder
    and arguments; run Prefect's engine; tell the launcher how it ended."""
    global LAUNCH_ENV
    sys.stdout.flush()
    sys.stderr.flush()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    set_by_imports = {k: v for k, v in os.environ.items() if own_env.get(k) != v}
    unset_by_imports = set(own_env) - set(os.environ)
    os.environ.clear()
    os.environ.update(payload["env"])
    os.environ.update(set_by_imports)
    for name in unset_by_imports:
        os.environ.pop(name, None)
    LAUNCH_ENV = dict(payload["env"])
    os.environ[LAUNCHED_ENV] = "1"
    os.chdir(payload["cwd"])
    sys.argv = list(payload["argv"])
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    done = threading.Event()
    status = {"kind": "exit", "value": 1}

    def report():  # registered first, so it runs after every other exit handler
        done.set()
        try:
            conn.sendall(f"{status['kind']} {status['value']}".encode())
        except OSError:
            pass

    def launcher_gone():  # the launcher was killed: stop the run, as its death would have
        try:
            while conn.recv(4096):
                pass
        except OSError:  # reset by the peer: gone as well
            pass
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    conn.settimeout(None)  # blocking: the run may take hours

    atexit.register(report)
    threading.Thread(target=launcher_gone, name="standby-launcher", daemon=True).start()
    try:
        with warnings.catch_warnings():  # the imports above loaded prefect.engine, as the flow's own later would
            warnings.filterwarnings("ignore", message="'prefect.engine' found in sys.modules", category=RuntimeWarning)
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        status["value"] = 0
    except SystemExit as exc:
        code = exc.code
        if code is None:
            status["value"] = 0
        elif isinstance(code, int):
            status["value"] = code
        else:
            print(code, file=sys.stderr)
            status["value"] = 1
        raise
    except BaseException as exc:
        number = getattr(exc, "signal", None)
        if isinstance(number, int):  # Prefect's TerminationSignal: end as the signal would
            status.update(kind="signal", value=number)
        raise


def _remove_marker(flow_run_id: str) -> None:
    """Remove the run's "starting" marker if it is this process's."""
    marker = starting_path(flow_run_id)
    try:
        if marker.read_text().strip() == str(os.getpid()):
            marker.unlink()
    except (FileNotFoundError, ValueError):
        pass


def main(argv: list[str]) -> None:
    if argv[:1] == ["--dismiss"]:
        dismissed, starting = dismiss()
        print(f"standbys: {dismissed} dismissed" + (f", {starting} still starting" if starting else ""))
        return
    flow_run_id, seconds, entrypoint = argv[0], int(argv[1]), (argv[2] if len(argv) > 2 else "")
    try:
        serve(flow_run_id, seconds, entrypoint)
    except Exception as exc:  # noqa: BLE001 - a standby that fails only costs the time it saves
        _log(f"failed: {exc!r}")
        raise
    finally:
        _remove_marker(flow_run_id)


if __name__ == "__main__":  # run as runtime.standby, not __main__: the flow's spawn() shares its globals
    from runtime import standby

    standby.main(sys.argv[1:])
