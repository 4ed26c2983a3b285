"""The sweep: aggregation against hand computation, validation, a tiny sweep on Dask."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from alcore import sweep_stats
from flows.sweep import SweepConfig, parse_args, parse_strategy
from tests.helpers import ROOT, TINY, free_port

T_975_DF2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom


def test_mean_interval_by_hand():
    mean, half = sweep_stats.mean_interval([0.90, 0.92, 0.97])
    sd = math.sqrt(((0.90 - 0.93) ** 2 + (0.92 - 0.93) ** 2 + (0.97 - 0.93) ** 2) / 2)
    assert mean == pytest.approx(0.93)
    assert half == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    assert sweep_stats.mean_interval([0.5]) == (0.5, 0.0)


def test_summary_by_hand():
    labels = [20, 21, 22, 23]
    curves = {
        "bald": {
            0: (labels, [0.80, 0.91, 0.95, 0.96]),
            1: (labels, [0.85, 0.89, 0.92, 0.97]),
            2: (labels, [0.7, 0.8, 0.85, 0.88]),
        },
        "random": {
            0: (labels, [0.80, 0.85, 0.90, 0.90]),
            1: (labels, [0.85, 0.88, 0.90, 0.97]),
            2: (labels, [0.7, 0.8, 0.85, 0.89]),
        },
    }
    passive = {"bald": {0: 0.93, 1: 0.99, 2: 0.80}, "random": {0: 0.93, 1: 0.99, 2: 0.80}}
    s = sweep_stats.summarize(curves, passive, reference="random")
    bald = s["bald"]
    assert bald["labels"] == labels
    assert bald["curve_mean"] == pytest.approx(
        [(0.80 + 0.85 + 0.7) / 3, (0.91 + 0.89 + 0.8) / 3, (0.95 + 0.92 + 0.85) / 3, (0.96 + 0.97 + 0.88) / 3]
    )
    assert bald["final_accuracy"]["mean"] == pytest.approx((0.96 + 0.97 + 0.88) / 3)
    # labels to 90 %: seed 0 at 21, seed 1 at 22, seed 2 never
    assert bald["labels_to_90"] == {"mean": 21.5, "reached": 2, "of": 3, "per_seed": {0: 21, 1: 22, 2: None}}
    assert bald["labels_to_95"] == {"mean": 22.5, "reached": 2, "of": 3, "per_seed": {0: 22, 1: 23, 2: None}}
    # AUC of seed 0: trapezoids (0.855 + 0.93 + 0.955) / 3
    auc0 = (0.855 + 0.93 + 0.955) / 3
    assert sweep_stats.area_under_curve(labels, [0.80, 0.91, 0.95, 0.96]) == pytest.approx(auc0)
    # finals: bald 0.96/0.97/0.88 vs random 0.90/0.97/0.89 -> win, tie, loss = 1.5 / 3
    assert bald["win_rate_vs_reference"] == pytest.approx(0.5)
    assert s["random"]["win_rate_vs_reference"] is None
    # vs passive 0.93/0.99/0.80 -> win, loss, win
    assert bald["win_rate_vs_passive"] == pytest.approx(2 / 3)


def test_a_longer_reference_is_compared_at_the_same_labels():
    """random-in-the-loop runs past the strategies' budget (to show where it reaches a
    threshold); the win rate still compares at the strategy's final label count."""
    curves = {
        "epig": {0: ([20, 21, 22], [0.80, 0.90, 0.96]), 1: ([20, 21, 22], [0.80, 0.85, 0.88])},
        "random": {0: ([20, 21, 22, 23, 24], [0.8, 0.85, 0.90, 0.99, 0.99]), 1: ([20, 21, 22, 23, 24], [0.8, 0.85, 0.89, 0.9, 0.95])},
    }  # fmt: skip
    s = sweep_stats.summarize(curves, {"epig": {0: 0.9, 1: 0.9}}, reference="random")
    # at 22 labels: epig 0.96 vs random 0.90 (win), 0.88 vs 0.89 (loss), although random ends higher
    assert s["epig"]["win_rate_vs_reference"] == pytest.approx(0.5)
    assert s["random"]["labels_to_95"]["per_seed"] == {0: 23, 1: 24}
    assert s["epig"]["labels_to_95"]["per_seed"] == {0: 22, 1: None}
    assert sweep_stats.accuracy_at([20, 25, 30], [0.5, 0.6, 0.7], 27) == 0.6
    assert sweep_stats.accuracy_at([20, 25], [0.5, 0.6], 19) is None


