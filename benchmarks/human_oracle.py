"""Human-oracle latency: from a submitted answer to the next form, at round 50 of digits.

    python -m benchmarks.human_oracle [--data digits] [--think-seconds 3] [--out artifacts/human_oracle.json]

One invocation, a real ``prefect server`` of its own (free port, own PREFECT_HOME),
scikit-learn's digits (50 rounds, one 8 x 8 image a round):

1. **Paused** (the command line against the server): ``--oracle human``; a scripted
   labeller answers every form through the REST API with the data's true labels. For
   each round: seconds from the answer (the resume request) to the next form being
   available (the run paused on it).
2. **Held** (the ``label`` deployment on a process worker, a person answering): the
   same experiment's folder, with rounds 49 and 50 (and their answers) removed, is the
   starting point; a deployment run replays the 48 finished rounds and pauses on round
   49's form (``label_hold_seconds`` not yet over), which the person answers after
   looking at it for ``--think-seconds``: the answer is timed to round 50's form, in
   the same process.
3. **Suspended** (the same, a person coming back): ``label_hold_seconds`` is 2, the
   labeller waits until the run has *suspended* on round 49's form, its process has
   exited (the worker has no child left) and its standby (``runtime/standby.py``) is
   ready, as it is for a person who comes back minutes later; then answers; timed to
   round 50's form, in total (the worker polls every ``PREFECT_WORKER_QUERY_SECONDS``:
   1 s here; ``make worker`` sets it with ``WORKER_POLL``) and split into the worker's
   pick-up, the flow's process start (the hand-over to the standby) and the replay;
   ``handed_to_standby`` says whether the standby took the run.

The runs' logs (the command line's, each worker's with its flow runs') are kept in
``<out without .json>/``.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import psutil

import sources
from alcore.config import ExperimentConfig
from alcore.problem import true_labels
from benchmarks import start_worker, stop_worker, write_json
from runtime import standby
from runtime.local_server import PrefectServer
from tests.labeller import resume, waiting_form

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")


class Truth:
    """The true class of a form's point: the tutorial's function of its coordinates,
    or the data's own label (initial points by position, rounds by pool index)."""

    def __init__(self, data: str):
        self.data = sources.draw(ExperimentConfig(data=data, oracle="human")) if data != "tutorial" else None

    def __call__(self, form: dict) -> dict:
        out = {}
        for field, spec in form["fields"].items():
            if self.data is None:
                label = int(true_labels(np.asarray([spec["point"]], np.float32))[0])
            elif form["ask"] == "initial":
                label = int(self.data.initial_truth[spec["index"]] if self.data.initial_truth is not None
                            else self.data.y_initial[spec["index"]])  # fmt: skip
            else:
                label = int(self.data.pool_labels[spec["index"]])
            out[field] = form["classes"][label]
        return out


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def suspended_on(api: str, flow_run_id: str) -> bool:
    state = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=60).json().get("state") or {}
    return state.get("name") == "Suspended"


def answer_all(
    api: str,
    artifacts: Path,
    done,
    truth,
    *,
    timeout: float = 3600,
    after_suspend=(),
    released=lambda: True,
    think: float = 0.0,
) -> dict:
    """Answer every form as it comes, ``think`` seconds after it is shown (the forms
    in ``after_suspend`` only once the run has suspended on them and ``released()``:
    its process has exited); per form: the answer's time and when the next form (or
    the end) was reached."""
    timings: dict[str, dict] = {}
    shown: dict[str, float] = {}
    last = None
    deadline = time.time() + timeout
    while time.time() < deadline and not done():
        for path in artifacts.glob("al-*/forms/*.json"):
            form = json.loads(path.read_text())
            key = form["key"]
            if key in timings or waiting_form(api, form["flow_run_id"]) != key:
                continue
            if last is not None and "next_form_at" not in timings[last]:
                timings[last]["next_form_at"] = time.time()
                timings[last]["next_form"] = key
            if key in after_suspend and not (suspended_on(api, form["flow_run_id"]) and released()):
                continue
            if time.time() - shown.setdefault(key, time.time()) < think:
                continue
            t = time.time()
            response = resume(api, form["flow_run_id"], truth(form))
            assert response.json()["status"] == "ACCEPT", response.text
            timings[key] = {"answered_at": t, "flow_run_id": form["flow_run_id"]}
            last = key
        time.sleep(0.02)
    return timings


