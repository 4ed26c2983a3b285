"""The data as a parameter: problems, the user's files, splits, and runs on them."""

import re
import subprocess
import sys

import numpy as np
import pytest

import sources
from alcore import data as datasets
from alcore import problem
from alcore.config import ExperimentConfig, Unresolved
from tests.helpers import ROOT, folder_of, results, run_flow

SMALL = {
    "cold_start": "uniform",
    "n_initial": 10,
    "n_calibration": 8,
    "rounds": 2,
    "initial_epochs": 30,
    "epochs_per_round": 3,
}


def _csv(path, rows, header=("x1", "x2", "x3", "label")):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def _labelled_rows(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = np.where(x[:, 0] + x[:, 1] > 0, "cat", "dog")
    return [[*map(float, xi), yi] for xi, yi in zip(x, y, strict=True)]


def test_tutorial_data_are_the_tutorials_draws():
    d = datasets.tutorial(seed=7, n_initial=5, n_calibration=4, grid_size=6)
    keys = problem.split_keys(7)
    np.testing.assert_array_equal(d.x_initial, problem.uniform_points(keys.initial, 5))
    np.testing.assert_array_equal(d.x_calibration, problem.uniform_points(keys.calibration, 4))
    np.testing.assert_array_equal(d.pool, problem.grid_points(6))
    np.testing.assert_array_equal(d.y_test, problem.true_labels(problem.grid_points(6)))
    assert d.scaler is None and d.grid_size == 6 and d.classes == ("0", "1", "2")


@pytest.mark.parametrize("name", [*datasets.SYNTHETIC, *datasets.BUNDLED])
def test_every_problem_splits_into_disjoint_standardised_sets(name):
    config = ExperimentConfig(data=name, pool_size=300, n_features=6, n_classes=4, calibration="ece", **SMALL)

    d = sources.draw(config)
    assert len(sources.draw(config.model_copy(update={"calibration": "marglik"})).x_calibration) == 0
    again = sources.draw(config)
    np.testing.assert_array_equal(d.pool, again.pool)  # the split is seeded
    table = sources.table_of(name, seed=config.seed, pool_size=300, n_features=6, n_classes=4, noise=0.1,
                              data_file=None, label_column="label", class_names=None)  # fmt: skip
    n = len(table.x)
    assert len(d.x_test) == round(0.2 * n) and len(d.x_initial) == 10 and len(d.x_calibration) == 8
    assert len(d.pool) == n - len(d.x_test) - 18
    rows = np.concatenate([d.x_initial, d.x_calibration, d.pool, d.x_test])
    assert len(np.unique(rows, axis=0)) == len(np.unique(table.x, axis=0))  # a partition of the table
    fit = np.concatenate([d.x_initial, d.x_calibration, d.pool])  # the test set is not in the statistics
    np.testing.assert_allclose(fit.mean(axis=0), 0, atol=1e-4)
    mean, std = d.scaler
    np.testing.assert_allclose(d.pool[0] * std + mean, table.x[np.argmin(np.abs(table.x - (d.pool[0] * std + mean)).sum(1))], rtol=1e-5, atol=1e-5)  # fmt: skip
    assert d.n_classes == len(table.classes) >= 2
    assert set(np.unique(d.pool_labels)) <= set(range(d.n_classes))
    if name == "digits":  # pixels share one unit: one std for all, the root of their mean variance
        assert table.one_unit and len(set(std.tolist())) == 1
        np.testing.assert_allclose(fit.var(axis=0).mean(), 1.0, rtol=1e-4)
    else:  # each feature its own unit: unit variance each (constant ones left as they are)
        assert not table.one_unit
        np.testing.assert_allclose(fit.std(axis=0)[table.x.std(axis=0) > 0], 1.0, rtol=1e-3)


def test_a_labelled_csv_is_read_with_named_classes(tmp_path):
    path = _csv(tmp_path / "pool.csv", _labelled_rows())
    table = sources.read_file(path, label_column="label")
    assert table.x.shape == (80, 3) and table.classes == ("cat", "dog")
    config = ExperimentConfig(data="file", data_file=str(path), **SMALL)
    with pytest.raises(Unresolved, match="has not been read"):  # the core never reads the file itself
        config.data_fingerprint  # noqa: B018
    resolved = sources.resolve(config)
    assert resolved.data_fingerprint == sources.file_digest(path) and sources.resolve(resolved) is resolved
    with pytest.raises(Unresolved):  # another file: the fingerprint does not carry over
        resolved.model_copy(update={"data_file": str(tmp_path / "other.csv")}).data_fingerprint  # noqa: B018
    _csv(path, _labelled_rows(seed=1))  # edited after the run started: refused, not silently mixed
    with pytest.raises(sources.DataError, match="changed after the run started"):
        sources.draw(resolved)


@pytest.mark.parametrize(
    ("rows", "header", "options", "message"),
    [
        (_labelled_rows(), ("x1", "x2", "x3", "class"), {}, "no column 'label' (columns: x1, x2, x3, class)"),
        (
            [[1.0, "nan", 2.0, "cat"]] + _labelled_rows()[1:],
            None,
            {},
            "NaN or infinite values (first at row 0, column 1)",
        ),
        ([[*r[:3], "cat"] for r in _labelled_rows()], None, {}, "single class ('cat')"),
        (
            _labelled_rows(20),
            None,
            {"calibration": "ece"},
            "has 20 points, fewer than the split needs: 4 test + 10 initial + 8 calibration",
        ),
        ([[1.0, "abc", 2.0, "cat"]] + _labelled_rows()[1:], None, {}, "not a number"),
        (
            [r[:3] for r in _labelled_rows()],
            ("x1", "x2", "x3"),
            {"label_column": None},
            "has no labels: give class_names",
        ),
        (
            [r[:3] for r in _labelled_rows()],
            ("x1", "x2", "x3"),
            {"label_column": None, "class_names": "a,b"},
            "the oracle must be a person",
        ),
    ],
    ids=["missing-column", "nan", "single-class", "too-few-points", "not-a-number", "no-classes", "no-labels-truth"],
)
def test_bad_files_are_refused_before_compute_naming_the_problem(tmp_path, rows, header, options, message):
    path = _csv(tmp_path / "pool.csv", rows, header or ("x1", "x2", "x3", "label"))
    config = ExperimentConfig(data="file", data_file=str(path), **{**SMALL, **options})
    with pytest.raises(sources.DataError, match=re.escape(message)):
        sources.resolve(config)


def test_numpy_files_with_and_without_labels(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 4)), rng.integers(0, 3, 60)
    np.savez(tmp_path / "pool.npz", x=x, y=y)
    np.save(tmp_path / "features.npy", x)
    labelled = ExperimentConfig(data="file", data_file=str(tmp_path / "pool.npz"), **SMALL)

    d = sources.draw(labelled)
    assert d.n_features == 4 and d.classes == ("0", "1", "2") and d.pool_labels is not None
    human = ExperimentConfig(data="file", data_file=str(tmp_path / "features.npy"), oracle="human",
                             class_names="red, green, blue", **SMALL)  # fmt: skip
    d = sources.draw(human)
    assert d.classes == ("red", "green", "blue") and d.pool_labels is None and d.y_test is None
    assert len(d.x_test) == 0 and (d.y_initial == -1).all()  # a person labels them
    np.savez(tmp_path / "bad.npz", features=x)
    with pytest.raises(sources.DataError, match="no array named 'x'"):
        sources.resolve(ExperimentConfig(data="file", data_file=str(tmp_path / "bad.npz"), **SMALL))