def test_mismatched_label_counts_are_an_error():
    with pytest.raises(ValueError, match="other label counts"):
        sweep_stats.summarize({"a": {0: ([20, 21], [0.5, 0.6]), 1: ([20, 25], [0.5, 0.6])}}, {})


def test_strategy_specs_and_sweep_validation():
    assert parse_strategy("bald") == ("bald", 1)
    assert parse_strategy("max_std:k5") == ("max_std", 5)
    for bad in ("kmeans", "bald:5", "bald:k0", "bald:kx"):
        with pytest.raises(ValueError):
            parse_strategy(bad)
    with pytest.raises(ValueError, match="multiple of k=3"):
        SweepConfig(strategies=["max_std:k3"], label_budget=50)
    with pytest.raises(ValueError, match="may not set"):
        SweepConfig(experiment={"seed": 3})
    with pytest.raises(ValueError, match="grid_size"):
        SweepConfig(experiment={"grid_size": 1})
    cfg = SweepConfig(strategies=["max_std", "max_std:k5"], seeds=[3, 4], label_budget=10)
    exps = cfg.experiments()
    assert [(e.acquisition, e.acquisition_batch, e.rounds, e.seed) for e in exps] == [
        ("max_std", 1, 10, 3),
        ("max_std", 1, 10, 4),
        ("max_std", 5, 2, 3),
        ("max_std", 5, 2, 4),
    ]
    assert all(not e.plots for e in exps)


