"""When to stop labelling: stabilising predictions (Bloodgood and Vijay-Shanker, 2009).

The rule of *A method for stopping active learning based on stabilizing predictions
and the need for user-adjustable stopping* (CoNLL 2009): keep a fixed set of
unlabelled points (the stop set), predict it with every round's model, and stop once
consecutive models agree on it, averaged over a window of the last three pairs of
models. The paper measures agreement with Cohen's kappa (stop at a mean kappa of
0.99); here it is the plain share of the stop set whose predicted class changed,
which is what a person reads in one line ("the model's predictions changed on
0.4 % of the pool per round over the last 3 rounds") and, with the agreement as high
as the rule asks, is nearly 1 - kappa times the chance disagreement.

The stop set is the pool of candidates itself (its labelled points included: a
point's prediction may change after it is labelled too). Each round's record keeps
the share that changed between the model before the round and the one after it
(:func:`changed_share`), so the rule can be evaluated afterwards for any threshold
(:func:`stop_round`) without running anything again. Pure NumPy, no I/O.
"""

from collections.abc import Sequence

import numpy as np

WINDOW = 3  # consecutive pairs of models averaged (the paper's)
DEFAULT_THRESHOLD_PCT = 1.0  # stop when under 1 % of the pool changed per round, on average


def changed_share(before: np.ndarray, after: np.ndarray) -> float:
    """Share of the stop set whose predicted class differs between two models."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape or before.ndim != 1 or len(before) == 0:
        raise ValueError(f"two models' predictions of one stop set expected, got shapes {before.shape}, {after.shape}")
    return float(np.mean(before != after))


def window_change(changes: Sequence[float | None], *, window: int = WINDOW) -> list[float | None]:
    """After each round: the mean share changed over the last ``window`` rounds
    (None until ``window`` rounds have a share)."""
    out: list[float | None] = []
    for r in range(len(changes)):
        last = changes[max(0, r - window + 1) : r + 1]
        out.append(float(np.mean(last)) if len(last) == window and None not in last else None)
    return out


def stop_round(changes: Sequence[float | None], threshold_pct: float, *, window: int = WINDOW) -> int | None:
    """The first round (1-based) after which the rule signals stop: the window's mean
    share changed is at most ``threshold_pct`` percent (None: it never does)."""
    for r, share in enumerate(window_change(changes, window=window), start=1):
        if share is not None and 100 * share <= threshold_pct:
            return r
    return None


def parse_stop_when(text: str | None) -> float | None:
    """``stable`` or ``stable:<threshold in %>`` -> the threshold in percent; None or
    ``never`` -> None (run every round).

    Raises:
        ValueError: anything else, saying what is expected.
    """
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    name, sep, value = text.strip().partition(":")
    if name != "stable":
        raise ValueError(f"stop_when {text!r}: expected 'stable' or 'stable:<percent of the pool>', e.g. 'stable:0.5'")
    if not sep:
        return DEFAULT_THRESHOLD_PCT
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"stop_when {text!r}: the threshold {value!r} is not a number (a percent, e.g. 0.5)") from None
    if not 0 <= threshold <= 100:
        raise ValueError(f"stop_when {text!r}: the threshold is a percent of the pool, between 0 and 100")
    return threshold


def describe(changes: Sequence[float | None], *, window: int = WINDOW) -> str:
    """The rule's state after the last round, in one line."""
    done = len(changes)
    share = window_change(changes, window=window)[-1] if done else None
    if share is None:
        return f"stopping rule: the model's predictions are compared over {window} rounds ({done} so far)"
    return f"the model's predictions changed on {100 * share:.1f} % of the pool per round over the last {window} rounds"


def evaluate_rule(
    changes: Sequence[float | None],
    accuracy: Sequence[float | None],
    labels_used: Sequence[int],
    threshold_pct: float,
    *,
    window: int = WINDOW,
) -> dict:
    """What stopping by the rule would have given in one finished run, against running
    every round: the round it stops after, labels used and saved, accuracy given up
    (final accuracy minus the accuracy at the stop, in points; positive: lost)."""
    r = stop_round(changes, threshold_pct, window=window)
    full_labels, full_acc = labels_used[-1], accuracy[-1]
    if r is None:
        return {
            "stop_round": None,
            "labels": full_labels,
            "labels_saved": 0,
            "saved_share": 0.0,
            "accuracy_given_up": 0.0,
        }
    given_up = None if full_acc is None or accuracy[r - 1] is None else 100 * (full_acc - accuracy[r - 1])
    saved = int(full_labels - labels_used[r - 1])
    return {
        "stop_round": r,
        "labels": int(labels_used[r - 1]),
        "labels_saved": saved,
        "saved_share": saved / full_labels if full_labels else 0.0,
        "accuracy_given_up": given_up,
    }
