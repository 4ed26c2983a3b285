"""The experiment's report: results.json, plots, the rounds GIF and UI artifacts."""

import base64
import json
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from alcore import stages as st
from alcore.config import ExperimentConfig, digest, held_out_labels
from alcore.experiment import predict
from store import files
from store.code_version import CODE_VERSION
from store.experiment import Store
from store.layout import Workspace
from tasks import plots, pool_plots


def artifact_key(config: ExperimentConfig, what: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return f"al-{st.experiment_digest(config)[:10]}-{what}"


def build_results(
    config: ExperimentConfig,
    *,
    data,
    initial: st.Initial,
    calibration: st.Calibration,
    rounds: list[st.RoundSummary],
    passive: st.Passive | None,
    run_info: dict,
) -> dict:
    """The ``results.json`` document. Everything but ``run``, ``platform`` and
    ``compute_seconds`` is a pure function of the configuration and code version, so a
    resumed run writes the same values."""
    seconds = run_info.get("stage_seconds", {})
    return {
        "config": config.model_dump(),
        "config_hash": {"experiment": st.experiment_digest(config), "passive": st.passive_digest(config)},
        "code_version": CODE_VERSION,
        "prior_precision": calibration.prior_prec,
        "active_accuracy": [r.accuracy for r in rounds],
        "final_active_accuracy": rounds[-1].accuracy if rounds else None,
        "initial_accuracy": initial.accuracy,
        "passive_accuracy": None if passive is None else passive.accuracy,
        # all acquired points in order (k per round); labels_per_round[r] is the
        # labelled-set size after round r + 1
        "chosen_points": [list(map(float, p)) for r in rounds for p in r.points],
        "chosen_indices": [int(i) for r in rounds for i in r.indices],
        "chosen_labels": [int(c) for r in rounds for c in r.labels],
        "label_sources": [r.label_source for r in rounds for _ in r.labels],
        "labels": label_budget(config, data, rounds, passive),
        # every label the active side has used after each round: initial, the
        # calibration's held-out ones, and the acquired ones so far
        "labels_used_per_round": [r.n_labelled + held_out_labels(config) for r in rounds],
        "prior_precision_per_round": [r.prior_prec for r in rounds],
        "final_metrics": rounds[-1].metrics if rounds else initial.metrics,
        "passive_metrics": None if passive is None else passive.metrics,
        "oracle": config.oracle,
        "agreement_with_truth": agreement(data, rounds) if config.oracle == "human" else None,
        "labels_per_round": [r.n_labelled for r in rounds],
        "initial_points": np.asarray(data.x_initial).tolist(),
        "initial_labels": np.asarray(data.y_initial).tolist(),
        "calibration": {
            "objective": calibration.objective,
            "grid": np.asarray(calibration.grid).tolist(),
            "curve": None if calibration.curve is None else np.asarray(calibration.curve).tolist(),
        },
        "compute_seconds": {
            "initial_training": seconds.get("initial"),
            "calibration": seconds.get("calibration"),
            "rounds": [seconds.get(f"round-{r.round:02d}") for r in rounds],
            "passive": None if passive is None else seconds.get("passive"),
        },
        # the numeric platform of this run, and of any stage restored from another
        # (accepted with --accept-platform-mix: then "mixed" is true)
        "platform": run_info.get("platform"),
        "run": {k: v for k, v in run_info.items() if k not in ("platform", "stage_seconds")},
    }


def label_budget(config: ExperimentConfig, data, rounds: list[st.RoundSummary], passive) -> dict:
    """Every side's labels, counted: the active side's initial, held-out calibration
    and acquired labels, and what the passive baseline got."""
    initial, held_out = len(data.x_initial), held_out_labels(config)
    acquired = sum(len(r.labels) for r in rounds)
    return {
        "counting": "every label" if config.count_all_labels else "initial + acquired (the tutorial's comparison)",
        "initial": initial,
        "calibration_held_out": held_out,
        "acquired": acquired,
        "active_total": initial + held_out + acquired,
        "passive_total": None if passive is None else len(passive.y),
    }


def agreement(data, rounds: list[st.RoundSummary]) -> dict:
    """How often a person's labels agree with the ground truth, where it exists."""
    out = {}
    pairs = {
        "initial": (data.y_initial, data.initial_truth),
        "calibration": (data.y_calibration, data.calibration_truth),
        "rounds": (
            [c for r in rounds for c in r.labels],
            None if data.pool_labels is None else [int(data.pool_labels[i]) for r in rounds for i in r.indices],
        ),
    }
    for name, (given, truth) in pairs.items():
        if truth is not None and len(given):
            out[name] = {"agree": int(np.sum(np.asarray(given) == np.asarray(truth))), "of": len(given)}
    total = sum(v["agree"] for v in out.values()), sum(v["of"] for v in out.values())
    out["all"] = {"agree": total[0], "of": total[1], "fraction": total[0] / total[1] if total[1] else None}
    return out


def _before_round(record: st.RoundRecord, sq=lambda x: x) -> tuple:
    """The labelled set before the round's acquisition (``sq``: to plot coordinates)."""
    k = len(record.labels)
    return sq(record.x_labelled[:-k]), record.y_labelled[:-k]


def _on_the_square(data):
    """The tutorial's points back on the unit square (undoing ``standardise``)."""
    if data.scaler is None:
        return lambda x: x
    mean, std = data.scaler
    return lambda x: np.asarray(x) * std + mean


def write_json(path: Path, document: dict) -> None:
    files.write_text(path, json.dumps(document, indent=2) + "\n")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@task(name="report", task_run_name="report/plots-and-artifacts", cache_policy=NO_CACHE, persist_result=False)
def report(
    config: ExperimentConfig,
    data,
    initial: st.Initial,
    calibration: st.Calibration,
    rounds: list[st.RoundSummary],
    passive: st.Passive | None,
    run_info: dict,
    publish: bool = True,
) -> dict:
    """Write results.json, the PNG plots and the GIF; publish the UI artifacts
    (``publish``: a sweep's experiments publish none, the sweep publishes its own)."""
    ws = Workspace.for_config(config)
    with files.writing(ws.plots):
        figures = _figures(config, ws, data, calibration, rounds, passive) if config.plots else {}
    document = build_results(
        config, data=data, initial=initial, calibration=calibration, rounds=rounds, passive=passive, run_info=run_info
    )
    document["files"] = {name: str(p) for name, p in figures.items()}
    write_json(ws.results_file, document)
    if publish:
        _publish(config, ws, document, figures, rounds)
    return document


def _figures(config, ws: Workspace, data, calibration: st.Calibration, rounds, passive: st.Passive | None) -> dict:
    """The PNGs and the GIF. They depend only on the configuration, the code and the
    rounds' numbers, so when those are unchanged (a fully restored re-run) the
    existing files are kept instead of drawn again."""
    key_file = ws.plots / ".figures-key"
    key = digest(
        {
            "experiment": st.experiment_digest(config),
            "passive": None if passive is None else passive.accuracy,
            "code": CODE_VERSION,
            "rounds": [[r.indices, r.labels, r.accuracy] for r in rounds],
        }
    )
    names = ["data", "calibration", "prediction", "uncertainty", "accuracy", "misclassification"]
    existing = {n: ws.plots / f"{n}.png" for n in names if (ws.plots / f"{n}.png").exists()}
    if (ws.plots / "rounds.gif").exists():
        existing["animation"] = ws.plots / "rounds.gif"
    if key_file.exists() and key_file.read_text() == key and existing:
        return existing
    store = Store(config)
    if data.grid_size:
        figures = _grid_figures(config, ws, store, data, rounds, passive)
    else:
        figures = _pool_figures(config, ws, store, data, rounds)
    if calibration.curve is not None:
        figures["calibration"] = plots.calibration_plot(
            ws.plots / "calibration.png", calibration.grid, calibration.curve, calibration.prior_prec
        )
    if rounds and rounds[0].accuracy is not None:
        figures["accuracy"] = plots.accuracy_plot(
            ws.plots / "accuracy.png", [r.accuracy for r in rounds], passive and passive.accuracy
        )
    key_file.write_text(key)
    return figures


def _grid_figures(config, ws: Workspace, store: Store, data, rounds, passive) -> dict:
    """The tutorial's figures: images of the G x G grid (points on the unit square,
    also when the model saw them standardised)."""
    g = data.grid_size
    sq = _on_the_square(data)
    figures = {
        "data": plots.data_plot(
            ws.plots / "data.png", sq(data.x_initial), data.y_initial, sq(data.x_calibration), data.y_calibration
        )
    }
    if not rounds:
        return figures
    last = store.load(st.ROUND, rounds[-1].round)
    final_preds = predict(last.state.params, data.x_test)
    figures["prediction"] = plots.prediction_plot(
        ws.plots / "prediction.png",
        final_preds,
        g,
        sq(last.x_labelled),
        last.y_labelled,
        len(data.x_initial),
        f"Active model after {len(rounds)} rounds: {100 * last.accuracy:.1f}%",
    )
    figures["uncertainty"] = plots.uncertainty_plot(
        ws.plots / "uncertainty.png",
        last.preds,
        last.scores,
        g,
        *_before_round(last, sq),
        sq(last.points),
        f"Round {len(rounds)}: {config.acquisition} scores and the chosen point(s)",
    )
    if passive is not None:
        figures["misclassification"] = plots.misclassification_plot(
            ws.plots / "misclassification.png",
            final_preds,
            passive.preds,
            data.y_test,
            g,
            (last.accuracy, passive.accuracy),
        )
    frames = (_frame(last if r.round == last.round else store.load(st.ROUND, r.round), sq) for r in rounds)
    figures["animation"] = plots.rounds_gif(ws.plots / "rounds.gif", frames, g)
    return figures


def _pool_figures(config, ws: Workspace, store: Store, data, rounds) -> dict:
    """Pool-based data: scatter plots (on a PCA projection beyond 2 features)."""
    proj = pool_plots.Projection(data.pool)
    c = data.n_classes
    figures = {
        "data": pool_plots.data_plot(
            ws.plots / "data.png",
            proj,
            data.pool,
            data.x_initial,
            data.y_initial,
            data.x_calibration,
            data.y_calibration,
            c,
        )  # fmt: skip
    }
    if not rounds:
        return figures
    last = store.load(st.ROUND, rounds[-1].round)
    acc = "" if last.accuracy is None else f": {100 * last.accuracy:.1f}% test accuracy"
    figures["prediction"] = pool_plots.prediction_plot(
        ws.plots / "prediction.png",
        proj,
        data.x_test if len(data.x_test) else data.pool,
        predict(last.state.params, data.x_test if len(data.x_test) else data.pool),
        data.y_test,
        f"Active model after {len(rounds)} rounds{acc}",
        c,
    )
    x, y = _before_round(last)
    figures["uncertainty"] = pool_plots.uncertainty_plot(
        ws.plots / "uncertainty.png",
        proj,
        data.pool,
        last.preds,
        last.scores,
        x,
        y,
        last.points,
        f"Round {len(rounds)}: {config.acquisition} scores and the chosen point(s)",
        c,
    )
    frames = (_frame(last if r.round == last.round else store.load(st.ROUND, r.round)) for r in rounds)
    figures["animation"] = pool_plots.rounds_gif(ws.plots / "rounds.gif", proj, data.pool, frames, c)
    return figures


def _frame(record: st.RoundRecord, sq=lambda x: x) -> tuple:
    return (
        record.preds,
        record.scores,
        *_before_round(record, sq),
        sq(record.points),
        f"round {record.round}"
        + ("" if record.accuracy is None else f": accuracy after it {100 * record.accuracy:.1f}%"),
    )


def _publish(config, ws: Workspace, doc: dict, figures: dict, rounds: list[dict]) -> None:
    final = doc["final_active_accuracy"]
    passive = doc["passive_accuracy"]
    fmt = lambda a: "n/a" if a is None else f"{100 * a:.2f} %"  # noqa: E731
    lines = [
        f"# Active learning: {len(rounds)} rounds, seed {config.seed}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| prior precision ({config.calibration}) | {doc['prior_precision']:.4f} |",
        f"| final active accuracy | {fmt(final)} |",
        f"| passive baseline accuracy | {fmt(passive)} |",
        f"| data | {config.data} ({len(doc['initial_points'])} initial points) |",
        f"| labels, active side | {doc['labels']['initial']} initial + {doc['labels']['calibration_held_out']} held out "
        f"for calibration + {doc['labels']['acquired']} acquired = {doc['labels']['active_total']} |",
        f"| labels, passive baseline | {doc['labels']['passive_total']} ({doc['labels']['counting']}) |",
        f"| acquisition / curvature | {config.acquisition} / {config.curvature} |",
        f"| experiment folder | `{ws.root}` |",
        "",
    ]
    for name in ("accuracy", "misclassification", "uncertainty", "prediction", "calibration", "data"):
        if name in figures:
            lines += [f"### {name.capitalize()}", "", f"![{name}]({data_uri(figures[name])})", ""]
    create_markdown_artifact(
        key=artifact_key(config, "summary"), markdown="\n".join(lines), description="Active-learning summary with plots"
    )
    table = [
        {
            "round": r.round,
            "labelled": r.n_labelled,
            "points": "; ".join(
                "(" + ", ".join(f"{v:.3g}" for v in p[:4]) + (", ...)" if len(p) > 4 else ")") for p in r.points
            ),
            "labels": ", ".join(str(c) for c in r.labels),
            "accuracy_pct": None if r.accuracy is None else round(100 * r.accuracy, 2),
        }
        for r in rounds
    ]
    if table:
        create_table_artifact(
            key=artifact_key(config, "round-accuracy"), table=table, description="Grid accuracy after each round"
        )
    create_link_artifact(
        key=artifact_key(config, "results"),
        link=ws.results_file.as_uri(),
        link_text="results.json",
        description="All numbers of this experiment",
    )
    if "animation" in figures:
        create_link_artifact(
            key=artifact_key(config, "animation"),
            link=figures["animation"].as_uri(),
            link_text="rounds.gif",
            description="The rounds, animated",
        )