def test_sweep_cli_rejects_bad_input(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--strategies", "max_std,oracle"])
    assert "oracle" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--set", "grid_size"])
    assert "FIELD=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_local_cluster_workers_keep_the_allocators_defaults_and_the_numeric_settings():
    """Dask's nanny would set MALLOC_TRIM_THRESHOLD_ in each worker (a round of margin
    then cost twice its time: docs/sweeps.md#speed); the numeric settings must be there.
    The cluster runs in a process of its own, as the sweep's does."""
    code = """if True:
        import json, os, distributed
        from alcore import numerics
        from flows.sweep import SweepConfig, task_runner_for
        runner = task_runner_for(SweepConfig(workers=2))
        with distributed.LocalCluster(**runner.cluster_kwargs) as cluster, distributed.Client(cluster) as client:
            keys = ["MALLOC_TRIM_THRESHOLD_", *numerics.settings()]
            envs = client.run(lambda: {k: os.environ.get(k) for k in keys})
        print(json.dumps({"expected": numerics.settings(), "workers": list(envs.values())}))
    """
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(doc["workers"]) == 2
    for worker in doc["workers"]:
        assert worker.pop("MALLOC_TRIM_THRESHOLD_") is None
        assert worker == doc["expected"]


@pytest.mark.slow
@pytest.mark.server
def test_tiny_sweep_on_a_two_worker_local_cluster(prefect_server, tmp_path):
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k != "rounds"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.sweep",
            "--seeds",
            "2",
            "--first-seed",
            "11",
            "--strategies",
            "max_std,random",
            "--label-budget",
            "2",
            "--workers",
            "2",
            "--artifacts-dir",
            str(tmp_path),
            *sets,
        ],
        cwd=ROOT,
        env=prefect_server["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    folder = next(tmp_path.glob("sweep-*"))
    doc = json.loads((folder / "results.json").read_text())
    assert len(doc["experiments"]) == 4
    assert len({e["worker_pid"] for e in doc["experiments"]}) == 2, "both workers should have run experiments"
    experiments = sorted(tmp_path.glob("experiments/al-*/results.json"))
    assert len(experiments) == 4
    finals = {}
    for path in experiments:
        r = json.loads(path.read_text())
        finals.setdefault(r["config"]["acquisition"], []).append(r["active_accuracy"][-1])
        # the honest protocol: no point labelled twice, every label of the active side counted
        assert len(set(r["chosen_indices"])) == len(r["chosen_indices"])
        assert r["labels"]["active_total"] == r["labels"]["initial"] + r["labels"]["acquired"]
        assert r["labels"]["calibration_held_out"] == 0  # the marginal likelihood needs none
        assert len(r["active_accuracy"]) == (6 if r["config"]["acquisition"] == "random" else 2)
    n0 = TINY["n_initial"]
    assert doc["summary"]["max_std"]["labels"] == [n0, n0 + 1, n0 + 2]
    assert doc["summary"]["random"]["labels"] == list(range(n0, n0 + 7))  # the reference runs 3 x longer
    for name in ("max_std", "random"):
        assert doc["summary"][name]["final_accuracy"]["mean"] == pytest.approx(sum(finals[name]) / 2)
    # every label counted: the passive baseline gets the active side's total
    assert doc["labels"]["max_std"] == {"active": n0 + 2, "passive": n0 + 2}
    assert doc["passive"]["labels"] == n0 + 2
    assert (folder / "learning_curves.png").stat().st_size > 5000
    assert [row["strategy"] for row in doc["table"]] == ["max_std", "random", "passive (budget-matched)"]
    # the stop rule, evaluated after the fact from the experiments' per-round prediction changes
    for path in experiments:
        r = json.loads(path.read_text())
        assert len(r["prediction_change_per_round"]) == len(r["active_accuracy"])
        assert all(0.0 <= c <= 1.0 for c in r["prediction_change_per_round"])
    assert doc["stopping"]["random"]["1"]["of"] == 2 and len(doc["stopping_lines"]) == 2


def _sweep(env, tmp_path, *extra):
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k != "rounds"]
    proc = subprocess.run(
        [sys.executable, "-m", "flows.sweep", "--seeds", "2", "--first-seed", "21", "--strategies", "max_std,random",
         "--label-budget", "2", "--artifacts-dir", str(tmp_path), *sets, *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(next(tmp_path.glob("sweep-*/results.json")).read_text())


@pytest.mark.slow
@pytest.mark.server
def test_sweep_on_a_real_dask_cluster_reports_to_the_sweeps_server(prefect_server, tmp_path):
    """`dask scheduler` and `dask worker --nworkers 2` as separate processes on
    loopback, started without any Prefect API in their environment: the sweep by
    address puts every experiment's task run on its own server, in the sweep's run, no
    worker starts a server, and the numbers equal those of a sequential sweep whose
    experiments run as the active-learning flow itself (``--graph``: subflows, a task
    run per stage), the same as single runs."""
    port = free_port()
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    bare["PREFECT_HOME"] = str(tmp_path / "worker-home")
    logs = tmp_path / "cluster"
    logs.mkdir()
    dask = str(Path(sys.executable).parent / "dask")
    with open(logs / "scheduler.log", "w") as out:  # the children keep their own copies of the files
        scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=bare, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    with open(logs / "workers.log", "w") as out:
        workers = subprocess.Popen(
            [dask, "worker", f"tcp://127.0.0.1:{port}", "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
             "--no-dashboard", "--local-directory", str(tmp_path / "dask-space")],
            cwd=ROOT, env=bare, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (logs / "workers.log").read_text().count("Registered to") < 2:
            time.sleep(0.5)
        doc = _sweep(prefect_server["env"], tmp_path / "by-address", "--dask-address", f"tcp://127.0.0.1:{port}")
    finally:
        for proc in (workers, scheduler):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    assert len({e["worker_pid"] for e in doc["experiments"]}) == 2, "both worker processes should have run experiments"
    assert "temporary server" not in (logs / "workers.log").read_text().lower()

    api = prefect_server["api_url"]
    runs = httpx.post(
        f"{api}/task_runs/filter", json={"task_runs": {"flow_run_id": {"any_": [doc["flow_run_id"]]}}, "limit": 50}
    ).json()
    experiment_runs = [t for t in runs if t["name"].startswith("experiment/") and t["state_type"] == "COMPLETED"]
    assert len(experiment_runs) == 4, [t["name"] for t in runs]

    sequential = _sweep(prefect_server["env"], tmp_path / "sequential", "--sequential", "--graph")
    children = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"parent_flow_run_id": {"any_": [sequential["flow_run_id"]]}}, "limit": 50},
    ).json()
    experiment_flows = [c for c in children if c["state_type"] == "COMPLETED"]
    assert {httpx.get(f"{api}/flows/{c['flow_id']}").json()["name"] for c in experiment_flows} == {"active-learning"}
    for child in experiment_flows:  # with --graph, each experiment's stages are task runs of its flow
        tasks = httpx.post(
            f"{api}/task_runs/filter", json={"task_runs": {"flow_run_id": {"any_": [child["id"]]}}, "limit": 200}
        ).json()
        assert {"data/generate", "model/initial-training", "round-02/evaluate"} <= {t["name"] for t in tasks}
    key = lambda e: (e["strategy"], e["seed"])  # noqa: E731
    got = {key(e): (e["final_accuracy"], e["passive_accuracy"]) for e in doc["experiments"]}
    want = {key(e): (e["final_accuracy"], e["passive_accuracy"]) for e in sequential["experiments"]}
    assert got == want


