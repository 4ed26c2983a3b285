"""The project's strategies against scikit-activeml's, side by side, on the same labels.

    python -m benchmarks.peers [--data tutorial,moons,digits,wine,breast_cancer] [--seeds 10]
        [--label-budget 130] [--strategies margin,random] [--peers gp_margin,...] [--workers 2]

One invocation runs, per data set, the project's sweep (``flows.sweep``, the honest
protocol and its defaults: every label counted) and the peers: scikit-activeml 1.0.1's
``UncertaintySampling`` (margin, entropy) and ``RandomSampling`` around scikit-learn's
``MLPClassifier`` (the project's 3 x 32 tanh layers, 2,000 iterations) and
``GaussianProcessClassifier`` (an RBF kernel scaled to the data: its length scale
starts at the candidates' median distance, bounded to 1/100-10x it, the amplitude to
1e-2-1e3; the marginal likelihood fitted with 3 restarts). Every peer gets exactly what
the project's experiment of the same seed gets: the data, the split, the test set, the
initial points (the project's cold start) and one label a round for the same budget.

It prints one table per data set (accuracy at the ``--at`` label counts, labels to 90
and 95 %, per-seed wins at the first count against each peer, ties one half) with the
issue's goals, met or not, and writes everything to ``<artifacts-dir>/peers.json``
(keeping the data sets of earlier invocations that this one did not run).
Needs the ``peers`` extra (``pip install -e .[peers]``; requirements.lock pins it).
A peer's curve is cached per (data, peer, seed, budget) in ``<artifacts-dir>/peers/``,
the project's experiments in their folders, so a second invocation only aggregates.
"""

import os

import sources

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import argparse  # noqa: E402
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from alcore import experiment as ex
from alcore import stages as st
from alcore.config import ExperimentConfig, digest
from alcore.sweep_stats import accuracy_at, labels_to_reach, mean_interval
from flows.sweep import SweepConfig, parse_strategy, sweep, task_runner_for
from store.code_version import code_version
from store.layout import Workspace

DATA_SETS = ("tutorial", "moons", "digits", "wine", "breast_cancer")
PEERS = ("gp_margin", "gp_entropy", "gp_random", "mlp_margin", "mlp_entropy", "mlp_random")
THRESHOLDS = (0.90, 0.95)
OURS = "margin"  # the project's strategy the goals are about


# ---------------------------------------------------------------- the peers


def peer_classifier(model: str, x: np.ndarray, n_classes: int, seed: int):
    """scikit-activeml's wrapper around scikit-learn's MLP or Gaussian process."""
    from skactiveml.classifier import SklearnClassifier
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel
    from sklearn.neural_network import MLPClassifier

    if model == "gp":
        sample = x[np.random.default_rng(0).choice(len(x), size=min(1000, len(x)), replace=False)]
        dist = np.sqrt(np.maximum(((sample[:, None] - sample[None]) ** 2).sum(-1), 0.0))
        scale = float(np.median(dist[np.triu_indices(len(sample), 1)]))
        kernel = ConstantKernel(1.0, (1e-2, 1e3)) * RBF(
            length_scale=scale, length_scale_bounds=(scale / 100, scale * 10)
        )
        estimator = GaussianProcessClassifier(kernel, n_restarts_optimizer=3, random_state=seed)
    elif model == "mlp":
        estimator = MLPClassifier((32, 32, 32), activation="tanh", max_iter=2000, random_state=seed)
    else:
        raise ValueError(f"unknown peer model {model!r}: gp or mlp")
    return SklearnClassifier(estimator, classes=np.arange(n_classes), random_state=seed)


