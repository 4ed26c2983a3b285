"""The human oracle's forms and ledger, in-process (no server): what a form asks,
its pre-filled guesses, what the ledger records, and the agreement it reports."""

import json
import logging

import jsonschema
import pytest

import sources
from alcore import stages as st
from alcore.config import ExperimentConfig
from oracles import forms
from oracles.human import HumanOracle
from store.ledger import AnswerBook, FormAnswer, PointAnswer, accepted_guesses
from tasks.report import agreement

LOG = logging.getLogger("test")


def test_no_form_asks_nothing_marglik_holds_out_no_calibration_points(tmp_path):
    config = ExperimentConfig(oracle="human", calibration="marglik", n_initial=4)
    drawn = sources.draw(config)
    assert len(drawn.x_calibration) == 0
    book = AnswerBook(tmp_path / "answers.jsonl")
    points = [PointAnswer(i, list(map(float, p)), i % 3) for i, p in enumerate(drawn.x_initial)]
    book.append(FormAnswer("initial", 1, points, False, None, "2026-12-03T00:00:00+00:00"))
    # without a Prefect run any form would raise: the calibration's must not be asked
    initial, calibration = HumanOracle(config, tmp_path, LOG).label_data(drawn)
    assert initial == [0, 1, 2, 0] and calibration == []
    assert [a.ask for a in book.read()] == ["initial"]


def _schema(guesses):
    model = forms.form_model(
        "Labels-round-001",
        [("point_1", "a"), ("point_2", "b")],
        ["setosa", "versicolor", "virginica"],
        allow_skip=True,
        allow_stop=True,
        guesses=guesses,
    )
    return model, model.model_json_schema()


def test_a_round_form_is_pre_filled_with_the_models_guesses_and_says_so():
    model, schema = _schema(["versicolor", "setosa"])
    props = schema["properties"]
    assert props["point_1"]["default"] == "versicolor" and props["point_2"]["default"] == "setosa"
    assert "pre-filled with the model's guess: versicolor" in props["point_1"]["title"]
    assert "point_1" not in schema.get("required", [])  # one click on Resume accepts the guesses
    jsonschema.validate({}, schema)
    assert model().point_1 == "versicolor"
    # a class that does not exist is refused by the schema (the server checks it the same way)
    with pytest.raises(jsonschema.ValidationError, match="'tulip' is not one of"):
        jsonschema.validate({"point_1": "tulip"}, schema)
    # without a guess (the initial points: no model yet) every point is required
    _, bare = _schema(None)
    assert set(bare["required"]) == {"point_1", "point_2"}
    with pytest.raises(jsonschema.ValidationError, match="'point_2' is a required property"):
        jsonschema.validate({"point_1": "setosa"}, bare)


def test_the_ledger_records_accepted_guesses_and_reads_old_lines(tmp_path):
    path = tmp_path / "answers.jsonl"
    old = {"ask": "round-001", "attempt": 1, "points": [{"index": 5, "point": [0.1], "label": 2}], "stop": False,
           "input_id": None, "answered_at": "2026-12-01T00:00:00+00:00", "source": "human"}  # fmt: skip
    from store.ledger import _digest

    path.write_text(json.dumps({**old, "sha256": _digest(old)}) + "\n")
    book = AnswerBook(path)
    book.append(
        FormAnswer(
            "round-002",
            1,
            [PointAnswer(7, [0.2], 1, 1, True), PointAnswer(9, [0.3], 0, 2, False)],
            False,
            None,
            "2026-12-03T00:00:00+00:00",
        )
    )
    first, second = book.read()
    assert not book.warnings
    assert first.points[0] == PointAnswer(5, [0.1], 2, None, None) and first.points[0].own
    assert [p.own for p in second.points] == [False, True]
    assert accepted_guesses(book.read()) == {"round-002": [7]}
    line = json.loads(path.read_text().splitlines()[1])
    assert [(p["guess"], p["accepted_guess"]) for p in line["points"]] == [(1, True), (2, False)]
    text = forms.describe_answer(second, ["a", "b", "c"])
    assert text == "point_1 = 'b' (the model's guess, accepted), point_2 = 'a' (changed from the model's guess 'c')"


def test_agreement_counts_only_the_persons_own_answers():
    data = sources.draw(ExperimentConfig(n_initial=3, n_calibration=2, grid_size=10))
    truth = data.pool_labels
    rounds = [
        st.RoundSummary(*([r, [i], [[0.0, 0.0]], [int(truth[i]) if own else (int(truth[i]) + 1) % 3]] + extra))
        for r, i, own, extra in [
            (1, 11, True, ["human", 0.9, 4]),
            (2, 22, False, ["human", 0.9, 5]),  # an accepted guess, and wrong: not the person's
            (3, 33, False, ["human", 0.9, 6]),  # the person's own, and wrong
        ]
    ]
    got = agreement(data, rounds, {"round-002": [22]})
    assert got["rounds"] == {"agree": 1, "of": 2}
    assert got["rounds_accepted_guesses"] == 1


