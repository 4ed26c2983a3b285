"""Figures of an experiment (matplotlib, Agg; no Prefect). Each returns a PNG path.

Every map names its classes in a legend, and a map shaded by a quantity has a
colourbar with the quantity and its unit; numbers beside points are placed inside
the axes (towards the centre), so none is cut off at an edge.
"""

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, ListedColormap, Normalize, to_rgba  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from PIL import Image  # noqa: E402

from alcore.problem import boundary_curves  # noqa: E402

CLASS_COLORS = ["#4C72B0", "#DD8452", "#55A868"]
CMAP = ListedColormap(CLASS_COLORS)
EXTENT = (0.0, 1.0, 0.0, 1.0)
TUTORIAL_CLASSES = ("0", "1", "2")
# the shading of a score map: a class colour's opacity from 0.1 (lowest) to 0.9 (highest)
SHADE = LinearSegmentedColormap.from_list("shade", [(0.9, 0.9, 0.9), (0.15, 0.15, 0.15)])
MAX_LEGEND = 20  # classes named in a legend (beyond: the first ones and a count)


def class_legend(ax, classes, palette, *, extra=(), title="class") -> None:
    """A legend naming each class by its colour (and ``extra`` handles), beside the axes."""
    names = list(classes)
    handles = [
        Line2D([], [], marker="o", ls="", markerfacecolor=palette[i % len(palette)], markeredgecolor="k", label=n)
        for i, n in enumerate(names[:MAX_LEGEND])
    ]
    if len(names) > MAX_LEGEND:
        handles.append(Line2D([], [], ls="", label=f"... {len(names) - MAX_LEGEND} more"))
    ax.legend(
        handles=handles + list(extra),
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=7,
        title_fontsize=7,
        borderaxespad=0.0,
    )


def score_colorbar(fig, ax, scores, quantity: str, *, relative: bool = False):
    """The colourbar of a map shaded by ``scores`` (darker: higher), labelled with the
    quantity and its unit; ``relative``: each frame's own range (an animation)."""
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = (0.0, 1.0) if relative else (float(scores.min()), float(scores.max()))
    bar = fig.colorbar(
        ScalarMappable(Normalize(lo, hi if hi > lo else lo + 1), SHADE),
        ax=ax,
        orientation="horizontal",
        fraction=0.05,
        pad=0.12,
    )
    label = f"shading: {quantity}" + (" (relative to each round's range)" if relative else "")
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return bar


