"""The human oracle's forms and ledger, in-process (no server): what a form asks,
its pre-filled guesses, what the ledger records, and the agreement it reports."""

import logging

import numpy as np

from alcore import stages as st
from alcore.config import ExperimentConfig
from oracles.human import HumanOracle
from store.ledger import AnswerBook, FormAnswer, PointAnswer

LOG = logging.getLogger("test")


def test_no_form_asks_nothing_marglik_holds_out_no_calibration_points(tmp_path):
    config = ExperimentConfig(oracle="human", calibration="marglik", n_initial=4)
    drawn = st.generate_data(config)
    assert len(drawn.x_calibration) == 0
    book = AnswerBook(tmp_path / "answers.jsonl")
    points = [PointAnswer(i, list(map(float, p)), i % 3) for i, p in enumerate(drawn.x_initial)]
    book.append(FormAnswer("initial", 1, points, False, None, "2026-12-03T00:00:00+00:00"))
    # without a Prefect run any form would raise: the calibration's must not be asked
    initial, calibration = HumanOracle(config, tmp_path, LOG).label_data(drawn)
    assert initial == [0, 1, 2, 0] and calibration == []
    assert [a.ask for a in book.read()] == ["initial"]