def run_peer(peer: str, config: ExperimentConfig, budget: int) -> dict:
    """One peer on one experiment's data: its learning curve (labels used, test
    accuracy), from the project's initial points, one label a round."""
    from skactiveml.pool import RandomSampling, UncertaintySampling

    model, _, strategy = peer.partition("_")
    data = sources.draw(config)
    if data.initial_indices is not None:  # a cold start from the pool: those candidates are labelled
        x_all = np.asarray(data.pool, np.float64)
        truth = np.asarray(data.pool_labels, np.float64)
        labelled = np.asarray(data.initial_indices)
    else:  # uniform initial points beside the pool
        x_all = np.concatenate([data.x_initial, data.pool]).astype(np.float64)
        truth = np.concatenate([data.y_initial, data.pool_labels]).astype(np.float64)
        labelled = np.arange(len(data.x_initial))
    y = np.full(len(x_all), np.nan)
    y[labelled] = truth[labelled]
    if strategy == "random":
        query = RandomSampling(random_state=config.seed)
    else:
        method = {"margin": "margin_sampling", "entropy": "entropy"}[strategy]
        query = UncertaintySampling(method=method, random_state=config.seed)
    clf = peer_classifier(model, x_all, data.n_classes, config.seed)
    labels, accuracy, seconds, chosen = [len(labelled)], [], [], []
    beside = 0 if data.initial_indices is not None else len(data.x_initial)  # x_all's rows before the pool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the GP's and the MLP's fits
        clf.fit(x_all, y)
        accuracy.append(float(np.mean(clf.predict(data.x_test) == data.y_test)))
        for _ in range(budget):
            t0 = time.perf_counter()
            if strategy == "random":
                picked = query.query(X=x_all, y=y)
            else:
                picked = query.query(X=x_all, y=y, clf=clf, fit_clf=False)
            y[picked] = truth[picked]
            chosen += [int(i) - beside for i in np.atleast_1d(picked)]
            clf.fit(x_all, y)
            accuracy.append(float(np.mean(clf.predict(data.x_test) == data.y_test)))
            seconds.append(time.perf_counter() - t0)
            labels.append(labels[-1] + len(np.atleast_1d(picked)))
    return {"labels": labels, "accuracy": accuracy, "round_seconds": seconds, "chosen": chosen}


def model_on_picks(config: ExperimentConfig, chosen: list[int], prior_precisions: list[float], at: list[int]) -> dict:
    """The project's model on another method's labelled sets: ``config``'s network
    trained as its own rounds train it (``alcore.stages.retrain``: the schedule, the
    prior in the loss) on the initial points plus the first ``chosen`` pool indices
    (a peer's picks), with the prior precision the project's own round of that label
    count trained with (``prior_precisions[k - 1]`` for the k-th acquired label: the
    calibration's, then each round's after it); its test accuracy at each count of
    ``at`` (those the picks reach). Under the scratch schedule (the pools' and the
    honest protocol's) it gives, on the project's own picks, the project's own curve
    (tested); under warm or fresh retraining a round starts from the last round's
    state, not the initial one, and the control in :func:`cross_rows` shows the
    difference.

    Level with the peer's own accuracy, the model is not what is behind: the peer's
    strategy chose better points (the project's acquisition is)."""
    data = sources.draw(config, reuse=True)  # the control and every crossed peer: one draw a seed
    initial = st.initial_training(st.INITIAL.view(config), data)
    view = st.ROUND.view(config)
    out = {}
    for n in at:
        k = n - config.n_initial  # acquired labels at that count
        if k < 1 or k > min(len(chosen), len(prior_precisions)):
            continue  # the picks do not reach that count
        picks = np.asarray(chosen[:k])
        x = np.concatenate([data.x_initial, data.pool[picks]])
        y = np.concatenate([data.y_initial, data.pool_labels[picks]]).astype(np.int32)
        retrained = st.retrain(view, initial.state, x, y, prior_prec=prior_precisions[k - 1])
        out[n] = ex.metrics(retrained.state.params, data.x_test, data.y_test)["accuracy"]
    return out


