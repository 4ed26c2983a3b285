"""What labelling gives back: labels.csv, the model bundle, predictions from it.

A small experiment on iris is computed in-process through the stages' own functions
(no Prefect run), stored in its folder, and given the report's outputs; then its
own test split is predicted from the bundle, and bad inputs are refused.
"""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from alcore import bundle as fmt
from alcore import stages as st
from alcore.config import ExperimentConfig
from flows import export
from flows import predict as predicting
from sources import bundled, draw
from store import bundle as bundles
from store.experiment import Store
from tasks.report import _labels_and_model
from tests.helpers import ROOT

ROUNDS = 2
pytestmark = pytest.mark.heavy  # seconds of training and compiling for the fixture's experiment


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """An iris experiment of two rounds, stored, with its labels.csv and bundle."""
    out = tmp_path_factory.mktemp("outputs")
    config = ExperimentConfig(
        data="iris", rounds=ROUNDS, n_initial=12, initial_epochs=60, epochs_per_round=5, artifacts_dir=str(out)
    )
    store = Store(config)
    data = draw(config)
    store.save(st.DATA, data)
    initial = st.initial_training(config, data)
    store.save(st.INITIAL, initial)
    calibration = st.calibrate(config, data, initial)
    store.save(st.CALIBRATION, calibration)
    state, x, y, summaries = initial.state, data.x_initial, data.y_initial, []
    for r in range(1, ROUNDS + 1):
        labelled = [i for s in summaries for i in s.indices]
        acquired = st.acquire(config, r, data, state, x, y, calibration.prior_prec, labelled)
        labels = st.labels_of(config, data, acquired)
        x, y = np.concatenate([x, acquired.points]), np.concatenate([y, np.int32(labels)])
        retrained = st.retrain(config, state, x, y, calibration.prior_prec)
        record = st.evaluate(config, r, data, acquired, labels, retrained, x, y, calibration.prior_prec)
        store.save(st.ROUND, record, r)
        summaries.append(record.summary())
        state = retrained.state
    passive = st.passive_baseline(config, data)
    store.save(st.PASSIVE, passive)
    store.workspace.write_config(config)
    rows, model = _labels_and_model(config, store.workspace, data, initial, summaries, passive)
    return {"config": config, "data": data, "folder": store.workspace.root, "rows": rows, "model": model,
            "record": record, "summaries": summaries, "passive": passive}  # fmt: skip


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_labels_csv_has_one_row_per_labelled_item(experiment):
    config, data, rows = experiment["config"], experiment["data"], experiment["rows"]
    table = bundled("iris")
    assert len(rows) == len(data.y_initial) + len(data.y_calibration) + ROUNDS + len(experiment["passive"].y)
    with open(experiment["folder"] / "labels.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows)
    # every item id is the row of the source table, and its label is that row's class
    for row in written:
        assert row["label"] == table.classes[table.y[int(row["item"])]]
    sources = [row["source"] for row in written]
    assert sources.count("initial") == config.n_initial and sources.count("passive") == len(experiment["passive"].y)
    for s in experiment["summaries"]:
        (row,) = [w for w in written if w["source"] == f"round {s.round}"]
        assert int(row["pool_index"]) == s.indices[0]
        assert int(row["item"]) == data.rows[2][s.indices[0]]
        assert row["model_guess"] in data.classes and 0 < float(row["model_probability"]) <= 1
        assert row["answered_at"] == "" and row["accepted_guess"] == "" and row["image"] == ""  # no person, no image


def test_the_bundle_loads_with_the_core_and_reads_back_equal(experiment):
    model = bundles.read(experiment["model"])
    document = json.loads((experiment["model"] / "bundle.json").read_text())
    assert document["format"] == fmt.FORMAT and document["architecture"]["in_dim"] == 4
    assert {"code_version", "math_version", "jax", "laplax", "platform"} <= set(document)
    assert model.classes == experiment["data"].classes
    assert model.features == experiment["data"].feature_names() == bundled("iris").items.feature_names
    assert model.features[1] == "sepal width (cm)"
    np.testing.assert_array_equal(model.scaler[0], experiment["data"].scaler[0])
    record = experiment["record"]
    assert model.prior_prec == record.prior_prec and model.meta["round"] == ROUNDS
    for layer, weights in record.state.params.items():
        np.testing.assert_array_equal(model.params[layer]["kernel"], weights["kernel"])
    again = fmt.from_arrays(*fmt.to_arrays(model))
    np.testing.assert_array_equal(again.x_labelled, model.x_labelled)


def _test_split_csv(experiment, path, *, drop=None, extra=None, label=None):
    data, model = experiment["data"], bundles.read(experiment["model"])
    mean, std = data.scaler
    raw = data.x_test * std + mean  # the user's units
    header = list(model.features) + ["label"]
    labels = [data.classes[c] for c in data.y_test] if label is None else [label] * len(raw)
    rows = [[*map(float, x), c] for x, c in zip(raw, labels, strict=True)]
    if drop is not None:
        header.pop(drop)
        rows = [r[:drop] + r[drop + 1 :] for r in rows]
    if extra is not None:
        header.append(extra)
        rows = [[*r, 1.0] for r in rows]
    return _csv(path, header, rows)


def test_predicting_the_test_split_gives_the_reported_accuracy(experiment, tmp_path):
    path = _test_split_csv(experiment, tmp_path / "test.csv")
    out = predicting.run(str(experiment["folder"]), str(path), out=str(tmp_path / "pred.csv"))
    assert out["accuracy"] == pytest.approx(experiment["record"].accuracy, abs=0.5 / len(experiment["data"].x_test))
    with open(tmp_path / "pred.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(experiment["data"].x_test)
    probs = np.array([[float(r[f"p_{c}"]) for c in experiment["data"].classes] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert all(float(r["std"]) > 0 and float(r["entropy"]) >= 0 and float(r["bald"]) >= -1e-6 for r in rows)
    # an earlier round's stored posterior: another model, its own accuracy
    first = predicting.run(str(experiment["folder"]), str(path), round_index=1, out=str(tmp_path / "p1.csv"))
    assert first["round"] == 1
    assert first["accuracy"] == pytest.approx(experiment["summaries"][0].accuracy, abs=0.5 / len(rows))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": 1}, "missing 'sepal width (cm)'"),
        ({"extra": "colour"}, "extra 'colour'"),
        ({"label": "tulip"}, "unknown to the model ('tulip')"),
    ],
)
def test_a_bad_input_is_refused_in_one_line_before_compute(experiment, tmp_path, change, message):
    path = _test_split_csv(experiment, tmp_path / "bad.csv", **change)
    with pytest.raises(predicting.Refused, match=re.escape(message)) as refused:
        predicting.prepare(str(experiment["folder"]), str(path))
    assert "\n" not in str(refused.value)


def test_an_unknown_round_or_folder_is_refused(experiment, tmp_path):
    path = _test_split_csv(experiment, tmp_path / "test.csv")
    with pytest.raises(predicting.Refused, match="no round 9"):
        predicting.prepare(str(experiment["folder"]), str(path), 9)
    with pytest.raises(predicting.Refused, match="no such folder"):
        predicting.prepare(str(tmp_path / "nowhere"), str(path))


def test_export_writes_labels_csv_for_a_folder(experiment, tmp_path, capsys):
    written = (experiment["folder"] / "labels.csv").read_text()
    (experiment["folder"] / "labels.csv").unlink()
    assert export.main([str(experiment["folder"])]) == 0
    assert (experiment["folder"] / "labels.csv").read_text() == written
    assert export.main([str(tmp_path)]) == 2
    assert "not an experiment folder" in capsys.readouterr().err


@pytest.mark.slow
def test_loading_the_bundle_and_predicting_needs_no_prefect(experiment):
    code = (
        "import sys, numpy as np; from store.bundle import read; from alcore.bundle import predict;"
        f"m = read({str(experiment['model'])!r}); out = predict(m, np.zeros((3, 4), np.float32));"
        "assert out.probabilities.shape == (3, 3), out.probabilities.shape;"
        "bad = [k for k in sys.modules if k.split('.')[0] == 'prefect']; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, cwd=ROOT)
