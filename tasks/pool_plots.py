"""Figures for pool-based data (anything but the tutorial's grid): scatter plots.

2-D data are drawn as they are; data with more features on a 2-D PCA projection
fitted on the pool. Large pools are drawn from a fixed subsample (the picks and the
labelled points always drawn), so a figure costs the same for 2,000 or 100,000
candidates. The tutorial's grid figures are in ``tasks/plots.py``.
"""

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from tasks.plots import (  # noqa: E402
    FORM_LAYOUT,
    _save,
    _unit_range,
    class_legend,
    number_points,
    save_gif,
    score_colorbar,
)

MAX_DRAWN = 4000  # pool points drawn per figure (a fixed subsample beyond that)


def colors(n_classes: int) -> np.ndarray:
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    return np.array([cmap(i % cmap.N) for i in range(n_classes)])


class Projection:
    """Identity for 2-D data, else the pool's first two principal components."""

    def __init__(self, pool: np.ndarray):
        pool = np.asarray(pool, np.float64)
        self.mean = pool.mean(axis=0)
        if pool.shape[1] <= 2:  # drawn as they are (1-D data on a line)
            self.axes, self.labels = np.eye(pool.shape[1], 2), ("x1", "x2")
        else:
            _, s, vt = np.linalg.svd(pool - self.mean, full_matrices=False)
            share = s**2 / np.sum(s**2)
            self.axes = vt[:2].T
            self.labels = tuple(f"PC{i + 1} ({100 * share[i]:.0f} % of the variance)" for i in range(2))
        self.is_identity = pool.shape[1] == 2
        self.pool = pool
        self.drawn = np.sort(np.random.default_rng(0).permutation(len(pool))[:MAX_DRAWN])

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.is_identity:
            return x
        return (x - (self.mean if x.shape[1] > 2 else 0)) @ self.axes

    def decorate(self, ax, title: str) -> None:
        ax.set_xlabel(self.labels[0], fontsize=8)
        ax.set_ylabel(self.labels[1], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.25)


def _labelled(ax, proj, x, y, palette):
    if x is not None and len(x):
        p = proj(x)
        ax.scatter(p[:, 0], p[:, 1], c=palette[np.asarray(y, int)], edgecolors="k", s=30, zorder=3)


def _picks(ax, proj, picks, numbered: bool = False):
    p = proj(np.atleast_2d(picks))
    ax.scatter(p[:, 0], p[:, 1], marker="*", s=260, c="red", edgecolors="k", zorder=4, clip_on=False)
    if len(p) > 1 or numbered:
        number_points(ax, p)


MAP_HANDLES = [
    Line2D([], [], marker="o", ls="", mfc="white", mec="k", label="labelled points"),
    Line2D([], [], marker="*", ls="", mfc="red", mec="k", ms=12, label="to label next"),
]


def _names(classes, n_classes: int):
    return list(classes) if classes is not None else [str(c) for c in range(n_classes)]


def _pool_axes(ax, proj, pool, preds, scores, palette):
    idx = proj.drawn
    p = proj(pool[idx])
    rgba = palette[np.asarray(preds)[idx].astype(int)].copy()
    rgba[:, 3] = 0.15 + 0.8 * _unit_range(np.asarray(scores)[idx])
    return ax.scatter(p[:, 0], p[:, 1], c=rgba, s=9, linewidths=0)


def data_plot(path: Path, proj: Projection, pool, x0, y0, xc, yc, n_classes: int, classes=None) -> Path:
    palette = colors(n_classes)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    p = proj(pool[proj.drawn])
    ax.scatter(p[:, 0], p[:, 1], c="#cccccc", s=6, linewidths=0, label="pool (unlabelled)")
    _labelled(ax, proj, x0, y0, palette)
    if xc is not None and len(xc):
        q = proj(xc)
        ax.scatter(q[:, 0], q[:, 1], c=palette[np.asarray(yc, int)], marker="s", s=18, edgecolors="grey", alpha=0.7)
    proj.decorate(ax, "Pool, initial (circles) and calibration (squares) points")
    extra = [Line2D([], [], marker="o", ls="", mfc="#cccccc", mec="none", label="pool (unlabelled)")]
    class_legend(ax, _names(classes, n_classes), palette, extra=extra)
    return _save(fig, path)


