"""The data an experiment learns from: the tutorial's square, other problems, the user's file.

Every problem becomes one :class:`Data` record: labelled initial and calibration
points, the pool of unlabelled candidates (with their true labels where they are
known: the oracle of a simulated experiment), a held-out test set, the class names
and the scaler. Two kinds:

- ``tutorial``: exactly the laplax tutorial's draws (bit-identical: tested). The
  initial and calibration points are uniform on the unit square, the pool and the
  test set are both the G x G grid, and nothing is standardised.
- pool-based (``moons``, ``circles``, ``blobs``, scikit-learn's bundled ``digits``,
  ``wine``, ``breast_cancer``, ``iris``, or a user's ``.csv`` / ``.npy`` / ``.npz``):
  a fixed, seeded split into a test set (``test_fraction``), the initial and the
  calibration points, and the pool (the rest). Features are standardised with the
  mean and std of the initial, calibration and pool points (never the test set);
  the scaler is recorded in the record.

The candidates never shrink physically: a labelled pool point is excluded from the
picks instead, so the shapes of the compiled programs stay the same every round.
"""

import functools
import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from alcore import problem

SYNTHETIC = ("moons", "circles", "blobs")
BUNDLED = ("digits", "wine", "breast_cancer", "iris")
PROBLEMS = ("tutorial", *SYNTHETIC, *BUNDLED, "file")


class Data(NamedTuple):
    """Everything an experiment's stages learn from and are evaluated on."""

    x_initial: np.ndarray  # (n0, d) float32
    y_initial: np.ndarray  # (n0,) int32
    x_calibration: np.ndarray  # (nc, d)
    y_calibration: np.ndarray  # (nc,)
    pool: np.ndarray  # (m, d): the candidates
    pool_labels: np.ndarray | None  # (m,): their true labels (None: only a person knows them)
    x_test: np.ndarray  # (t, d): the evaluation set (the tutorial: the grid)
    y_test: np.ndarray | None  # (t,)
    sampling_key: np.ndarray  # raw key data of the sampling key
    classes: tuple[str, ...] = ("0", "1", "2")
    scaler: tuple[np.ndarray, np.ndarray] | None = None  # (mean, std) applied to every x above
    grid_size: int = 0  # the tutorial's G (the pool is its G x G grid); 0 otherwise
    # the ground truth's labels of the initial and calibration points, when the
    # labels above came from a person (for reporting how often they agree)
    initial_truth: np.ndarray | None = None
    calibration_truth: np.ndarray | None = None
    initial_indices: np.ndarray | None = None  # pool indices of the initial points (a cold start from the pool)

    @property
    def n_features(self) -> int:
        return int(self.pool.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def describe(self, x: np.ndarray) -> str:
        """A point's features as a person reads them: in the data's own units (before
        standardisation), the first four of a long vector."""
        raw = x * self.scaler[1] + self.scaler[0] if self.scaler is not None else x
        if len(raw) <= 4:
            return "(" + ", ".join(f"{v:.3f}" for v in raw) + ")"
        return "(" + ", ".join(f"{v:.3g}" for v in raw[:4]) + f", ... {len(raw)} features)"

    def describe_candidate(self, i: int) -> str:
        """A candidate as a person reads it (with its pool index beyond the tutorial)."""
        text = self.describe(self.pool[i])
        return text if self.grid_size else f"pool #{i}: {text}"


class Table(NamedTuple):
    """A data set before the experiment's split."""

    x: np.ndarray  # (n, d) float32
    y: np.ndarray | None  # (n,) int32, None if unlabelled
    classes: tuple[str, ...]


class DataError(ValueError):
    """Data that cannot be used, with the reason (raised before any compute)."""


# ---------------------------------------------------------------- the tutorial


def tutorial(*, seed: int, n_initial: int, n_calibration: int, grid_size: int) -> Data:
    """The tutorial's draws: its seed split into four keys, uniform initial and
    calibration points, the G x G grid as pool and test set."""
    keys = problem.split_keys(seed)
    x0 = problem.uniform_points(keys.initial, n_initial)
    xc = problem.uniform_points(keys.calibration, n_calibration)
    grid = problem.grid_points(grid_size)
    labels = problem.true_labels(grid)
    return Data(
        x0,
        problem.true_labels(x0),
        xc,
        problem.true_labels(xc),
        grid,
        labels,
        grid,
        labels,
        sampling_key=keys.sampling,
        classes=tuple(str(c) for c in range(problem.N_CLASSES)),
        grid_size=grid_size,
    )


# ---------------------------------------------------------------- tables


def _rng(seed: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, purpose])


