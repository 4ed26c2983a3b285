"""The data an experiment learns from: the tutorial's square, and any table split into pools.

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
  mean and std of the initial, calibration and pool points (never the test set; an
  image's pixels share one std, as they share one unit);
  the scaler is recorded in the record.

The candidates never shrink physically: a labelled pool point is excluded from the
picks instead, so the shapes of the compiled programs stay the same every round.

No file is read here: the tables of the bundled sets and of a user's file come from
the ``sources`` package, which hands them to :func:`build`.
"""

from typing import NamedTuple

import numpy as np

from alcore import problem

SYNTHETIC = ("moons", "circles", "blobs")
BUNDLED = ("digits", "wine", "breast_cancer", "iris")
PROBLEMS = ("tutorial", *SYNTHETIC, *BUNDLED, "file")


class Items(NamedTuple):
    """How a person sees a table's rows (for the forms; no number depends on it)."""

    feature_names: tuple[str, ...] = ()  # one per feature column, in order
    image_shape: tuple[int, ...] = ()  # the features are an image of this shape (digits: (8, 8))
    kind: str = ""  # "image": a file per row; "text": a short text per row; "": neither
    values: tuple[str, ...] = ()  # per table row: the image file's absolute path, or the text
    column: str = ""  # the file's column they come from


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
    items: Items | None = None  # how a person sees a point (feature names, an image, a text)
    rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # table rows of initial, calibration, pool
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
        """A candidate as a person reads it: its pool index (the tutorial's grid is a
        pool too) and its features."""
        return f"pool #{i}: {self.describe(self.pool[i])}"

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Points' features in the data's own units (before standardisation)."""
        x = np.asarray(x, np.float64)
        return x * self.scaler[1] + self.scaler[0] if self.scaler is not None else x

    def feature_names(self) -> tuple[str, ...]:
        """The features' names: the data's own (a CSV's header, scikit-learn's), else x1, x2, ..."""
        if self.items is not None and len(self.items.feature_names) == self.n_features:
            return self.items.feature_names
        return tuple(f"x{j + 1}" for j in range(self.n_features))

    def item_values(self, where: str, indices) -> list[str] | None:
        """The items (image paths or texts) of points of ``where`` ("initial",
        "calibration", "pool") by their indices there; None when the data have none."""
        if self.items is None or not self.items.kind or self.rows is None:
            return None
        rows = self.rows[("initial", "calibration", "pool").index(where)]
        return [self.items.values[int(rows[int(i)])] for i in indices]


class Table(NamedTuple):
    """A data set before the experiment's split."""

    x: np.ndarray  # (n, d) float32
    y: np.ndarray | None  # (n,) int32, None if unlabelled
    classes: tuple[str, ...]
    items: Items | None = None  # feature names, image shape, an image or text per row
    one_unit: bool = False  # the features share one unit (an image's pixels): one std scales them all


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
    names = tuple(f"x{j + 1}" for j in range(x.shape[1]))
    return Table(x.astype(np.float32), y.astype(np.int32), tuple(str(c) for c in range(k)), Items(names))


# ---------------------------------------------------------------- the split


def check_split_size(
    n: int,
    *,
    labelled: bool,
    n_initial: int,
    n_calibration: int,
    test_fraction: float,
    what: str = "the data have",
    pool_at_least: int = 1,
) -> int:
    """The number of test points of a split of ``n`` points (none without labels);
    raises :class:`DataError`, starting with ``what``, when ``n`` is too few (the
    pool must keep ``pool_at_least`` candidates: a cold start from the pool needs
    ``n_initial``)."""
    n_test = int(round(test_fraction * n)) if labelled else 0
    if n < n_test + n_initial + n_calibration + pool_at_least:
        raise DataError(
            f"{what} {n} points, fewer than the split needs: {n_test} test + {n_initial} initial + "
            f"{n_calibration} calibration + at least {pool_at_least} in the pool"
            + (
                " (the typiclust cold start picks the initial points from it; --cold-start uniform needs 1)"
                if pool_at_least > 1
                else ""
            )
        )
    return n_test


def split(table: Table, *, seed: int, n_initial: int, n_calibration: int, test_fraction: float) -> Data:
    """The seeded split of a table into test set, initial points, calibration points
    and pool; features standardised with the non-test points' statistics (each by its
    own std; an image's pixels by one std over all of them).

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
    if table.one_unit:
        # Pixels share one unit: one scale for all, the root of their mean variance.
        # Each pixel's own std would blow up the rarely inked border pixels (digits at
        # 70 random labels: scikit-learn's MLP 77.8 % per pixel vs 81.1 % shared, an
        # RBF SVM 84.8 vs 87.8; 5 seeds).
        std = np.full(table.x.shape[1], np.sqrt(table.x[fit].var(axis=0).mean()))
    else:
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
        items=table.items,
        rows=(initial, calibration, pool),
    )


def parse_class_names(text: str, n_classes: int | None) -> tuple[str, ...]:
    """The classes named by ``--class-names`` (comma-separated), checked against the
    ``n_classes`` the labels have (None: data without labels, any number from two)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if n_classes is not None and len(names) != n_classes:
        raise DataError(f"class_names has {len(names)} names, the labels have {n_classes} classes")
    if len(names) < 2:
        raise DataError("class_names must name at least two classes")
    if len(set(names)) != len(names):
        raise DataError(f"class_names names a class twice ({text!r})")
    return names


def build(
    table: Table | None,
    *,
    problem_name: str,
    seed: int,
    n_initial: int,
    n_calibration: int,
    grid_size: int,
    test_fraction: float,
) -> Data:
    """The :class:`Data` of a problem: the tutorial's draws (``table`` None), or the
    seeded split of a pool-based problem's table (see the module docstring)."""
    if problem_name == "tutorial":
        if table is not None:
            raise ValueError("the tutorial draws its own points: it takes no table")
        return tutorial(seed=seed, n_initial=n_initial, n_calibration=n_calibration, grid_size=grid_size)
    if table is None:
        raise ValueError(f"problem {problem_name!r} needs its table (sources.table_for)")
    return split(table, seed=seed, n_initial=n_initial, n_calibration=n_calibration, test_fraction=test_fraction)
