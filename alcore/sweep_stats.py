"""Aggregating a sweep: learning curves across seeds and the summary table.

Plain numpy/scipy on the per-experiment numbers (no arrays from the models), so it is
cheap to test against hand computation.
"""

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from alcore.stopping import DEFAULT_THRESHOLD_PCT, evaluate_rule


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, df=len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def labels_to_reach(labels: Sequence[int], accuracy: Sequence[float], threshold: float) -> int | None:
    """Fewest labels at which the curve first reaches ``threshold`` (None if never)."""
    for n, a in zip(labels, accuracy, strict=True):
        if a >= threshold:
            return int(n)
    return None


def area_under_curve(labels: Sequence[int], accuracy: Sequence[float]) -> float:
    """Mean accuracy over the label range (trapezoid area / range); the single value
    for a curve of one point."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def accuracy_at(labels: Sequence[int], accuracy: Sequence[float], n: int) -> float | None:
    """The curve's accuracy at ``n`` labels: its last point at or below ``n`` (None
    before its first point)."""
    best = None
    for m, a in zip(labels, accuracy, strict=True):
        if m <= n:
            best = a
    return best


def win_rate(ours: dict[int, float], theirs: dict[int, float]) -> float | None:
    """Fraction of common seeds where ``ours`` beats ``theirs`` (ties count one half)."""
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return None
    wins = sum(1.0 if ours[s] > theirs[s] else 0.5 if ours[s] == theirs[s] else 0.0 for s in seeds)
    return wins / len(seeds)


def summarize(
    curves: dict[str, dict[int, tuple[list[int], list[float]]]],
    passive: dict[str, dict[int, float]],
    *,
    reference: str | None = "random",
    thresholds: Sequence[float] = (0.90, 0.95),
) -> dict[str, dict]:
    """Per strategy: learning curve mean and 95 % interval per label count, labels to
    each threshold, area under the curve, final accuracy, win rates.

    Every comparison is at the same total labels: a strategy's final accuracy (at its
    last label count) against the reference's curve at that count (the reference may
    run longer, to show where it reaches a threshold), and against the passive
    baseline trained with that many labels.

    Args:
        curves: strategy -> seed -> (label counts, accuracies), including the initial
            model's point; every seed of a strategy has the same label counts.
        passive: strategy -> seed -> accuracy of the passive baseline with that
            strategy's label total.
        reference: the strategy the win rate is measured against (random-in-the-loop).
        thresholds: accuracy levels for "labels to reach".
    """
    out = {}
    for name, by_seed in curves.items():
        seeds = sorted(by_seed)
        labels = by_seed[seeds[0]][0]
        for s in seeds:
            if list(by_seed[s][0]) != list(labels):
                raise ValueError(f"strategy {name!r}: seed {s} has other label counts than seed {seeds[0]}")
        matrix = np.array([by_seed[s][1] for s in seeds], dtype=np.float64)
        per_point = [mean_interval(matrix[:, j]) for j in range(matrix.shape[1])]
        finals = {s: by_seed[s][1][-1] for s in seeds}
        versus_reference = None
        if reference in curves and name != reference:
            theirs = {s: accuracy_at(*curves[reference][s], labels[-1]) for s in seeds if s in curves[reference]}
            versus_reference = win_rate(finals, {s: a for s, a in theirs.items() if a is not None})
        row = {
            "seeds": seeds,
            "labels": [int(n) for n in labels],
            "curve_mean": [m for m, _ in per_point],
            "curve_ci95": [h for _, h in per_point],
            "final_labels": int(labels[-1]),
            "final_accuracy": dict(zip(("mean", "ci95"), mean_interval(matrix[:, -1]), strict=True)),
            "auc": dict(
                zip(("mean", "ci95"), mean_interval([area_under_curve(labels, r) for r in matrix]), strict=True)
            ),
            "win_rate_vs_passive": win_rate(finals, passive.get(name, {})),
            "win_rate_vs_reference": versus_reference,
        }
        for t in thresholds:
            reached = [labels_to_reach(labels, r, t) for r in matrix]
            hit = [n for n in reached if n is not None]
            row[f"labels_to_{round(100 * t)}"] = {
                "mean": float(np.mean(hit)) if hit else None,
                "reached": len(hit),
                "of": len(reached),
                "per_seed": dict(zip(seeds, reached, strict=True)),
            }
        out[name] = row
    return out


# the stop rule's thresholds a sweep evaluates (percent of the pool per round)
STOP_THRESHOLDS_PCT = tuple(sorted({0.25, 0.5, DEFAULT_THRESHOLD_PCT, 2.0}))
GOAL = {"max_accuracy_given_up_pts": 1.0, "min_labels_saved_share": 0.30}  # what the stop rule should achieve


def stopping_summary(runs: dict[int, dict], threshold_pct: float) -> dict:
    """The stop rule (alcore/stopping.py) evaluated after the fact on each seed's
    finished run, against running the full budget: the share of labels saved and the
    accuracy given up (points), their means and 95 % intervals, the worst seed, and
    whether the mean meets :data:`GOAL`.

    Args:
        runs: seed -> {"changes": per-round share of the pool changed, "accuracy":
            per-round test accuracy, "labels": per-round total labels used}.
        threshold_pct: the rule's threshold, percent of the pool per round.
    """
    per_seed = {
        s: evaluate_rule(r["changes"], r["accuracy"], r["labels"], threshold_pct) for s, r in sorted(runs.items())
    }
    saved = [v["saved_share"] for v in per_seed.values()]
    given = [v["accuracy_given_up"] for v in per_seed.values() if v["accuracy_given_up"] is not None]
    saved_stat = dict(zip(("mean", "ci95"), mean_interval(saved), strict=True))
    given_stat = dict(zip(("mean", "ci95"), mean_interval(given), strict=True)) if given else None
    return {
        "threshold_pct": threshold_pct,
        "stopped": sum(v["stop_round"] is not None for v in per_seed.values()),
        "of": len(per_seed),
        "labels_saved_share": saved_stat,
        "accuracy_given_up_pts": given_stat,
        "worst_accuracy_given_up_pts": max(given) if given else None,
        "goal_met": given_stat is not None
        and given_stat["mean"] <= GOAL["max_accuracy_given_up_pts"]
        and saved_stat["mean"] >= GOAL["min_labels_saved_share"],
        "per_seed": per_seed,
    }
