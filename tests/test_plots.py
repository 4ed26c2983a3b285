"""The figures name their classes, carry a colourbar with quantity and unit, and
keep the form's point numbers inside the picture (in-process, matplotlib Agg)."""

import numpy as np
import pytest

from alcore import strategies
from tasks import plots, pool_plots


@pytest.fixture
def kept(monkeypatch):
    """The figures the plot functions draw, kept open instead of saved."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, **kw: figures.append(fig) or path)
    monkeypatch.setattr(pool_plots, "_save", lambda fig, path, **kw: figures.append(fig) or path)
    yield figures
    for fig in figures:
        plots.plt.close(fig)


def _texts(fig) -> list[str]:
    out = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()] + [legend.get_title().get_text()]
        out += [ax.get_xlabel(), ax.get_ylabel()]
    return out


def _inside(fig, ax) -> bool:
    """Every number annotated on ``ax`` is drawn inside the axes."""
    fig.canvas.draw()
    box = ax.get_window_extent()
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    assert numbers
    return all(box.contains(*e.p0) and box.contains(*e.p1) for e in (t.get_window_extent() for t in numbers))


def test_the_grid_uncertainty_map_has_a_class_legend_a_colourbar_and_numbers_inside(kept, tmp_path):
    g = 10
    rng = np.random.default_rng(0)
    preds, scores = rng.integers(0, 3, g * g), rng.random(g * g) * 2.5
    corners = np.array([[0.99, 0.99], [0.0, 1.0], [1.0, 0.0]])  # numbers at the edges
    quantity = strategies.get("max_std").quantity
    plots.uncertainty_plot(
        tmp_path / "u.png", preds, scores, g, rng.random((4, 2)), rng.integers(0, 3, 4), corners, "t",
        truth=False, classes=("cat", "dog", "bird"), quantity=quantity, numbered=True,
    )  # fmt: skip
    fig = kept[-1]
    texts = _texts(fig)
    assert {"cat", "dog", "bird"} <= set(texts)
    assert any(t == f"shading: {quantity}" for t in texts) and quantity.endswith("[logit]")
    assert _inside(fig, fig.axes[0])


def test_pool_maps_name_the_classes_and_the_score(kept, tmp_path):
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(200, 5)).astype(np.float32)
    proj = pool_plots.Projection(pool)
    names = [str(d) for d in range(10)]
    quantity = strategies.get("bald").quantity
    pool_plots.uncertainty_plot(
        tmp_path / "u.png", proj, pool, rng.integers(0, 10, 200), rng.random(200), pool[:5], rng.integers(0, 10, 5),
        pool[[np.argmax(proj(pool)[:, 0])]], "t", 10, classes=names, quantity=quantity, numbered=True,
    )  # fmt: skip
    fig = kept[-1]
    assert set(names) <= set(_texts(fig)) and f"shading: {quantity}" in _texts(fig)
    assert _inside(fig, fig.axes[0])  # the right-most point's number
    pool_plots.prediction_plot(tmp_path / "p.png", proj, pool, rng.integers(0, 10, 200), None, "t", 10, names)
    assert set(names) <= set(_texts(kept[-1]))


def test_every_strategy_names_its_score_with_a_unit():
    for s in strategies.REGISTRY.values():
        assert s.quantity.endswith("]") and "[" in s.quantity, s.name


def test_the_round_animations_draw_with_legend_and_colourbar(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    g = 8
    frames = [(rng.integers(0, 3, g * g), rng.random(g * g), rng.random((3, 2)), [0, 1, 2], [[0.5, 0.5]], f"r{i}")
              for i in range(2)]  # fmt: skip
    gif = plots.rounds_gif(tmp_path / "a.gif", iter(frames), g, quantity="q [u]")
    pool = rng.normal(size=(50, 3))
    pool_frames = [(rng.integers(0, 4, 50), rng.random(50), pool[:3], [0, 1, 3], pool[[7]], f"r{i}") for i in range(2)]
    pool_gif = pool_plots.rounds_gif(
        tmp_path / "b.gif", pool_plots.Projection(pool), pool, iter(pool_frames), 4, classes="abcd"
    )
    for path in (gif, pool_gif):
        with Image.open(path) as image:
            assert image.n_frames == 2 and image.size[0] > image.size[1]  # room beside the map for the legend


@pytest.mark.parametrize("problem", ["tutorial", "wine"])
def test_one_map_interface_draws_every_pool(problem, tmp_path):
    """``tasks.maps``: the report and the forms draw any pool, the tutorial's grid
    included, through the same calls (images for the grid, scatter plots else)."""
    import sources
    from alcore.config import ExperimentConfig
    from tasks import maps

    config = ExperimentConfig(data=problem, grid_size=12, pool_size=120, n_initial=6, n_calibration=4)
    data = sources.draw(config)
    m = maps.for_data(data)
    assert isinstance(m, maps.GridMap if problem == "tutorial" else maps.ScatterMap)
    rng = np.random.default_rng(0)
    n, c = len(data.pool), data.n_classes
    preds, scores = rng.integers(0, c, n), rng.random(n)
    x, y, picks = data.x_initial, data.y_initial, data.pool[[0, 5]]
    x_eval = data.x_test if len(data.x_test) else data.pool
    drawn = [
        m.labelled(tmp_path / "d.png"),
        m.points(tmp_path / "p.png", picks, "t"),
        m.uncertainty(tmp_path / "u.png", preds, scores, x, y, picks, "t", quantity="q [u]"),
        m.uncertainty(tmp_path / "f.png", preds, scores, x, y, picks, "t", quantity="q [u]", form=True),
        m.prediction(tmp_path / "r.png", x_eval, rng.integers(0, c, len(x_eval)), x, y, "t"),
        m.animation(tmp_path / "a.gif", iter([(preds, scores, x, y, picks, "r1")]), quantity="q [u]"),
    ]
    wrong = m.misclassification(tmp_path / "m.png", preds, rng.integers(0, c, n), (0.9, 0.8))
    assert (wrong is not None) == (problem == "tutorial")  # the grid shows both models' errors side by side
    assert all(p.stat().st_size > 2000 for p in drawn + [wrong] if p is not None)