def _peer_job(peer: str, config_json: str, budget: int, cache: str) -> dict:
    path = Path(cache)
    if path.is_file():
        cached = json.loads(path.read_text())
        if "chosen" in cached:  # older curves lack the picks (model_on_picks needs them): computed again
            return cached
    result = run_peer(peer, ExperimentConfig.model_validate_json(config_json), budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def run_peers(jobs: list[tuple[str, ExperimentConfig, int, Path]], workers: int) -> list[dict]:
    """Every (peer, experiment) job, ``workers`` processes at a time."""
    from joblib import Parallel, delayed

    args = [(peer, c.model_dump_json(), budget, str(cache)) for peer, c, budget, cache in jobs]
    if workers <= 1:
        return [_peer_job(*a) for a in args]
    return Parallel(n_jobs=workers, backend="loky")(delayed(_peer_job)(*a) for a in args)


# ---------------------------------------------------------------- the table


def _curve_of(config: ExperimentConfig) -> dict:
    doc = json.loads(Workspace.for_config(config).results_file.read_text())
    held_out = doc["labels"]["calibration_held_out"]
    return {
        "labels": [config.n_initial + held_out, *doc["labels_used_per_round"]],
        "accuracy": [doc["initial_accuracy"], *doc["active_accuracy"]],
        "initial_classes": len(set(doc["initial_labels"])),
    }


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    m, h = mean_interval(values)
    return f"{100 * m:.2f} ± {100 * h:.2f}"


def _reach(curves: dict[int, dict], threshold: float) -> tuple[float | None, int, int]:
    hit = [labels_to_reach(c["labels"], c["accuracy"], threshold) for c in curves.values()]
    got = [n for n in hit if n is not None]
    return (float(np.mean(got)) if got else None), len(got), len(hit)


def _at(curve: dict, n: int) -> float | None:
    return accuracy_at(curve["labels"], curve["accuracy"], n) if curve["labels"][-1] >= n else None


def wins(ours: dict[int, dict], theirs: dict[int, dict], n: int) -> tuple[float, int]:
    """Seeds where ours is more accurate at ``n`` labels (ties one half), of the seeds both reach ``n``."""
    score, count = 0.0, 0
    for seed in sorted(set(ours) & set(theirs)):
        a, b = _at(ours[seed], n), _at(theirs[seed], n)
        if a is None or b is None:
            continue
        count += 1
        score += 1.0 if a > b else 0.5 if a == b else 0.0
    return score, count


def table(rows: dict[str, dict[int, dict]], peers: list[str], at: list[int]) -> list[dict]:
    """One row per method: accuracy at each count, labels to 90/95 %, wins vs each peer."""
    out = []
    for name, curves in rows.items():
        row = {"method": name, "seeds": len(curves)}
        for n in at:
            row[f"acc@{n}"] = _cell([a for a in (_at(c, n) for c in curves.values()) if a is not None])
        for t in THRESHOLDS:
            mean, got, of = _reach(curves, t)
            row[f"to{round(100 * t)}"] = f"{mean:.1f} ({got}/{of})" if mean is not None else f"never (0/{of})"
        for p in peers:
            if p == name:
                row[f"wins vs {p}"] = "-"
                continue
            w, k = wins(curves, rows[p], at[0])
            row[f"wins vs {p}"] = f"{w:g}/{k}" if k else "-"
        out.append(row)
    return out


def markdown(rows: list[dict]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def goals(
    data: str, rows: dict[str, dict[int, dict]], peers: list[str], at: list[int], batch_name: str | None
) -> list[str]:
    """The issue's goals for this data set, each said met or not, with the figure."""
    ours = rows.get(OURS)
    if not ours:
        return [f"no `{OURS}` row: goals not assessed"]
    n = at[0]
    acc = [a for a in (_at(c, n) for c in ours.values()) if a is not None]
    mean = float(np.mean(acc)) if acc else float("nan")
    out = []
    say = lambda ok, text: out.append(f"{'MET' if ok else 'NOT MET'}: {text}")  # noqa: E731
    if data == "tutorial":
        say(mean >= 0.988, f"mean accuracy at {n} labels >= 98.8 % (got {100 * mean:.2f} %)")
        to95, got, of = _reach(ours, 0.95)
        say(
            got == of and to95 is not None and to95 <= 32,
            f"95 % on every seed with <= 32 labels on average (got {got}/{of} seeds, {to95 if to95 is None else round(to95, 1)} labels)",
        )  # noqa: E501
        if batch_name and batch_name in rows:
            batch = [a for a in (_at(c, n) for c in rows[batch_name].values()) if a is not None]
            gap = 100 * (mean - float(np.mean(batch)))
            say(gap <= 1.0, f"`{batch_name}` at most 1 point below k = 1 at {n} labels (got {gap:.2f} points below)")
    if data == "digits":
        say(mean >= 0.908, f"mean accuracy at {n} labels >= 90.8 % (got {100 * mean:.2f} %)")
        missing = [s for s, c in ours.items() if c.get("initial_classes", 10) < 10]
        say(not missing, f"no seed missing a class after the cold start (missing on seeds {missing or 'none'})")
    if data in ("wine", "breast_cancer"):
        best = max(peers, key=lambda p: np.mean([a for a in (_at(c, n) for c in rows[p].values()) if a is not None]))
        theirs = float(np.mean([a for a in (_at(c, n) for c in rows[best].values()) if a is not None]))
        say(
            mean > theirs,
            f"ahead of the best peer ({best}, {100 * theirs:.2f} %) at {n} labels (got {100 * mean:.2f} %)",
        )
    for p in peers:
        w, k = wins(ours, rows[p], n)
        say(k > 0 and w >= 0.8 * k, f"wins vs {p} on >= 8/10 seeds (got {w:g}/{k})")
    return out


def cross_rows(
    rows: dict[str, dict[int, dict]], reference: ExperimentConfig, crossed: list[str], seeds: list[int], at: list[int]
) -> tuple[list[dict], float]:
    """Per crossed peer: its accuracy on its own picks, the project's model on the
    same picks (:func:`model_on_picks`) and the project's on its own, at each count.
    Also the control: the largest difference between the project's model on its own
    picks and its own curve, at those counts (0: the crossed rows are trained exactly
    as the project's rounds are)."""
    docs = {}
    for seed in seeds:
        c = reference.model_copy(update={"seed": seed})
        doc = json.loads(Workspace.for_config(c).results_file.read_text())
        in_force = [doc["prior_precision"], *doc["prior_precision_per_round"]]  # round k trains with [k - 1]
        docs[seed] = (c, doc, in_force)
    control = 0.0
    if crossed:
        for seed, (c, doc, in_force) in docs.items():
            for n, a in model_on_picks(c, doc["chosen_indices"], in_force, at).items():
                control = max(control, abs(a - _at(rows[OURS][seed], n)))
    out = []
    for peer in crossed:
        mine = {n: [] for n in at}
        for seed, (c, _, in_force) in docs.items():
            for n, a in model_on_picks(c, rows[peer][seed]["chosen"], in_force, at).items():
                mine[n].append(a)
        for name, curves in ((peer, rows[peer]), (f"{OURS} model, {peer}'s picks", None), (OURS, rows[OURS])):
            row = {"method": name, "seeds": len(seeds)}
            for n in at:
                values = (
                    mine[n] if curves is None else [a for a in (_at(cv, n) for cv in curves.values()) if a is not None]
                )
                row[f"acc@{n}"] = _cell(values)
            out.append(row)
    return out, control


# ---------------------------------------------------------------- the run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=",".join(DATA_SETS), help="comma-separated data sets")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--label-budget", type=int, default=130, help="labels acquired (20 initial + 130 = 150)")
    p.add_argument("--strategies", default="margin,random", help="the project's, as flows.sweep takes them")
    p.add_argument("--batch-strategy", default="margin:k10", help="tutorial only: a batch strategy ('' for none)")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--at", default="70,150", help="label counts of the accuracy columns (wins at the first)")
    p.add_argument(
        "--cross",
        default="gp_margin",
        help="peers whose picks the project's model also learns from (its accuracy on their labelled sets: is the gap the model or the acquisition?); '' for none",
    )
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="an experiment field (JSON)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--sequential", action="store_true", help="the project's experiments in this process, no Dask")
    p.add_argument("--artifacts-dir", default="artifacts/peers")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    data_sets = [d for d in args.data.split(",") if d]
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            raise SystemExit(f"unknown peer {p!r}; expected some of {', '.join(PEERS)}")
    at = [int(n) for n in args.at.split(",")]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    root = Path(args.artifacts_dir).expanduser().resolve()
    sweeps = {}
    for data in data_sets:
        strategies = [s for s in args.strategies.split(",") if s]
        if data == "tutorial" and args.batch_strategy:
            strategies.append(args.batch_strategy)
        sweeps[data] = SweepConfig(
            strategies=strategies,
            seeds=seeds,
            label_budget=args.label_budget,
            reference_budget=args.label_budget,
            experiment={**overrides, "data": data},
            artifacts_dir=str(root),
            workers=args.workers,
        )

    from runtime import local_server

    t0 = time.perf_counter()
    timings = {}
    local_server.start_early()
    with local_server.connected():
        from prefect.settings import PREFECT_API_URL

        for data, config in sweeps.items():
            t = time.perf_counter()
            runner = task_runner_for(config, sequential=args.sequential, api_url=PREFECT_API_URL.value())
            sweep.with_options(task_runner=runner)(config)
            timings[f"{data}/project"] = time.perf_counter() - t
            print(f"{data}: the project's sweep took {timings[f'{data}/project']:.0f} s", flush=True)

    document = {"args": vars(args), "data": {}}
    code = code_version()
    for data, config in sweeps.items():
        experiments = config.experiments()
        rows: dict[str, dict[int, dict]] = {}
        for c in experiments:
            rows.setdefault(config.label(c), {})[c.seed] = _curve_of(c)
        reference = next(c for c in experiments if parse_strategy(OURS) == (c.acquisition, c.acquisition_batch))
        jobs = []
        for peer in peers:
            for seed in seeds:
                c = reference.model_copy(update={"seed": seed})
                key = digest([st.experiment_digest(c), code])  # the data and initial points follow the code
                cache = root / "peers" / data / peer / f"seed{seed}-budget{args.label_budget}-{key}.json"
                jobs.append((peer, c, args.label_budget, cache))
        t = time.perf_counter()
        results = run_peers(jobs, args.workers)
        timings[f"{data}/peers"] = time.perf_counter() - t
        for (peer, c, _, _), r in zip(jobs, results, strict=True):
            rows.setdefault(peer, {})[c.seed] = r
        crossed, control = cross_rows(rows, reference, [p for p in args.cross.split(",") if p in peers], seeds, at)
        batch = args.batch_strategy if data == "tutorial" and args.batch_strategy else None
        rows_table = table(rows, peers, at)
        said = goals(data, rows, peers, at, batch)
        print(f"\n### {data} ({len(seeds)} seeds, {args.label_budget} acquired labels)\n")
        print(markdown(rows_table))
        print("\n" + "\n".join(f"- {g}" for g in said), flush=True)
        if crossed:
            print(f"\nThe project's model on each method's picks (`{OURS}`'s settings and prior precisions):\n")
            print(markdown(crossed))
            print(f"\ncontrol: the project's model on its own picks is {100 * control:.2f} points from its own curve")
        document["data"][data] = {
            "table": rows_table,
            "goals": said,
            "cross": crossed,
            "cross_control": control,
            "curves": rows,
            "args": vars(args),
        }
    document["seconds"] = {**timings, "total": time.perf_counter() - t0}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "peers.json"
    if path.is_file():  # an earlier invocation's other data sets are kept beside these
        earlier = json.loads(path.read_text())
        document["data"] = {**earlier.get("data", {}), **document["data"]}
        document["seconds"] = {**earlier.get("seconds", {}), **document["seconds"]}
    path.write_text(json.dumps(document, indent=1, default=str))
    print(f"\nwritten: {root / 'peers.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