def synthetic(name: str, *, seed: int, n_points: int, n_features: int, n_classes: int, noise: float) -> Table:
    """Seeded synthetic problems: two ``moons`` and two ``circles`` in 2-D (two
    classes, ``noise`` the std of the Gaussian jitter), and ``blobs``: ``n_classes``
    overlapping Gaussian clusters in ``n_features`` dimensions."""
    rng = _rng(seed, 1)
    if name == "moons":
        half = n_points // 2
        t_out, t_in = np.pi * rng.random(n_points - half), np.pi * rng.random(half)
        outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
        inner = np.stack([1 - np.cos(t_in), 0.5 - np.sin(t_in)], axis=1)
        x, y = np.concatenate([outer, inner]), np.repeat([0, 1], [n_points - half, half])
    elif name == "circles":
        half = n_points // 2
        t = 2 * np.pi * rng.random(n_points)
        radius = np.where(np.arange(n_points) < n_points - half, 1.0, 0.5)
        x, y = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1), np.repeat([0, 1], [n_points - half, half])
    elif name == "blobs":
        centres = rng.normal(0.0, 2.0, size=(n_classes, n_features))
        y = rng.integers(0, n_classes, size=n_points)
        x = centres[y] + rng.normal(0.0, 1.0, size=(n_points, n_features))
        noise = 0.0
    else:
        raise DataError(f"unknown synthetic problem {name!r}; expected one of {', '.join(SYNTHETIC)}")
    x = x + noise * rng.normal(size=x.shape)
    k = int(y.max()) + 1
    return Table(x.astype(np.float32), y.astype(np.int32), tuple(str(c) for c in range(k)))


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
    return Table(
        np.asarray(bunch.data, np.float32),
        np.asarray(bunch.target, np.int32),
        tuple(str(c) for c in bunch.target_names),
    )


def read_file(path: str | Path, *, label_column: str | None) -> Table:
    """A user's data file, read once per content (see :func:`_read_file`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path}: no such file")
    stat = path.stat()
    return _read_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size, label_column)


@functools.lru_cache(maxsize=4)
def _read_file(path: str, mtime_ns: int, size: int, label_column: str | None) -> Table:
    """A user's data: ``.csv`` (a header row; numeric feature columns, and the label
    column if there is one: any values, mapped to classes in sorted order), ``.npy``
    (a feature matrix, no labels) or ``.npz`` (arrays ``x`` and, optionally, ``y``).

    Raises:
        DataError: naming the file and what is wrong (missing file or column, NaN or
            non-numeric values, a label column with a single class, no rows).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        x, y = _read_csv(path, label_column)
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
    if y is None:
        return Table(x, None, ())
    if len(y) != len(x):
        raise DataError(f"data file {path}: {len(y)} labels for {len(x)} points")
    names, codes = np.unique(np.asarray(y).astype(str), return_inverse=True)
    if len(names) < 2:
        raise DataError(f"data file {path}: the labels have a single class ({str(names[0])!r}); need at least two")
    return Table(x, codes.astype(np.int32), tuple(str(n) for n in names))


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"data file {path}: {e}") from None


def _read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    import csv

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
    label_at = header.index(label_column) if label_column is not None else None
    features = [i for i in range(len(header)) if i != label_at]
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"data file {path}: line {n} has {len(row)} values, the header {len(header)}")
    try:
        x = np.array([[float(row[i]) if row[i].strip() else np.nan for i in features] for row in body])
    except ValueError as e:
        raise DataError(f"data file {path}: a feature value is not a number ({e})") from None
    y = np.array([row[label_at].strip() for row in body]) if label_at is not None else None
    return x, y


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


# ---------------------------------------------------------------- the split


