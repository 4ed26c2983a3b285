"""Data sources: where an experiment's table comes from, and the one layer that reads it.

The core (``alcore``) computes on tables and never opens a file; this package reads
them: scikit-learn's bundled sets (from its installed files: nothing is downloaded),
a user's ``.csv`` / ``.npy`` / ``.npz`` file, and the seeded synthetic draws (made by
the core, dispatched here so every problem has one entry point).

Three functions are what the rest of the project calls:

- :func:`resolve`: checks a configuration's data file before any compute (missing
  file or column, NaN values, a single class, too few points, labels the oracle
  needs) and returns the configuration carrying the file's SHA-256, which is part
  of every stage's key (so results are never restored for an edited file);
- :func:`table_for`: the table of a configuration's problem (None for the tutorial,
  which draws its own points);
- :func:`draw`: the data stage's result, computed from that table.
"""

import collections
import csv
import functools
import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from alcore import problem, stages
from alcore.config import ExperimentConfig, held_out_labels
from alcore.data import (
    BUNDLED,
    PROBLEMS,
    SYNTHETIC,
    Data,
    DataError,
    Items,
    Table,
    check_split_size,
    parse_class_names,
    synthetic,
)

__all__ = ["DataError", "resolve", "table_for", "draw", "read_file", "bundled", "file_digest", "table_of"]


def resolve(config: ExperimentConfig) -> ExperimentConfig:
    """``config``, checked against its data file and carrying the file's fingerprint
    (``config`` itself when it needs no file or already carries it).

    Raises:
        DataError: naming the file and what is wrong, before any compute.
    """
    if config.data == "tutorial" and config.class_names:
        parse_class_names(config.class_names, problem.N_CLASSES)  # refused here, not in the data stage
    if config.data != "file" or config.has_data_fingerprint:
        return config
    table = table_of("file", **_options(config))
    if table.y is None and config.oracle == "truth":
        raise DataError(
            f"data file {config.data_file} has no labels, so there is no truth to simulate an oracle with: "
            "the oracle must be a person (oracle=human, with a Prefect server)"
        )
    check_split_size(
        len(table.x),
        labelled=table.y is not None,
        n_initial=config.n_initial,
        n_calibration=held_out_labels(config),
        test_fraction=config.test_fraction,
        what=f"data file {config.data_file} has",
        pool_at_least=config.n_initial if config.cold_start == "typiclust" else 1,
    )
    return config.with_data_fingerprint(file_digest(config.data_file))


def table_for(config) -> Table | None:
    """The table of a configuration's problem (or of a stage's view of one), before
    its split; None for the tutorial. A user's file must still be the one the
    configuration was resolved with."""
    if config.data == "tutorial":
        return None
    if isinstance(config, ExperimentConfig):
        config = resolve(config)
    if config.data == "file" and file_digest(config.data_file) != config.data_fingerprint:
        raise DataError(f"data file {config.data_file} changed after the run started; start the run again")
    return table_of(config.data, **_options(config))


REUSED_DRAWS = 12  # draws one process keeps for ``draw(reuse=True)``: a sweep worker's seeds
_reused: collections.OrderedDict[str, Data] = collections.OrderedDict()
_reused_lock = threading.Lock()


def draw(config, *, reuse: bool = False) -> Data:
    """The data stage's result for ``config``: its table, split (or the tutorial's draws).

    ``reuse``: the same result, read-only, for every configuration whose data stage
    reads the same values as one drawn before in this process (the last
    :data:`REUSED_DRAWS`). A sweep's strategies of one seed draw the same data, and a
    draw of its honest protocol costs 1.2-2 s of TypiClust clustering (measured): an
    experiment in a sweep draws once per seed and worker.
    """
    if isinstance(config, ExperimentConfig):
        config = resolve(config)
    if not reuse:
        return stages.generate_data(config, table_for(config))
    key = json.dumps(stages.DATA.fields(config), sort_keys=True, default=str)  # a file's SHA-256 among them
    with _reused_lock:
        if key in _reused:
            _reused.move_to_end(key)
            return _reused[key]
    data = _read_only(stages.generate_data(config, table_for(config)))
    with _reused_lock:
        _reused[key] = data
        while len(_reused) > REUSED_DRAWS:
            _reused.popitem(last=False)
    return data


def _read_only(data: Data) -> Data:
    """``data`` with every array read-only (shared by experiments: none may change it)."""

    def freeze(value):
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        elif isinstance(value, tuple):
            for item in value:
                freeze(item)

    for value in data:
        freeze(value)
    return data


def _options(c) -> dict:
    names = (
        "seed", "pool_size", "n_features", "n_classes", "noise", "data_file", "label_column", "class_names",
        "item_column",
    )  # fmt: skip
    return {name: getattr(c, name) for name in names}


def table_of(
    problem_name: str,
    *,
    seed: int,
    pool_size: int,
    n_features: int,
    n_classes: int,
    noise: float,
    data_file: str | None,
    label_column: str | None,
    class_names: str | None,
    item_column: str | None = None,
) -> Table:
    """The table of a pool-based problem, before its split; ``class_names`` name its
    classes (in the order of the labels' sorted values) instead of the data's own."""
    if problem_name in SYNTHETIC:
        table = synthetic(
            problem_name, seed=seed, n_points=pool_size, n_features=n_features, n_classes=n_classes, noise=noise
        )
    elif problem_name in BUNDLED:
        table = bundled(problem_name)
    elif problem_name != "file":
        raise DataError(f"unknown problem {problem_name!r}; expected one of {', '.join(PROBLEMS)}")
    else:
        table = read_file(data_file, label_column=label_column, item_column=item_column)
    if item_column and problem_name != "file":
        raise DataError(f"item_column names a column of a data file (data=file), not of {problem_name!r}")
    if class_names:
        table = table._replace(
            classes=parse_class_names(class_names, len(table.classes) if table.y is not None else None)
        )
    elif table.y is None:
        raise DataError(f"data file {data_file} has no labels: give class_names, the classes a person chooses from")
    return table


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def bundled(name: str) -> Table:
    """A data set scikit-learn ships with its package (read from its files: nothing is
    downloaded). scikit-learn is imported only here."""
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
    }[name]
    bunch = loader()
    x = np.asarray(bunch.data, np.float32)
    names = tuple(str(n) for n in getattr(bunch, "feature_names", ()))
    image_shape = tuple(bunch.images.shape[1:]) if hasattr(bunch, "images") else ()
    return Table(
        x,
        np.asarray(bunch.target, np.int32),
        tuple(str(c) for c in bunch.target_names),
        Items(names if len(names) == x.shape[1] else (), image_shape),
        one_unit=bool(image_shape),
    )