def number_points(ax, points, *, fontsize=9, weight="bold") -> None:
    """Number ``points`` 1, 2, ... as in the form, each label offset towards the
    axes' centre so that none is cut off at an edge."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    for n, (px, py) in enumerate(np.atleast_2d(np.asarray(points))[:, :2], start=1):
        right = (px - x0) / ((x1 - x0) or 1) > 0.85
        top = (py - y0) / ((y1 - y0) or 1) > 0.85
        ax.annotate(
            str(n),
            (px, py),
            xytext=(-6 if right else 6, -6 if top else 6),
            textcoords="offset points",
            ha="right" if right else "left",
            va="top" if top else "bottom",
            fontsize=fontsize,
            weight=weight,
            annotation_clip=False,
            zorder=5,
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
        )


def _boundaries(ax, truth: bool = True):
    if truth:
        xs = np.linspace(0, 1, 200)
        f1, f2 = boundary_curves(xs)
        ax.plot(xs, np.asarray(f1), "k--", lw=1.2, label="true boundaries")
        ax.plot(xs, np.asarray(f2), "k--", lw=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")


def _points(ax, x, y, **kw):
    ax.scatter(x[:, 0], x[:, 1], c=[CLASS_COLORS[int(i)] for i in y], edgecolors="k", s=28, zorder=3, **kw)


def _class_image(preds, grid_size, alpha=None):
    rgba = np.array([to_rgba(c) for c in CLASS_COLORS])[np.asarray(preds).astype(int)]
    rgba[:, 3] = 0.45 if alpha is None else 0.1 + 0.8 * alpha
    return rgba.reshape(grid_size, grid_size, 4)


def _save(fig, path: Path, *, tight: bool = True) -> Path:
    """Save and close ``fig``; ``tight=False`` keeps the figure's own fixed layout
    (one render instead of two, at 90 dpi: a form's map, drawn while a person waits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110 if tight else 90, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


FORM_LAYOUT = {"left": 0.1, "right": 0.68, "top": 0.93, "bottom": 0.08}  # room for the legend and the colourbar


def data_plot(path: Path, x, y, x_cal=None, y_cal=None, classes=TUTORIAL_CLASSES) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    _boundaries(ax)
    _points(ax, x, y, label="initial points")
    if x_cal is not None:
        ax.scatter(
            x_cal[:, 0],
            x_cal[:, 1],
            c=[CLASS_COLORS[int(i)] for i in y_cal],
            marker="s",
            s=18,
            edgecolors="grey",
            alpha=0.6,
            label="calibration points",
        )
    ax.set_title("Data and true decision boundaries")
    extra = [
        Line2D([], [], marker="o", ls="", mfc="white", mec="k", label="initial points"),
        Line2D([], [], ls="--", c="k", label="true boundaries"),
    ]
    if x_cal is not None and len(x_cal):
        extra.insert(1, Line2D([], [], marker="s", ls="", mfc="white", mec="grey", label="calibration points"))
    class_legend(ax, classes, CLASS_COLORS, extra=extra)
    return _save(fig, path)


def prediction_plot(path: Path, preds, grid_size, x, y, n_initial, title, classes=TUTORIAL_CLASSES) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(_class_image(preds, grid_size), origin="lower", extent=EXTENT)
    _boundaries(ax)
    _points(ax, x[:n_initial], y[:n_initial], marker="o")
    if len(x) > n_initial:
        _points(ax, x[n_initial:], y[n_initial:], marker="^")
    ax.set_title(title)
    extra = [
        Line2D([], [], marker="o", ls="", mfc="white", mec="k", label="initial points"),
        Line2D([], [], marker="^", ls="", mfc="white", mec="k", label="acquired points"),
    ]
    class_legend(ax, classes, CLASS_COLORS, extra=extra, title="class (shade: predicted)")
    return _save(fig, path)


def uncertainty_plot(
    path: Path,
    preds,
    scores,
    grid_size,
    x,
    y,
    next_points,
    title,
    *,
    truth: bool = True,
    classes=TUTORIAL_CLASSES,
    quantity: str = "acquisition score [-]",
    numbered: bool = False,
    tight: bool = True,
) -> Path:
    """The predicted classes shaded by the acquisition scores (``quantity``: what they
    are, with the unit), the labelled points, the chosen ones starred (numbered when
    several, or when ``numbered``: a form's); ``truth=False`` leaves out the true
    boundaries (a form asking a person must not show the answer); ``tight=False``: a
    fixed layout, drawn once (a form's)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.8) if tight else (6.6, 5.6))
    if not tight:
        fig.subplots_adjust(**FORM_LAYOUT)
    _uncertainty_axes(ax, preds, scores, grid_size, x, y, next_points, truth=truth)
    pts = np.atleast_2d(np.asarray(next_points))
    if len(pts) > 1 or numbered:
        number_points(ax, pts)
    ax.set_title(title, fontsize=9)
    class_legend(ax, classes, CLASS_COLORS, extra=_map_handles(truth), title="class (shade: predicted)")
    score_colorbar(fig, ax, scores, quantity)
    return _save(fig, path, tight=tight)


def _map_handles(truth: bool) -> list:
    out = [
        Line2D([], [], marker="o", ls="", mfc="white", mec="k", label="labelled points"),
        Line2D([], [], marker="*", ls="", mfc="red", mec="k", ms=12, label="to label next"),
    ]
    if truth:
        out.append(Line2D([], [], ls="--", c="k", label="true boundaries"))
    return out


def points_plot(path: Path, points, title) -> Path:
    """Points to label, numbered as in the form (no boundaries: the answer is the
    person's; no classes yet: nothing is shaded)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    _boundaries(ax, truth=False)
    ax.scatter(points[:, 0], points[:, 1], c="red", edgecolors="k", s=30, zorder=3, clip_on=False)
    number_points(ax, points, fontsize=8, weight="normal")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(
        handles=[Line2D([], [], marker="o", ls="", mfc="red", mec="k", label="point to label (n: point_n)")],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=7,
    )
    return _save(fig, path)


def items_plot(path: Path, images, titles, *, cmap="gray_r") -> Path:
    """The items to label as pictures, each titled as its form field (``point_1``,
    ...): the digits' 8 x 8 images or a person's image files, about 200 pixels each,
    large enough to judge."""
    n = len(images)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        image = np.asarray(image)
        ax.imshow(image, cmap=cmap if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=10, weight="bold")
    return _save(fig, path)


def _uncertainty_axes(ax, preds, scores, grid_size, x, y, next_point, *, truth: bool = True):
    ax.imshow(_class_image(preds, grid_size, _unit_range(scores)), origin="lower", extent=EXTENT)
    _boundaries(ax, truth)
    _points(ax, x, y)
    pts = np.atleast_2d(np.asarray(next_point))
    ax.scatter(pts[:, 0], pts[:, 1], marker="*", s=260, c="red", edgecolors="k", zorder=4, clip_on=False)


def _unit_range(scores):
    """Any score's range mapped to [0, 1] (all zeros when the scores are constant)."""
    scores = np.asarray(scores, dtype=np.float64)
    span = float(scores.max() - scores.min())
    return (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)


def misclassification_plot(path: Path, active_preds, passive_preds, labels, grid_size, accs) -> Path:
    """Where each model is wrong on the grid (red), beside each other."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2), sharey=True)
    for ax, preds, name, acc in zip(axes, (active_preds, passive_preds), ("active", "passive"), accs, strict=True):
        wrong = (np.asarray(preds) != np.asarray(labels)).reshape(grid_size, grid_size)
        ax.imshow(wrong, origin="lower", extent=EXTENT, cmap=ListedColormap(["#f4f4f4", "#c0392b"]), vmin=0, vmax=1)
        _boundaries(ax)
        ax.set_title(f"{name} model: {100 * (1 - wrong.mean()):.1f}% correct" if acc is not None else name)
    fig.suptitle("Misclassified grid points (red)")
    axes[-1].legend(
        handles=[
            Line2D([], [], marker="s", ls="", mfc="#c0392b", mec="none", label="misclassified"),
            Line2D([], [], marker="s", ls="", mfc="#f4f4f4", mec="grey", label="correct"),
            Line2D([], [], ls="--", c="k", label="true boundaries"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=7,
    )
    return _save(fig, path)


def accuracy_plot(path: Path, accuracies, passive_accuracy) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rounds = np.arange(1, len(accuracies) + 1)
    ax.plot(rounds, 100 * np.asarray(accuracies), marker=".", label="active learning")
    if passive_accuracy is not None:
        ax.axhline(100 * passive_accuracy, ls="--", c="k", label="passive baseline (same budget)")
    ax.set_xlabel("active learning round")
    ax.set_ylabel("test accuracy [%]")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def calibration_plot(path: Path, grid, ece, chosen) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogx(grid, ece, marker=".")
    ax.axvline(chosen, c="red", ls=":", label=f"chosen: {chosen:.4g}")
    ax.set_xlabel("prior precision")
    ax.set_ylabel("ECE (calibration set)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def rounds_gif(
    path: Path,
    frames,
    grid_size,
    ms_per_frame: int = 350,
    *,
    classes=TUTORIAL_CLASSES,
    quantity="acquisition score [-]",
) -> Path:
    """Animate the rounds: each frame is (preds, scores, x, y, next_point, title).

    The figure is drawn once; each frame only replaces the image, the points and the
    title and re-renders the canvas (no PNG round trip): 1.1 s instead of 2.7 s for
    the default 50 frames, measured on the 2-core machine.
    """
    frames = iter(frames)  # drawn one at a time: memory does not grow with the rounds
    first = next(frames, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    if first is None:
        return path
    fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=70)
    fig.subplots_adjust(left=0.08, right=0.7, top=0.92, bottom=0.05)  # room for the legend and the colourbar
    preds, scores, x, y, next_point, title = first
    _uncertainty_axes(ax, preds, scores, grid_size, x, y, next_point)
    image, (labelled, star) = ax.images[0], ax.collections
    heading = ax.set_title(title, fontsize=9)
    class_legend(ax, classes, CLASS_COLORS, extra=_map_handles(True), title="class (shade: predicted)")
    score_colorbar(fig, ax, scores, quantity, relative=True)

    def draw(frame):
        preds, scores, x, y, next_point, title = frame
        image.set_data(_class_image(preds, grid_size, _unit_range(scores)))
        labelled.set_offsets(np.asarray(x)[:, :2])
        labelled.set_facecolors([CLASS_COLORS[int(i)] for i in y])
        star.set_offsets(np.atleast_2d(np.asarray(next_point)))
        heading.set_text(title)

    return save_gif(path, fig, draw, itertools.chain([first], frames), ms_per_frame)


def save_gif(path: Path, fig, draw, frames, ms_per_frame: int) -> Path:
    """Draw each frame on ``fig`` (``draw(frame)``), render it, and save them as a GIF."""
    images = []
    for frame in frames:
        draw(frame)
        fig.canvas.draw()
        rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        images.append(rgb.quantize(colors=128, method=Image.Quantize.FASTOCTREE))
    plt.close(fig)
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path
