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