def check_split_size(
    n: int, *, labelled: bool, n_initial: int, n_calibration: int, test_fraction: float, what: str = "the data have"
) -> int:
    """The number of test points of a split of ``n`` points (none without labels);
    raises :class:`DataError`, starting with ``what``, when ``n`` is too few."""
    n_test = int(round(test_fraction * n)) if labelled else 0
    if n < n_test + n_initial + n_calibration + 1:
        raise DataError(
            f"{what} {n} points, fewer than the split needs: {n_test} test + {n_initial} initial + "
            f"{n_calibration} calibration + at least 1 in the pool"
        )
    return n_test


def split(table: Table, *, seed: int, n_initial: int, n_calibration: int, test_fraction: float) -> Data:
    """The seeded split of a table into test set, initial points, calibration points
    and pool; features standardised with the non-test points' statistics.

    Raises:
        DataError: when the table has too few points for the split.
    """
    n = len(table.x)
    n_test = check_split_size(
        n, labelled=table.y is not None, n_initial=n_initial, n_calibration=n_calibration, test_fraction=test_fraction
    )
    order = _rng(seed, 2).permutation(n)
    test, rest = order[:n_test], order[n_test:]
    initial, calibration, pool = (
        rest[:n_initial],
        rest[n_initial : n_initial + n_calibration],
        rest[n_initial + n_calibration :],
    )
    fit = np.concatenate([initial, calibration, pool])
    mean = table.x[fit].mean(axis=0)
    std = table.x[fit].std(axis=0)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    scale = lambda idx: ((table.x[idx] - mean) / std).astype(np.float32)  # noqa: E731
    known = table.y is not None
    labels = lambda idx: table.y[idx].astype(np.int32) if known else None  # noqa: E731
    unknown = lambda idx: np.full(len(idx), -1, np.int32)  # noqa: E731 - a person labels these
    return Data(
        scale(initial),
        labels(initial) if known else unknown(initial),
        scale(calibration),
        labels(calibration) if known else unknown(calibration),
        scale(pool),
        labels(pool),
        scale(test),
        labels(test),
        sampling_key=problem.split_keys(seed).sampling,
        classes=table.classes,
        scaler=(mean.astype(np.float32), std),
    )


# ---------------------------------------------------------------- one entry point


def source_options(c) -> dict:
    """The fields of a configuration (or of a stage's view of one) that say where a
    pool-based problem's table comes from: the keyword arguments of :func:`table_of`."""
    names = ("seed", "pool_size", "n_features", "n_classes", "noise", "data_file", "label_column", "class_names")
    return {name: getattr(c, name) for name in names}


def load(
    *, problem_name: str, n_initial: int, n_calibration: int, grid_size: int, test_fraction: float, **source
) -> Data:
    """The :class:`Data` of a problem (see the module docstring); ``source``: the
    keyword arguments of :func:`table_of` (:func:`source_options`)."""
    if problem_name == "tutorial":
        return tutorial(seed=source["seed"], n_initial=n_initial, n_calibration=n_calibration, grid_size=grid_size)
    table = table_of(problem_name, **source)
    return split(
        table, seed=source["seed"], n_initial=n_initial, n_calibration=n_calibration, test_fraction=test_fraction
    )


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
) -> Table:
    """The table of a pool-based problem, before its split."""
    if problem_name in SYNTHETIC:
        return synthetic(
            problem_name, seed=seed, n_points=pool_size, n_features=n_features, n_classes=n_classes, noise=noise
        )
    if problem_name in BUNDLED:
        return bundled(problem_name)
    if problem_name != "file":
        raise DataError(f"unknown problem {problem_name!r}; expected one of {', '.join(PROBLEMS)}")
    table = read_file(data_file, label_column=label_column)
    if class_names:
        names = tuple(n.strip() for n in class_names.split(",") if n.strip())
        if table.y is not None and len(names) != len(table.classes):
            raise DataError(f"class_names has {len(names)} names, the labels have {len(table.classes)} classes")
        if len(names) < 2:
            raise DataError("class_names must name at least two classes")
        table = table._replace(classes=names)
    elif table.y is None:
        raise DataError(f"data file {data_file} has no labels: give class_names, the classes a person chooses from")
    return table