def test_an_edited_file_changes_the_data_stage_key(tmp_path):
    from alcore.stages import DATA

    path = _csv(tmp_path / "pool.csv", _labelled_rows())
    config = ExperimentConfig(data="file", data_file=str(path), **SMALL)
    before = DATA.key(sources.resolve(config), code_version="v")
    _csv(path, _labelled_rows(seed=1))
    after = DATA.key(sources.resolve(config), code_version="v")
    assert before != after


def test_reused_draws_are_shared_read_only_and_only_for_the_same_data(tmp_path):
    """A sweep's experiments of one seed share one draw (``draw(reuse=True)``): equal
    to a fresh draw, the same object for a configuration that differs only outside
    the data stage (the strategy), read-only, and never shared with other data (a
    seed, or an edited file)."""
    config = ExperimentConfig(data="moons", pool_size=120, seed=11, acquisition="margin")
    shared = sources.draw(config, reuse=True)
    fresh = sources.draw(config)
    for a, b in zip(shared, fresh, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    assert sources.draw(config.model_copy(update={"acquisition": "bald"}), reuse=True) is shared
    assert sources.draw(config.model_copy(update={"seed": 12}), reuse=True) is not shared
    with pytest.raises(ValueError, match="read-only"):
        shared.pool[0, 0] = 1.0
    path = tmp_path / "points.csv"
    rows = ["a,b,label"] + [f"{i % 7},{(3 * i) % 5},{i % 2}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    on_file = ExperimentConfig(data="file", data_file=str(path), n_initial=6, seed=3)
    first = sources.draw(on_file, reuse=True)
    path.write_text("\n".join(rows[:-1] + ["9,9,1"]) + "\n")
    assert sources.draw(on_file, reuse=True) is not first


def test_a_sweeps_draw_is_shared_through_the_artifacts_folder_with_every_worker(tmp_path, monkeypatch):
    """Another process (a sweep's other worker) takes a seed's draw from
    ``<artifacts_dir>/draws/`` instead of drawing again: the same arrays; a draw of
    another seed or another numeric platform is not taken."""
    from store.experiment import Store
    from tasks.stages import generate_data

    draw = generate_data.fn.__wrapped__
    config = sources.resolve(
        ExperimentConfig(data="moons", pool_size=120, seed=11, acquisition="margin", artifacts_dir=str(tmp_path))
    )
    first = draw(Store(config), reuse=True)
    files = sorted((tmp_path / "draws").iterdir())
    assert len(files) == 1

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew again")

    monkeypatch.setattr(sources, "draw", no_drawing)  # as in a worker that never drew it
    other = draw(Store(config.model_copy(update={"acquisition": "bald"})), reuse=True)
    for a, b in zip(first, other, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(AssertionError, match="drew again"):
        draw(Store(config.model_copy(update={"seed": 12})), reuse=True)
    elsewhere = Store(config)
    elsewhere.platform = {**elsewhere.platform, "cpu": "another"}
    with pytest.raises(AssertionError, match="drew again"):
        draw(elsewhere, reuse=True)


@pytest.mark.slow
@pytest.mark.server
def test_runs_on_digits_and_on_a_labelled_csv(prefect_server, tmp_path):
    for options in ({"data": "digits"}, {"data": "file", "data_file": str(_csv(tmp_path / "p.csv", _labelled_rows()))}):
        config = {
            **SMALL,
            **options,
            "calibration_grid_size": 10,
            "mc_samples": 8,
            "artifacts_dir": str(tmp_path / "a"),
        }
        folder = ROOT / folder_of(run_flow(prefect_server["env"], config))
        doc = results(folder)
        assert len(doc["active_accuracy"]) == 2 and 0 < doc["final_active_accuracy"] <= 1
        assert doc["passive_accuracy"] is not None
        for name in ("data", "prediction", "uncertainty", "accuracy"):
            assert (folder / "plots" / f"{name}.png").stat().st_size > 5000


@pytest.mark.slow  # the command line, in a subprocess
def test_a_file_without_labels_is_refused_without_a_human_oracle(tmp_path):
    np.save(tmp_path / "features.npy", np.random.default_rng(0).normal(size=(50, 3)))
    proc = subprocess.run(
        [sys.executable, "-m", "flows.active_learning", "--data", "file", "--data-file", str(tmp_path / "features.npy"),
         "--class-names", "a,b", "--artifacts-dir", str(tmp_path / "a")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "has no labels" in proc.stderr and "oracle must be a person" in proc.stderr
    assert not (tmp_path / "a").exists()


def test_class_names_name_the_tutorials_classes_too():
    config = ExperimentConfig(grid_size=6, n_initial=5, n_calibration=4, class_names="red, green, blue")
    assert sources.draw(config).classes == ("red", "green", "blue")
    for names, message in (("a,b", "2 names, the labels have 3 classes"), ("a,a,b", "names a class twice")):
        with pytest.raises(sources.DataError, match=message):  # before any compute
            sources.resolve(config.model_copy(update={"class_names": names}))
