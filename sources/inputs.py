"""Inputs to predict on: a CSV file of new points, checked against a model's columns.

``python -m flows.predict`` reads the user's file here (the one layer that reads
tables), before anything is computed: the feature columns must be exactly the
model's (by name; their order may differ), the label column is optional, and any
labels must be classes the model knows. Every refusal is one line naming the file
and what is wrong.
"""

import csv
from pathlib import Path

import numpy as np

from alcore.data import DataError


def read_inputs(
    path: str | Path, *, features: tuple[str, ...], label_column: str | None, classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """(x in the model's column order, the labels as class indices or None).

    Raises:
        DataError: one line: no such file, not a CSV, missing or extra columns,
            values that are not numbers, labels the model does not know.
    """
    path = Path(path).expanduser()
    where = f"predict input {path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file")
    if path.suffix.lower() != ".csv":
        raise DataError(f"{where}: expected a .csv file with a header row (got {path.suffix or 'no suffix'})")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        raise DataError(f"{where}: no rows after the header")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in features if c not in header]
    extra = [c for c in header if c not in features and c != label_column]
    if missing or extra or len(set(header)) != len(header):
        said = [f"missing {_some(missing)}"] if missing else []
        said += [f"extra {_some(extra)}"] if extra else []
        said += ["a repeated column"] if len(set(header)) != len(header) else []
        raise DataError(
            f"{where}: the columns are not the model's ({'; '.join(said)}); expected {len(features)} feature "
            f"columns ({', '.join(features[:6])}{', ...' if len(features) > 6 else ''})"
            + (f" and optionally {label_column!r}" if label_column else "")
        )
    at = [header.index(c) for c in features]
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{where}: line {n} has {len(row)} values, the header {len(header)}")
    try:
        x = np.array([[float(row[i]) for i in at] for row in rows[1:]], np.float64)
    except ValueError as e:
        raise DataError(f"{where}: a feature value is not a number ({e})") from None
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0]) + 2
        raise DataError(f"{where}: NaN or infinite values (first on line {row})")
    if label_column is None or label_column not in header:
        return x.astype(np.float32), None
    given = [row[header.index(label_column)].strip() for row in rows[1:]]
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise DataError(
            f"{where}: column {label_column!r} has {len(set(given))} classes, {len(unknown)} of them unknown to the "
            f"model ({', '.join(map(repr, unknown[:5]))}); the model's {len(classes)}: {', '.join(classes)}"
        )
    return x.astype(np.float32), np.array([classes.index(c) for c in given], np.int32)


def _some(names: list[str], shown: int = 5) -> str:
    """The first few names, quoted, and how many more."""
    text = ", ".join(map(repr, names[:shown]))
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
