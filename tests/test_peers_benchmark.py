"""benchmarks/peers.py end to end on a tiny configuration: the project's sweep and two
scikit-activeml peers on the same data and initial points, one table per data set."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.server]

pytest.importorskip("skactiveml", reason="the peers extra (requirements.lock installs it)")


def test_peers_benchmark_prints_one_sane_table_per_data_set(prefect_server, tmp_path):
    out = tmp_path / "peers"
    args = ["--data", "moons,wine", "--seeds", "2", "--label-budget", "3", "--strategies", "margin",
            "--peers", "mlp_random,gp_margin", "--at", "21,23", "--workers", "1", "--sequential",
            "--set", "initial_epochs=50", "--artifacts-dir", str(out)]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", *args],
        cwd=ROOT, env=prefect_server["env"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("| method | seeds | acc@21 | acc@23 | to90 | to95 |") == 2
    doc = json.loads((out / "peers.json").read_text())
    for data in ("moons", "wine"):
        rows = {r["method"]: r for r in doc["data"][data]["table"]}
        assert set(rows) == {"margin", "mlp_random", "gp_margin"}
        for name, row in rows.items():
            assert row["seeds"] == 2
            mean = float(row["acc@23"].split(" ± ")[0])
            assert 30.0 <= mean <= 100.0, (data, name, row)
            wins = [v for k, v in row.items() if k.startswith("wins vs ")]
            assert all(v == "-" or 0 <= float(v.split("/")[0]) <= 2 for v in wins), row
        curves = doc["data"][data]["curves"]
        for seed in ("0", "1"):  # every method starts from the same initial points, one label a round
            assert {tuple(c[seed]["labels"]) for c in curves.values()} == {(20, 21, 22, 23)}
        assert any(g.startswith(("MET", "NOT MET")) for g in doc["data"][data]["goals"])
        # the project's model on the GP's picks (--cross's default), beside both methods' own
        assert [r["method"] for r in doc["data"][data]["cross"]] == [
            "gp_margin", "margin model, gp_margin's picks", "margin"]  # fmt: skip
        assert all(len(curves["gp_margin"][seed]["chosen"]) == 3 for seed in ("0", "1"))
        crossed = float(doc["data"][data]["cross"][1]["acc@23"].split(" ± ")[0])
        assert 30.0 <= crossed <= 100.0, doc["data"][data]["cross"]
        # the control: the project's model on its own picks gives its own curve, exactly
        assert doc["data"][data]["cross_control"] == 0.0, doc["data"][data]["cross"]
    # a second invocation computes nothing again: the peers' curves and the experiments are stored
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", *args],
        cwd=ROOT, env=prefect_server["env"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "peers.json").read_text())["data"]["moons"]["table"] == doc["data"]["moons"]["table"]
