"""The means the peers comparison measured: the cold start, the prior in the loss, the
retraining schedules, stochastic batches, and the defaults pool data take from them."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import sources
from alcore import acquisition, coldstart, strategies, training
from alcore import experiment as ex
from alcore.config import POOL_DEFAULTS, ExperimentConfig
from tests.helpers import ROOT


def test_typiclust_covers_every_digit_where_uniform_draws_miss_some():
    c = ExperimentConfig(data="digits", rounds=1)
    assert c.cold_start == "typiclust"
    data = sources.draw(c)
    assert len(data.initial_indices) == 20 == len(set(data.initial_indices.tolist()))
    np.testing.assert_array_equal(data.x_initial, data.pool[data.initial_indices])
    np.testing.assert_array_equal(data.y_initial, data.pool_labels[data.initial_indices])
    assert len(set(data.y_initial.tolist())) == 10  # seeds 0-9 all do (5 k-means restarts: 0-2 missed one)
    uniform = sources.draw(c.model_copy(update={"cold_start": "uniform"}))
    assert uniform.initial_indices is None and len(set(uniform.y_initial.tolist())) < 10


def test_kmeans_finds_separated_clusters_and_typiclust_takes_their_centres():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.normal(size=(50, 2)) for c in centres])
    labels = coldstart.kmeans(x, 3, rng=np.random.default_rng(1))
    assert sorted(np.bincount(labels).tolist()) == [50, 50, 50]
    picked = coldstart.typiclust(x, 3, seed=0)
    assert sorted(np.argmin(np.linalg.norm(x[picked][:, None] - centres[None], axis=2), axis=1).tolist()) == [0, 1, 2]
    assert np.all(np.linalg.norm(x[picked][:, None] - centres[None], axis=2).min(axis=1) < 1.0)


def test_pool_defaults_are_the_measured_winner_and_the_tutorial_keeps_its_own():
    tutorial, pool = ExperimentConfig(), ExperimentConfig(data="wine")
    for field, value in POOL_DEFAULTS.items():
        assert getattr(pool, field) == value
    assert (tutorial.cold_start, tutorial.retrain_schedule, tutorial.train_with_prior) == ("uniform", "warm", False)
    assert (tutorial.batch_size, tutorial.learning_rate, tutorial.batch_rule) == (10, 1e-3, "greedy")
    assert ExperimentConfig(data="wine", batch_size=10).batch_size == 10  # given fields win
    assert "epig" not in strategies.names() and strategies.EPIG.score == "epig"
    # the retired strategy keeps what its maps' colourbar says when registered again
    assert strategies.EPIG.quantity == "expected predictive information gain [nats]"


def test_the_prior_in_the_loss_adds_exactly_tau_over_two_theta_squared_per_epoch():
    params = ex.init_params(seed=0, hidden=4, in_dim=2, n_classes=3)
    x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0], np.int32)
    m = np.ones(7, np.float32)
    sq = sum(float(np.sum(np.asarray(leaf, np.float64) ** 2)) for leaf in jax.tree.leaves(params))
    plain = float(training.batch_loss(params, x, y, m))
    with_prior = float(training.regularised_batch_loss(params, x, y, m, 0.5, 7.0))
    assert with_prior - plain == pytest.approx(0.25 * sq, rel=1e-5)
    halves = [
        float(
            training.regularised_batch_loss(
                params, x, y, m * (np.arange(7) < 4) if h else m * (np.arange(7) >= 4), 0.5, 7.0
            )
        )
        for h in (0, 1)
    ]  # noqa: E501
    assert sum(halves) == pytest.approx(with_prior, rel=1e-5)


def test_full_batches_and_the_schedules_of_retraining():
    sched = training.epoch_batches(n_points=5, n_epochs=3, batch_size=0, max_points=8)
    assert sched.index.shape == (3, 1, 8) and sched.mask.sum(axis=(1, 2)).tolist() == [5, 5, 5]
    x = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    state, _ = ex.train_from_scratch(x, y, seed=3, hidden_channels=4, learning_rate=1e-2, epochs=5, batch_size=0)
    kw = dict(learning_rate=1e-2, epochs=5, batch_size=0, seed=3, hidden_channels=4)
    scratch, _ = ex.retrain(state, x, y, restart="scratch", **kw)
    again, _ = ex.retrain(ex.ModelState(scratch.params, scratch.opt_state), x, y, restart="scratch", **kw)
    for a, b in zip(jax.tree.leaves(scratch.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(a, b)  # scratch: nothing of the state it got is kept
    fresh, _ = ex.retrain(state, x, y, restart="fresh", **kw)
    warm, _ = ex.retrain(state, x, y, restart="warm", **kw)
    assert not np.array_equal(fresh.params["linear1"]["kernel"], warm.params["linear1"]["kernel"])
    prior, _ = ex.retrain(state, x, y, restart="fresh", prior_prec=100.0, **kw)
    norm = lambda p: sum(float(np.sum(leaf**2)) for leaf in jax.tree.leaves(p))  # noqa: E731
    assert norm(prior.params) < norm(fresh.params)
    with pytest.raises(ValueError, match="restart"):
        ex.retrain(state, x, y, restart="cold", **kw)


@pytest.mark.parametrize("rule", ["softrank", "power"])
def test_stochastic_batches_are_distinct_allowed_and_favour_high_scores(rule):
    scores = -np.linspace(0.0, 1.0, 200)  # a margin score: candidate 0 the most uncertain
    counts = np.zeros(200)
    for i in range(200):
        picked = acquisition.stochastic_batch(scores, 10, rule=rule, beta=4.0, key=jax.random.key(i), exclude=[0, 1])
        assert len(set(picked)) == 10 and not {0, 1} & set(picked)
        counts[picked] += 1
    assert counts[2:20].sum() > counts[100:118].sum() * 3
    with pytest.raises(ValueError, match="fewer than the batch"):
        acquisition.stochastic_batch(scores[:5], 10, rule=rule, beta=4.0, key=jax.random.key(0), exclude=[])


def test_diverse_batches_take_the_best_of_each_cluster_of_the_top_candidates():
    # two tight clumps of high scores and a spread of low ones: top-k would take all
    # ten from the best clump; diverse takes the best of each clump first
    rng = np.random.default_rng(0)
    inputs = np.concatenate(
        [rng.normal(0.0, 0.01, (30, 2)), rng.normal(5.0, 0.01, (30, 2)), rng.uniform(-9, 9, (140, 2))]
    )
    scores = np.concatenate([1.0 + rng.uniform(0, 0.1, 30), 0.9 + rng.uniform(0, 0.05, 30), rng.uniform(0, 0.5, 140)])
    best = int(np.argmax(scores))
    picked = acquisition.diverse_batch(scores, inputs, 2, factor=20.0, key=jax.random.key(0), exclude=[best])
    assert picked[0] == int(np.argsort(-scores)[1])  # the best allowed, first
    assert picked[1] == 30 + int(np.argmax(scores[30:60]))  # the other clump's best
    picked = acquisition.diverse_batch(scores, inputs, 10, factor=4.0, key=jax.random.key(1), exclude=[])
    assert len(set(picked)) == 10 and np.all(np.diff(scores[picked]) <= 0)
    assert set(picked) <= set(np.argsort(-scores)[:40].tolist())  # only from the top factor x k
    assert any(30 <= i < 60 for i in picked) and any(i < 30 for i in picked)
    top = acquisition.diverse_batch(scores, inputs, 10, factor=1.0, key=jax.random.key(1), exclude=[])
    assert sorted(top) == sorted(np.argsort(-scores)[:10].tolist())  # factor 1: the top-k
    same = np.zeros((20, 2))  # identical inputs: empty clusters are filled from the top
    assert (
        len(set(acquisition.diverse_batch(np.arange(20.0), same, 5, factor=2.0, key=jax.random.key(0), exclude=[])))
        == 5
    )
    with pytest.raises(ValueError, match="fewer than the batch"):
        acquisition.diverse_batch(scores[:5], inputs[:5], 10, factor=4.0, key=jax.random.key(0), exclude=[])


def _tutorial_sweep(env: dict, folder, strategy: str) -> tuple[dict, list[float]]:
    """The honest sweep of one strategy on the tutorial, 10 seeds, 50 labels after 20:
    its results and the 10 final accuracies."""
    proc = subprocess.run(
        [sys.executable, "-m", "flows.sweep", "--sequential", "--seeds", "10", "--strategies", strategy,
         "--label-budget", "50", "--artifacts-dir", str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the marginal likelihood needs no held-out points: the log counts the labelled ones
    assert (proc.stdout + proc.stderr).count("(calibrated by MARGLIK on 20 points)") == 10
    doc = json.loads(next(folder.glob("sweep-*/results.json")).read_text())
    finals = [e["final_accuracy"] for e in doc["experiments"] if e["strategy"] == strategy]
    assert len(finals) == 10
    return doc, finals


@pytest.mark.slow
@pytest.mark.server
def test_the_tutorial_margin_with_the_pool_settings_keeps_its_figure(prefect_server, tmp_path):
    """The README's headline against the peers, as the honest sweep measures it (10
    seeds, 50 labels after 20): at least 98.0 % mean accuracy at 70 labels (98.37 here;
    per-seed spread 0.37, so a CPU's other trajectories move the mean about 0.12) and
    95 % reached on every seed. A Monte-Carlo change once took it to 97.79 % unnoticed
    (docs/peers.md)."""
    doc, finals = _tutorial_sweep(prefect_server["env"], tmp_path, "margin")
    assert {e["rounds"] for e in doc["experiments"]} == {50}
    print(f"\ntutorial margin, pool settings, 10 seeds: {100 * np.mean(finals):.2f} % at 70 labels")
    assert np.mean(finals) >= 0.980, finals
    [row] = [r for r in doc["table"] if r["strategy"] == "margin"]
    assert "(10/10)" in str(row["labels_to_95"]), row


@pytest.mark.slow
@pytest.mark.server
def test_batches_of_ten_stay_within_a_point_of_one_label_a_round(prefect_server, tmp_path):
    """#23's batch goal, as the honest sweep measures it: the tutorial's margin with
    batches of 10 (the pools' default rule, diverse) at least 97.4 % mean at 70 labels,
    within a point of one label a round (98.37 %; the test above holds that >= 98.0).
    98.08 % here; softrank, the rule before, gave 96.85 % (docs/peers.md). 40 s."""
    assert POOL_DEFAULTS["batch_rule"] == "diverse"
    doc, finals = _tutorial_sweep(prefect_server["env"], tmp_path, "margin:k10")
    assert {e["rounds"] for e in doc["experiments"]} == {5}
    print(f"\ntutorial margin:k10, pool settings, 10 seeds: {100 * np.mean(finals):.2f} % at 70 labels")
    assert np.mean(finals) >= 0.974, finals