def test_a_worker_that_cannot_reach_the_artifacts_directory_fails_naming_it(tmp_path):
    from flows.sweep import _check_reachable

    blocked = tmp_path / "ro"
    blocked.mkdir()
    (blocked / "file").write_text("x")
    with pytest.raises(RuntimeError, match=r"cannot use the sweep's artifacts directory.*file.*shared filesystem"):
        _check_reachable(str(blocked / "file" / "sub"))


@pytest.mark.slow
@pytest.mark.server
def test_a_killed_sweep_resumes_to_the_numbers_of_an_uninterrupted_one(prefect_server, tmp_path):
    """SIGKILL a sweep's whole process group in the middle of its experiments, run the
    same command again: the finished stages are restored, the rest computed, and every
    experiment ends with exactly an uninterrupted sweep's numbers."""
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k != "rounds"]
    args = ["--seeds", "2", "--first-seed", "31", "--strategies", "max_std,margin", "--label-budget", "6", *sets]

    def command(folder):
        return [sys.executable, "-m", "flows.sweep", *args, "--artifacts-dir", str(folder), "--sequential"]

    env = prefect_server["env"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        command(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline and not list(killed.glob("experiments/al-*/rounds/round-003.joblib")):
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not list(killed.glob("sweep-*/results.json")), "killed before its report"
    for folder in (killed, tmp_path / "uninterrupted"):
        done = subprocess.run(command(folder), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def experiments(folder):
        out = {}
        for path in folder.glob("experiments/al-*/results.json"):
            doc = json.loads(path.read_text())
            key = (doc["config"]["acquisition"], doc["config"]["seed"])
            out[key] = (doc["active_accuracy"], doc["chosen_indices"], doc["passive_accuracy"], doc["run"]["restored"])
        return out

    resumed, reference = experiments(killed), experiments(tmp_path / "uninterrupted")
    assert len(resumed) == 4 and resumed.keys() == reference.keys()
    assert {k: v[:3] for k, v in resumed.items()} == {k: v[:3] for k, v in reference.items()}
    assert any("round-03" in v[3] for v in resumed.values()), "nothing was restored: the kill came too late"


@pytest.mark.slow
def test_the_sweep_benchmarks_core_probe_times_one_loop_alone_then_one_per_worker(tmp_path):
    """benchmarks/sweep_speed's core probe, run as the benchmark runs it: one timing
    alone, one per worker together, and the slowdown their ratio."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sweep_speed", "--probe-only", "--workers", "3,1",
         "--out", str(tmp_path / "s.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout.splitlines()[0])["core_probe"]
    assert len(probe["together_seconds"]) == 3 and probe["alone_seconds"] > 0.05
    assert probe["slowdown"] == pytest.approx(max(probe["together_seconds"]) / probe["alone_seconds"])
    # three loops on this machine's cores: at least as slow as the slowest core allows
    assert probe["slowdown"] >= 0.5 * 3 / max(3, os.cpu_count() or 1)