def paused(env: dict, api: str, artifacts: Path, data: str, truth) -> dict:
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(artifacts.parent / "paused.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.active_learning", "--oracle", "human", "--data", data,
             "--artifacts-dir", str(artifacts)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        timings = answer_all(api, artifacts, lambda: proc.poll() is not None, truth)
        code = proc.wait()
    assert code == 0, (artifacts.parent / "paused.log").read_text()[-3000:]
    rounds = {k: v["next_form_at"] - v["answered_at"] for k, v in timings.items() if "next_form_at" in v}
    per_round = [rounds[k] for k in sorted(rounds) if k.startswith("round-")]
    return {
        "answer_to_next_form_seconds": rounds,
        "round_49_to_50_seconds": rounds.get("round-049-1"),
        "median_round_seconds": float(np.median(per_round)),
        "max_round_seconds": float(np.max(per_round)),
    }


def truncate(source: Path, dest: Path, keep_rounds: int) -> None:
    """A copy of an experiment folder with only its first ``keep_rounds`` rounds and
    their answers (what a run that was stopped there would have left)."""
    shutil.copytree(source, dest)
    for f in (dest / "rounds").glob("round-*.joblib"):
        if int(f.stem.split("-")[1]) > keep_rounds:
            f.unlink()
    ledger = dest / "answers.jsonl"
    kept = [ln for ln in ledger.read_text().splitlines() if not json.loads(ln)["ask"].startswith("round-")
            or int(json.loads(ln)["ask"].split("-")[1]) <= keep_rounds]  # fmt: skip
    ledger.write_text("\n".join(kept) + "\n")
    shutil.rmtree(dest / "forms", ignore_errors=True)
    (dest / "results.json").unlink(missing_ok=True)


def deployment_run(
    env: dict, api: str, artifacts: Path, config: dict, truth, *, after_suspend=(), think: float = 0.0
) -> dict:
    """One run of the ``label`` deployment with ``config`` on a process worker, every
    form answered as it comes; the timings and the run's states."""
    env = {**env, "BAL_PROJECT_DIR": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    params = json.dumps({"config": {**config, "oracle": "human", "artifacts_dir": str(artifacts)}})
    subprocess.run([PREFECT, "work-pool", "create", "bal-pool", "--type", "process", "--overwrite"], cwd=ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([PREFECT, "--no-prompt", "deploy", "--name", "label", "--params", params], cwd=ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    worker = start_worker(env, artifacts.parent / f"worker-{artifacts.name}.log")
    try:
        out = subprocess.run([PREFECT, "deployment", "run", "active-learning/label"], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        run_id = next(w for w in out.split() if len(w) == 36 and w.count("-") == 4)
        t0 = time.time()

        def finished():
            return httpx.get(f"{api}/flow_runs/{run_id}").json()["state_type"] in ("COMPLETED", "FAILED", "CRASHED")

        standbys: list[int] = []

        def released():  # the suspended run's process has exited: a person comes back to a freed worker
            # (minutes later, in the default label_hold_seconds: its standby is ready by then)
            if psutil.Process(worker.pid).children(recursive=True) or standby.is_starting(run_id):
                return False
            standbys[:] = [
                p.memory_info().rss
                for p in psutil.process_iter(["cmdline"])
                if "runtime.standby" in (p.info["cmdline"] or []) and run_id in p.info["cmdline"]
            ]
            return True

        timings = answer_all(
            api, artifacts, finished, truth, after_suspend=after_suspend, released=released, think=think
        )
        assert httpx.get(f"{api}/flow_runs/{run_id}").json()["state_type"] == "COMPLETED"
    finally:
        stop_worker(worker)
    states = sorted(
        httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}).json(), key=lambda s: s["timestamp"]
    )
    log = artifacts.parent / f"worker-{artifacts.name}.log"
    return {
        "t0": t0,
        "timings": timings,
        "states": states,
        "worker_log": log.read_text(errors="replace"),
        "standby_rss_mb": [round(rss / 2**20) for rss in standbys],
    }


def held(env: dict, api: str, artifacts: Path, data: str, truth, think: float) -> dict:
    run = deployment_run(env, api, artifacts, {"data": data, "label_hold_seconds": 600}, truth, think=think)
    timing = run["timings"]["round-049-1"]
    first_pause = next(_ts(s["timestamp"]) for s in run["states"] if s["type"] == "PAUSED")
    return {
        "label_hold_seconds": 600,
        "think_seconds": think,
        "first_form_after_start_seconds": first_pause - run["t0"],
        "answer_to_next_form_seconds": timing["next_form_at"] - timing["answered_at"],
        "suspended": any(s["name"] == "Suspended" for s in run["states"]),
    }


def suspended(env: dict, api: str, artifacts: Path, data: str, truth) -> dict:
    run = deployment_run(
        env, api, artifacts, {"data": data, "label_hold_seconds": 2}, truth, after_suspend=("round-049-1",)
    )
    states, timing = run["states"], run["timings"]["round-049-1"]
    answered = timing["answered_at"]
    # the states after the answer: Resuming (scheduled), Pending (a worker took the
    # run), Running (the flow's new process started), Paused (round 50's form, held)
    resuming = next(i for i, s in enumerate(states) if s["name"] == "Resuming" and _ts(s["timestamp"]) >= answered - 1)
    after = states[resuming:]
    picked_up = next(_ts(s["timestamp"]) for s in after if s["type"] == "PENDING")
    running = next(_ts(s["timestamp"]) for s in after if s["type"] == "RUNNING")
    next_form = next(_ts(s["timestamp"]) for s in after if s["type"] == "PAUSED")
    return {
        "label_hold_seconds": 2,
        "worker_query_seconds": 1,
        "answer_to_next_form_seconds": timing["next_form_at"] - answered,
        "answer_to_next_form_state_seconds": next_form - answered,
        "answer_to_worker_pickup_seconds": picked_up - answered,
        "flow_process_start_seconds": running - picked_up,
        "replay_to_next_form_seconds": next_form - running,
        "states_after_answer": [(s["name"], round(_ts(s["timestamp"]) - answered, 3)) for s in after[:8]],
        "handed_to_standby": "handed to its standby" in run["worker_log"],
        "standby_rss_mb": run["standby_rss_mb"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits", help="the problem (default: digits; tutorial: the 2-D grid)")
    p.add_argument(
        "--think-seconds",
        type=float,
        default=3.0,
        help="held: how long the person looks at a form before answering (default 3 s; the run's background "
        "warm-up uses that time)",
    )
    p.add_argument("--out", default=str(ROOT / "artifacts" / "human_oracle.json"))
    args = p.parse_args(argv)
    truth = Truth(args.data)
    out = {"data": args.data}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = PrefectServer(tmp / "home")
        server.start()
        api, env = server.api_url, server.env
        try:
            out["paused"] = paused(env, api, tmp / "paused", args.data, truth)
            print(json.dumps(out["paused"], indent=2), flush=True)
            folder = next((tmp / "paused").glob("al-*"))
            truncate(folder, tmp / "held" / folder.name, 48)
            out["held"] = held(env, api, tmp / "held", args.data, truth, args.think_seconds)
            print(json.dumps(out["held"], indent=2), flush=True)
            truncate(folder, tmp / "suspended" / folder.name, 48)
            out["suspended"] = suspended(env, api, tmp / "suspended", args.data, truth)
        finally:
            server.stop()
            logs = Path(args.out).with_suffix("")  # the runs' own logs, timestamped, beside the figures
            logs.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*.log"):
                shutil.copy(log, logs / log.name)
    out["targets"] = {
        "paused (command line): answer -> next form at round 50 <= 1 s": out["paused"]["round_49_to_50_seconds"] <= 1,
        "held (deployment, a person answering): answer -> next form at round 50 <= 1 s": out["held"][
            "answer_to_next_form_seconds"
        ]
        <= 1,
        "suspended (deployment, a person back): answer -> next form at round 50 <= 5 s": out["suspended"][
            "answer_to_next_form_seconds"
        ]
        <= 5,
    }
    write_json(out, args.out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