def read_file(path: str | Path, *, label_column: str | None, item_column: str | None = None) -> Table:
    """A user's data file, read once per content (see :func:`_read_file`); the image
    files an ``item_column`` names are checked on every read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path}: no such file")
    stat = path.stat()
    table = _read_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size, label_column, item_column)
    if table.items is not None and table.items.kind == "image":
        for n, image in enumerate(table.items.values, start=1):
            if not Path(image).is_file():
                raise DataError(
                    f"data file {path}: row {n} (line {n + 1}), column {item_column!r}: image file {image} not found"
                )
    return table


@functools.lru_cache(maxsize=4)
def _read_file(path: str, mtime_ns: int, size: int, label_column: str | None, item_column: str | None) -> Table:
    """A user's data: ``.csv`` (a header row; numeric feature columns, and the label
    column if there is one: any values, mapped to classes in sorted order), ``.npy``
    (a feature matrix, no labels) or ``.npz`` (arrays ``x`` and, optionally, ``y``).

    Raises:
        DataError: naming the file and what is wrong (missing file or column, NaN or
            non-numeric values, a label column with a single class, no rows).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    items = None
    if item_column and suffix != ".csv":
        raise DataError(f"data file {path}: item_column needs a .csv file (a column of it), not {suffix}")
    if suffix == ".csv":
        x, y, items = _read_csv(path, label_column, item_column)
    elif suffix == ".npy":
        x, y = _load_array(path), None
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays:
                raise DataError(f"data file {path}: no array named 'x' (found {', '.join(arrays.files) or 'none'})")
            x = np.asarray(arrays["x"])
            y = np.asarray(arrays["y"]) if "y" in arrays else None
    else:
        raise DataError(f"data file {path}: expected .csv, .npy or .npz (got {suffix or 'no suffix'})")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise DataError(f"data file {path}: the features must be a non-empty (points x features) table, got {x.shape}")
    try:
        x = x.astype(np.float32)
    except (TypeError, ValueError):
        raise DataError(f"data file {path}: the features are not all numbers") from None
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"data file {path}: {int(bad.sum())} NaN or infinite values (first at row {row}, column {col})")
    items = items or Items(tuple(f"x{j + 1}" for j in range(x.shape[1])))
    if y is None:
        return Table(x, None, (), items)
    if len(y) != len(x):
        raise DataError(f"data file {path}: {len(y)} labels for {len(x)} points")
    names, codes = np.unique(np.asarray(y).astype(str), return_inverse=True)
    if len(names) < 2:
        raise DataError(f"data file {path}: the labels have a single class ({str(names[0])!r}); need at least two")
    return Table(x, codes.astype(np.int32), tuple(str(n) for n in names), items)


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"data file {path}: {e}") from None


def _read_csv(path: Path, label_column: str | None, item_column: str | None = None):
    """A CSV's features, labels (None without a label column) and :class:`Items`: the
    feature columns' names and, with ``item_column``, each row's item: an image file
    (every value ends in an image suffix; relative paths from the CSV's folder) or a
    short text (any other values)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"data file {path}: empty")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if label_column is not None and label_column not in header:
        raise DataError(
            f"data file {path}: no column {label_column!r} (columns: {', '.join(header)}); "
            "set label_column to the label column's name, or to none for a file without labels"
        )
    if item_column is not None and item_column not in header:
        raise DataError(f"data file {path}: no column {item_column!r} for item_column (columns: {', '.join(header)})")
    if item_column is not None and item_column == label_column:
        raise DataError(f"data file {path}: item_column and label_column are both {item_column!r}")
    label_at = header.index(label_column) if label_column is not None else None
    item_at = header.index(item_column) if item_column is not None else None
    features = [i for i in range(len(header)) if i not in (label_at, item_at)]
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"data file {path}: line {n} has {len(row)} values, the header {len(header)}")
    try:
        x = np.array([[float(row[i]) if row[i].strip() else np.nan for i in features] for row in body])
    except ValueError as e:
        raise DataError(f"data file {path}: a feature value is not a number ({e})") from None
    y = np.array([row[label_at].strip() for row in body]) if label_at is not None else None
    items = Items(tuple(header[i] for i in features))
    if item_at is not None:
        values = [row[item_at].strip() for row in body]
        if values and all(v.lower().endswith(IMAGE_SUFFIXES) for v in values):
            folder = path.parent
            values = [str((folder / Path(v).expanduser()).resolve()) for v in values]
            items = items._replace(kind="image", values=tuple(values), column=item_column)
        else:
            items = items._replace(kind="text", values=tuple(values), column=item_column)
    return x, y, items


def file_digest(path: str | Path) -> str:
    """SHA-256 of a data file: part of the data stage's key, so an edited file is
    never mistaken for the one an experiment's results came from."""
    path = Path(path).expanduser()
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