def _oracle(tmp_path, **fields) -> tuple[HumanOracle, object]:
    config = sources.resolve(ExperimentConfig(oracle="human", artifacts_dir=str(tmp_path), **fields))
    return HumanOracle(config, tmp_path, LOG), sources.draw(config)


def test_a_digit_is_shown_as_its_8x8_picture(tmp_path):
    from PIL import Image

    oracle, data = _oracle(tmp_path, data="digits")
    assert data.items.image_shape == (8, 8) and data.classes == tuple(str(d) for d in range(10))
    text = oracle._items(data, "pool", [3, 7], data.pool[[3, 7]], "round-001")
    assert text.count("data:image/png;base64,") == 1 and "Every feature" not in text  # the picture is the item
    with Image.open(tmp_path / "forms" / "round-001-items.png") as png:
        assert png.size[0] >= 2 * 180  # two pictures side by side, large enough to judge
    # the picture's pixels are the point's own (raw features, 0-16), not standardised values
    np_raw = data.raw(data.pool[3]).reshape(8, 8)
    assert np_raw.min() >= -1e-4 and np_raw.max() <= 16 + 1e-4


def test_tabular_items_show_every_feature_with_its_name(tmp_path):
    oracle, data = _oracle(tmp_path, data="wine")
    assert data.classes == ("class_0", "class_1", "class_2")
    text = oracle._items(data, "initial", [0, 1], data.x_initial[:2], "initial")
    names = data.feature_names()
    assert len(names) == 13 and "alcohol" in names
    assert all(name in text for name in names) and "| point_1 |" in text and "| point_2 |" in text
    raw = data.raw(data.x_initial[0])
    assert f"{raw[0]:.4g}" in text.split("| point_1 |")[1].split("\n")[0]  # in the data's own units


def test_class_names_from_an_option_rename_the_datas_classes(tmp_path):
    _, data = _oracle(tmp_path, data="iris", class_names="A, B, C")
    assert data.classes == ("A", "B", "C")


def test_a_files_image_column_is_shown_and_a_missing_image_is_refused_naming_row_and_path(tmp_path):
    import shutil

    from tests.helpers import ROOT

    example = ROOT / "docs" / "examples" / "shapes.csv"
    oracle, data = _oracle(tmp_path, data="file", data_file=str(example), item_column="image", n_initial=8)
    assert data.items.kind == "image" and data.feature_names() == ("area", "corners")
    assert data.n_features == 2  # the image column is not a feature
    values = data.item_values("pool", [0, 1])
    assert all(
        v.endswith(".png") and (ROOT / "docs" / "examples" / "shapes" / v.split("/")[-1]).exists() for v in values
    )
    text = oracle._items(data, "pool", [0, 1], data.pool[[0, 1]], "round-001")
    assert "The image of each point" in text and text.count("data:image/png;base64,") == 1

    broken = tmp_path / "broken"
    shutil.copytree(example.parent, broken)
    (broken / "shapes" / "square.png").unlink()
    with pytest.raises(
        sources.DataError, match=r"row 2 \(line 3\), column 'image': image file .*square\.png not found"
    ):
        sources.resolve(
            ExperimentConfig(data="file", data_file=str(broken / "shapes.csv"), item_column="image", n_initial=8)
        )


def test_the_passive_baselines_form_shows_a_files_items_too(tmp_path, monkeypatch):
    """The passive baseline's points are pool points: their form shows their image
    column, found by their pool indices, as a round's form does."""
    from tests.helpers import ROOT

    example = ROOT / "docs" / "examples" / "shapes.csv"
    oracle, data = _oracle(tmp_path, data="file", data_file=str(example), item_column="image", n_initial=8, rounds=5)
    asked = {}

    def ask(book, **form):
        asked.update(form)
        raise RuntimeError("asked")  # the form is not answered here: only its body is read

    monkeypatch.setattr(forms, "ask", ask)
    points = st.passive_points(oracle.config, data)[0]
    with pytest.raises(RuntimeError, match="asked"):
        oracle.label_passive(data, points)
    body = asked["body"]()
    assert "The image of each point" in body and body.count("data:image/png;base64,") == 2  # items and map


def test_a_files_text_column_is_shown_as_text(tmp_path):
    path = tmp_path / "notes.csv"
    rows = ["a,b,label,note"] + [f"{i},{i % 5},{'yes' if i % 2 else 'no'},note | number {i}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    oracle, data = _oracle(tmp_path, data="file", data_file=str(path), item_column="note", n_initial=8)
    assert data.items.kind == "text" and data.feature_names() == ("a", "b")
    row = int(data.rows[2][4])
    text = oracle._items(data, "pool", [4], data.pool[[4]], "round-001")
    assert f"| point_1 | note \\| number {row} |" in text