def points_plot(path: Path, proj: Projection, points, title) -> Path:
    """Points to label, numbered as in the form, on the pool (grey)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    drawn = proj(proj.pool[proj.drawn])
    ax.scatter(drawn[:, 0], drawn[:, 1], c="#dddddd", s=6, linewidths=0)
    p = proj(points)
    ax.scatter(p[:, 0], p[:, 1], c="red", edgecolors="k", s=30, zorder=3, clip_on=False)
    number_points(ax, p, fontsize=8, weight="normal")
    proj.decorate(ax, title)
    ax.legend(
        handles=[
            Line2D([], [], marker="o", ls="", mfc="red", mec="k", label="point to label (n: point_n)"),
            Line2D([], [], marker="o", ls="", mfc="#dddddd", mec="none", label="pool"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=7,
    )
    return _save(fig, path)


def uncertainty_plot(
    path: Path,
    proj: Projection,
    pool,
    preds,
    scores,
    x,
    y,
    picks,
    title,
    n_classes: int,
    *,
    classes=None,
    quantity: str = "acquisition score [-]",
    numbered: bool = False,
    tight: bool = True,
) -> Path:
    """Pool points coloured by predicted class, opacity by acquisition score
    (``quantity``, with its unit, on the colourbar); the labelled points; the picks
    starred (numbered when several, or when ``numbered``: a form's); ``tight=False``:
    a fixed layout, drawn once (a form's)."""
    palette = colors(n_classes)
    fig, ax = plt.subplots(figsize=(4.8, 4.8) if tight else (6.8, 5.6))
    if not tight:
        fig.subplots_adjust(**FORM_LAYOUT)
    _pool_axes(ax, proj, pool, preds, scores, palette)
    _labelled(ax, proj, x, y, palette)
    proj.decorate(ax, title)
    _picks(ax, proj, picks, numbered)
    class_legend(ax, _names(classes, n_classes), palette, extra=MAP_HANDLES, title="class (colour: predicted)")
    score_colorbar(fig, ax, np.asarray(scores)[proj.drawn], quantity)
    return _save(fig, path, tight=tight)


def prediction_plot(path: Path, proj: Projection, x_test, preds, y_test, title, n_classes: int, classes=None) -> Path:
    """Test points coloured by predicted class; the misclassified ones crossed."""
    palette = colors(n_classes)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    p = proj(x_test)
    ax.scatter(p[:, 0], p[:, 1], c=palette[np.asarray(preds, int)], s=10, linewidths=0)
    extra = []
    if y_test is not None:
        wrong = np.asarray(preds) != np.asarray(y_test)
        ax.scatter(p[wrong, 0], p[wrong, 1], marker="x", c="k", s=22, linewidths=0.8)
        extra.append(Line2D([], [], marker="x", ls="", c="k", label="misclassified"))
    proj.decorate(ax, title)
    class_legend(ax, _names(classes, n_classes), palette, extra=extra, title="class (colour: predicted)")
    return _save(fig, path)


def rounds_gif(
    path: Path,
    proj: Projection,
    pool,
    frames,
    n_classes: int,
    ms_per_frame: int = 350,
    *,
    classes=None,
    quantity: str = "acquisition score [-]",
) -> Path:
    """The rounds, one frame each: (preds, scores, x, y, picks, title)."""
    palette = colors(n_classes)
    frames = iter(frames)
    first = next(frames, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    if first is None:
        return path
    fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=70)
    fig.subplots_adjust(left=0.1, right=0.7, top=0.92, bottom=0.08)  # room for the legend and the colourbar
    score_colorbar(fig, ax, first[1], quantity, relative=True)
    names = _names(classes, n_classes)

    def draw(frame):
        preds, scores, x, y, picks, title = frame
        ax.clear()
        _pool_axes(ax, proj, pool, preds, scores, palette)
        _labelled(ax, proj, x, y, palette)
        proj.decorate(ax, title)
        _picks(ax, proj, picks)
        class_legend(ax, names, palette, extra=MAP_HANDLES, title="class (colour: predicted)")

    return save_gif(path, fig, draw, itertools.chain([first], frames), ms_per_frame)
