"""The stop rule (alcore/stopping.py) and its evaluation in a sweep, on hand-made runs."""

import numpy as np
import pytest

from alcore import stopping
from alcore.config import ExperimentConfig
from alcore.stages import FLOW_FIELDS, ROUND
from alcore.sweep_stats import stopping_summary


def test_changed_share_counts_the_points_whose_class_changed():
    assert stopping.changed_share(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])) == 0.5
    assert stopping.changed_share(np.int8([1, 1]), np.int64([1, 1])) == 0.0
    with pytest.raises(ValueError, match="one stop set"):
        stopping.changed_share(np.zeros(3), np.zeros(4))


def test_the_window_averages_the_last_three_rounds():
    changes = [0.10, 0.04, 0.01, 0.004, 0.002]
    means = stopping.window_change(changes)
    assert means[:2] == [None, None]
    assert means[2:] == pytest.approx([0.05, 0.018, 0.16 / 30])
    assert stopping.window_change([0.1, None, 0.1, 0.1, 0.1])[:4] == [None, None, None, None]


def test_stop_round_is_the_first_round_under_the_threshold():
    changes = [0.10, 0.04, 0.01, 0.004, 0.002, 0.0]
    assert stopping.stop_round(changes, 2.0) == 4  # mean 1.8 %
    assert stopping.stop_round(changes, 1.0) == 5  # mean 0.53 %
    assert stopping.stop_round(changes, 0.1) is None  # mean 0.2 % at best


@pytest.mark.parametrize(
    ("text", "threshold"), [(None, None), ("never", None), ("stable", 1.0), ("stable:0.25", 0.25), ("stable:0", 0.0)]
)
def test_stop_when_parses(text, threshold):
    assert stopping.parse_stop_when(text) == threshold


@pytest.mark.parametrize("text", ["stabel", "stable:x", "stable:-1", "stable:101", "kappa:0.99"])
def test_a_bad_stop_when_is_refused_by_the_config(text):
    with pytest.raises(ValueError, match="stop_when"):
        ExperimentConfig(stop_when=text)


def test_stop_when_is_a_flow_field_in_no_key():
    assert "stop_when" in FLOW_FIELDS
    assert ROUND.key(ExperimentConfig(), code_version="c", round_index=3) == ROUND.key(
        ExperimentConfig(stop_when="stable:0.5"), code_version="c", round_index=3
    )


def test_the_line_says_what_changed():
    assert stopping.describe([0.01, 0.004, 0.002]) == (
        "the model's predictions changed on 0.5 % of the pool per round over the last 3 rounds"
    )
    assert "1 so far" in stopping.describe([0.3])


def test_evaluating_the_rule_on_a_finished_run():
    changes = [0.10, 0.04, 0.01, 0.004, 0.002, 0.0]
    accuracy = [0.80, 0.85, 0.88, 0.90, 0.91, 0.915]
    labels = [21, 22, 23, 24, 25, 26]
    out = stopping.evaluate_rule(changes, accuracy, labels, 2.0)
    assert out["stop_round"] == 4 and out["labels"] == 24 and out["labels_saved"] == 2
    assert out["saved_share"] == pytest.approx(2 / 26)
    assert out["accuracy_given_up"] == pytest.approx(1.5)
    never = stopping.evaluate_rule(changes, accuracy, labels, 0.01)
    assert never["stop_round"] is None and never["labels_saved"] == 0 and never["accuracy_given_up"] == 0.0


def test_the_sweep_summary_over_seeds_and_its_goal():
    stable = {"changes": [0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "labels": list(range(11, 21))}
    runs = {
        0: {**stable, "accuracy": [0.9] * 9 + [0.904]},  # stops after round 4: 6 of 20 labels saved, 0.4 points lost
        1: {**stable, "accuracy": [0.9] * 9 + [0.914]},  # the same stop, 1.4 points lost
    }
    out = stopping_summary(runs, 1.0)
    assert out["stopped"] == 2 and out["of"] == 2
    assert out["labels_saved_share"]["mean"] == pytest.approx(6 / 20)
    assert out["accuracy_given_up_pts"]["mean"] == pytest.approx(0.9)
    assert out["worst_accuracy_given_up_pts"] == pytest.approx(1.4)
    assert out["goal_met"]
    runs[1]["accuracy"] = [0.9] * 9 + [0.93]  # 3 points lost on seed 1: mean 1.7
    assert not stopping_summary(runs, 1.0)["goal_met"]
