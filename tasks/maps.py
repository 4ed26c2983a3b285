"""Maps of a pool: one interface, whatever the pool is.

The tutorial's grid is a pool like any other (its candidates are the G x G points,
picked, excluded and scored like any pool's); only the way a map of it is drawn
differs: the grid as images of its G x G cells (``tasks/plots.py``), any other pool as
scatter plots, on a PCA projection beyond two features (``tasks/pool_plots.py``).
:func:`for_data` makes that choice once; the report and the forms ask a :class:`Map`
for their figures and never branch on the kind of pool.
"""

from pathlib import Path

from alcore.data import Data
from tasks import plots, pool_plots


class Map:
    """The figures of one pool. ``data`` gives the pool, the classes and their names."""

    def __init__(self, data: Data):
        self.data = data

    def labelled(self, path: Path) -> Path:
        """The initial (and calibration) points, coloured by their labels."""
        raise NotImplementedError

    def points(self, path: Path, points, title: str) -> Path:
        """Where ``points`` lie, numbered as a form's fields."""
        raise NotImplementedError

    def uncertainty(
        self, path: Path, preds, scores, x, y, picks, title: str, *, quantity: str, form: bool = False
    ) -> Path:
        """The pool's predicted classes shaded by the acquisition ``scores`` (their
        ``quantity`` on the colourbar), the labelled points ``x, y`` and the ``picks``
        starred. ``form``: drawn for a person (numbered picks, a fixed layout, and no
        true class boundaries: the form must not show the answer)."""
        raise NotImplementedError

    def prediction(self, path: Path, x_eval, preds, x, y, title: str) -> Path:
        """The model's predictions ``preds`` at ``x_eval`` (the test set, or the pool
        without one), with the labelled points ``x, y``."""
        raise NotImplementedError

    def misclassification(self, path: Path, active_preds, passive_preds, accuracies) -> Path | None:
        """Where the active and the passive model are wrong on the test set; None
        where the map cannot show it side by side (a scatter pool's test points are
        crossed in :meth:`prediction` instead)."""
        return None

    def animation(self, path: Path, frames, *, quantity: str) -> Path:
        """The rounds, one frame each: (preds, scores, x, y, picks, title)."""
        raise NotImplementedError


class GridMap(Map):
    """The tutorial's G x G grid, drawn as images on the unit square (points the model
    saw standardised are drawn where they are on the square)."""

    def __init__(self, data: Data):
        super().__init__(data)
        self.g = data.grid_size
        self.sq = data.raw  # the unit square's coordinates

    def labelled(self, path):
        d, sq = self.data, self.sq
        return plots.data_plot(path, sq(d.x_initial), d.y_initial, sq(d.x_calibration), d.y_calibration, d.classes)

    def points(self, path, points, title):
        return plots.points_plot(path, self.sq(points), title)

    def uncertainty(self, path, preds, scores, x, y, picks, title, *, quantity, form=False):
        return plots.uncertainty_plot(
            path, preds, scores, self.g, self.sq(x), y, self.sq(picks), title, truth=not form,
            classes=self.data.classes, quantity=quantity, numbered=form, tight=not form,
        )  # fmt: skip

    def prediction(self, path, x_eval, preds, x, y, title):
        d = self.data
        return plots.prediction_plot(path, preds, self.g, self.sq(x), y, len(d.x_initial), title, d.classes)

    def misclassification(self, path, active_preds, passive_preds, accuracies):
        return plots.misclassification_plot(path, active_preds, passive_preds, self.data.y_test, self.g, accuracies)

    def animation(self, path, frames, *, quantity):
        on_square = ((p, s, self.sq(x), y, self.sq(picks), t) for p, s, x, y, picks, t in frames)
        return plots.rounds_gif(path, on_square, self.g, classes=self.data.classes, quantity=quantity)


class ScatterMap(Map):
    """Any other pool: scatter plots of a fixed subsample, projected to 2-D."""

    def __init__(self, data: Data):
        super().__init__(data)
        self.proj = pool_plots.Projection(data.pool)

    def labelled(self, path):
        d = self.data
        return pool_plots.data_plot(
            path, self.proj, d.pool, d.x_initial, d.y_initial, d.x_calibration, d.y_calibration, d.n_classes,
            classes=d.classes,
        )  # fmt: skip

    def points(self, path, points, title):
        return pool_plots.points_plot(path, self.proj, points, title)

    def uncertainty(self, path, preds, scores, x, y, picks, title, *, quantity, form=False):
        d = self.data
        return pool_plots.uncertainty_plot(
            path, self.proj, d.pool, preds, scores, x, y, picks, title, d.n_classes, classes=d.classes,
            quantity=quantity, numbered=form, tight=not form,
        )  # fmt: skip

    def prediction(self, path, x_eval, preds, x, y, title):
        d = self.data
        truth = d.y_test if len(d.x_test) and len(x_eval) == len(d.x_test) else None  # crosses the errors
        return pool_plots.prediction_plot(path, self.proj, x_eval, preds, truth, title, d.n_classes, classes=d.classes)

    def animation(self, path, frames, *, quantity):
        d = self.data
        return pool_plots.rounds_gif(path, self.proj, d.pool, frames, d.n_classes, classes=d.classes, quantity=quantity)


def for_data(data: Data) -> Map:
    """The map of ``data``'s pool: images for the tutorial's grid, scatter plots else."""
    return GridMap(data) if data.grid_size else ScatterMap(data)
