"""The cold start: which points are labelled before the first round, chosen without labels.

``uniform`` (the tutorial's, and the split's) takes seeded random points. ``typiclust``
(Hacohen, Dekel and Weinshall 2022, "Active learning on a budget") clusters the
candidates into as many clusters as initial points and takes from each cluster its most
typical point: the one whose ``knn`` nearest neighbours within the cluster are closest
on average. The initial points then cover the data's modes, where uniform draws of 20
miss whole classes (digits: 8-9 of 10 classes on 8 of 10 seeds). Inputs with more than
``PCA_DIMS`` features are clustered on their first ``PCA_DIMS`` principal components
(standardised digits clustered on all 64 pixels missed a class on 3 of 10 seeds, on
PCA-20 on none).

Everything is NumPy: seeded k-means++ and Lloyd's iterations, 10 restarts, the lowest
inertia wins (with 5, the initial points of digits missed a class on seeds 0-2; with 10
they cover all 10 classes on seeds 0-9). The chosen points are candidates: their indices are kept in the
data record so they are never picked again.
"""

import numpy as np

from alcore.data import Data, DataError, _rng

COLD_STARTS = ("uniform", "typiclust")
PCA_DIMS = 20
KNN = 20


def principal_components(x: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray:
    """``x`` projected on its first ``dims`` principal components (itself if it has
    no more features than that)."""
    x = np.asarray(x, np.float64)
    if x.shape[1] <= dims:
        return x
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dims].T


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x**2).sum(1)[:, None] - 2.0 * x @ centres.T + (centres**2).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans(x: np.ndarray, k: int, *, rng: np.random.Generator, restarts: int = 10, iterations: int = 100) -> np.ndarray:
    """Cluster labels of k-means (k-means++ seeding, Lloyd's iterations; the restart of
    lowest inertia), shape (n,)."""
    x = np.asarray(x, np.float64)
    n = len(x)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = [x[rng.integers(n)]]
        closest = _sq_distances(x, np.asarray(centres))[:, 0]
        for _ in range(1, k):
            total = closest.sum()
            i = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
            centres.append(x[i])
            closest = np.minimum(closest, _sq_distances(x, x[i : i + 1])[:, 0])
        centres = np.asarray(centres)
        labels = None
        for _ in range(iterations):
            new = np.argmin(_sq_distances(x, centres), axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = x[labels == c]
                if len(members):
                    centres[c] = members.mean(axis=0)
        inertia = float(np.sum(np.min(_sq_distances(x, centres), axis=1)))
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def typiclust(x: np.ndarray, k: int, *, seed: int, knn: int = KNN) -> np.ndarray:
    """Indices of ``k`` points of ``x``: the most typical point of each of ``k``
    k-means clusters (typicality: the inverse mean distance to the ``knn`` nearest
    neighbours in the cluster), in cluster order."""
    if k > len(x):
        raise DataError(f"a cold start of {k} points needs at least as many candidates, got {len(x)}")
    z = principal_components(x)
    labels = kmeans(z, k, rng=_rng(seed, 4))
    chosen = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        if len(members) == 1:
            chosen.append(int(members[0]))
            continue
        d = np.sqrt(_sq_distances(z[members], z[members]))
        m = min(knn, len(members) - 1)
        nearest = np.sort(d, axis=1)[:, 1 : m + 1]
        chosen.append(int(members[np.argmin(nearest.mean(axis=1))]))
    # an empty cluster (duplicate points): fill up with the most typical unchosen points overall
    rest = np.setdiff1d(np.arange(len(x)), chosen)
    return np.asarray(chosen + [int(i) for i in rest[: k - len(chosen)]], np.int64)


def apply(data: Data, *, cold_start: str, seed: int) -> Data:
    """The data with the cold start's initial points: unchanged for ``uniform``; for
    ``typiclust`` the initial points are candidates of the pool, with their pool
    indices in ``initial_indices`` (their labels: the pool's, or -1 where a person
    labels them)."""
    if cold_start == "uniform":
        return data
    if cold_start != "typiclust":
        raise ValueError(f"unknown cold start {cold_start!r}; expected one of {', '.join(COLD_STARTS)}")
    idx = typiclust(data.pool, len(data.x_initial), seed=seed)
    labels = data.pool_labels[idx] if data.pool_labels is not None else np.full(len(idx), -1)
    rows = data.rows
    if rows is not None:  # the initial points' rows of the table are now the pool's
        rows = (np.asarray(rows[2])[idx], rows[1], rows[2])
    return data._replace(
        x_initial=np.asarray(data.pool[idx], np.float32),
        y_initial=np.asarray(labels, np.int32),
        initial_indices=idx,
        rows=rows,
    )


def standardised(data: Data) -> Data:
    """The tutorial's data standardised by its grid's mean and std (per feature), the
    scaler recorded as for pools (pools are standardised by their split already)."""
    if data.scaler is not None:
        return data
    mean = data.pool.mean(axis=0).astype(np.float32)
    std = data.pool.std(axis=0).astype(np.float32)
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    pool = scale(data.pool)
    same = data.x_test is data.pool
    return data._replace(
        x_initial=scale(data.x_initial),
        x_calibration=scale(data.x_calibration),
        pool=pool,
        x_test=pool if same else scale(data.x_test),
        scaler=(mean, std),
    )
