"""The experiment's report: results.json, plots, the rounds GIF and UI artifacts."""

import base64
import json
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from alcore import stages as st
from alcore import stopping, strategies
from alcore.config import ExperimentConfig, digest, held_out_labels
from alcore.experiment import predict
from store import bundle, files, outputs
from store.code_version import CODE_VERSION
from store.experiment import Store
from store.layout import Workspace
from store.ledger import AnswerBook
from tasks import maps, plots


def artifact_prefix(config: ExperimentConfig) -> str:
    """The start of an experiment's artifact keys: a hash of its folder's path, so two
    artifact folders with the same experiment on one server do not share keys."""
    return f"al-{digest(str(Workspace.for_config(config).root))[:10]}-"


def artifact_key(config: ExperimentConfig, what: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return artifact_prefix(config) + what


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
        # share of the pool whose predicted class each round changed, and the stop rule on it
        "prediction_change_per_round": [r.prediction_change for r in rounds],
        "stop_rule": stop_rule(config, rounds),
        "final_metrics": rounds[-1].metrics if rounds else initial.metrics,
        "passive_metrics": None if passive is None else passive.metrics,
        "oracle": config.oracle,
        "classes": list(data.classes),
        "chosen_class_names": [data.classes[int(c)] for r in rounds for c in r.labels],
        # per chosen label: the model's pre-filled guess, accepted as it was (a person's form)
        "accepted_guesses": accepted_per_label(rounds, run_info.get("accepted_guesses", {})),
        "agreement_with_truth": (
            agreement(data, rounds, run_info.get("accepted_guesses", {})) if config.oracle == "human" else None
        ),
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
        "run": {k: v for k, v in run_info.items() if k not in ("platform", "stage_seconds", "accepted_guesses")},
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


def stop_rule(config: ExperimentConfig, rounds: list[st.RoundSummary]) -> dict:
    """The stop rule after the last round: its line, and the round it signals at the
    run's threshold (``stop_when``) or else the default one."""
    changes = [r.prediction_change for r in rounds]
    threshold = config.stop_threshold_pct
    threshold = stopping.DEFAULT_THRESHOLD_PCT if threshold is None else threshold
    return {
        "rule": "stabilising predictions (Bloodgood and Vijay-Shanker 2009), share of the pool changed per round",
        "window": stopping.WINDOW,
        "stop_when": config.stop_when,
        "threshold_pct": threshold,
        "signals_after_round": stopping.stop_round(changes, threshold),
        "line": stopping.describe(changes),
    }


def accepted_per_label(rounds: list[st.RoundSummary], accepted: dict[str, list[int]]) -> list[bool]:
    """For each chosen label, in order: whether it is the model's guess accepted as
    the form was pre-filled (``accepted``: per ask, the candidates)."""
    return [int(i) in accepted.get(f"round-{r.round:03d}", ()) for r in rounds for i in r.indices]


def agreement(data, rounds: list[st.RoundSummary], accepted: dict[str, list[int]] | None = None) -> dict:
    """How often a person's own labels agree with the ground truth, where it exists.
    A round's label that is the model's guess accepted as pre-filled is not the
    person's own: it is counted apart (``rounds_accepted_guesses``), not here."""
    out = {}
    own = [not a for a in accepted_per_label(rounds, accepted or {})]
    given = [c for r in rounds for c in r.labels]
    truth = None if data.pool_labels is None else [int(data.pool_labels[i]) for r in rounds for i in r.indices]
    pairs = {
        "initial": (data.y_initial, data.initial_truth),
        "calibration": (data.y_calibration, data.calibration_truth),
        "rounds": (
            [c for c, o in zip(given, own, strict=True) if o],
            None if truth is None else [t for t, o in zip(truth, own, strict=True) if o],
        ),
    }
    for name, (given, truth) in pairs.items():
        if truth is not None and len(given):
            out[name] = {"agree": int(np.sum(np.asarray(given) == np.asarray(truth))), "of": len(given)}
    total = sum(v["agree"] for v in out.values()), sum(v["of"] for v in out.values())
    out["all"] = {"agree": total[0], "of": total[1], "fraction": total[0] / total[1] if total[1] else None}
    out["rounds_accepted_guesses"] = len(own) - sum(own)  # not counted above
    return out


def _before_round(record: st.RoundRecord) -> tuple:
    """The labelled set before the round's acquisition."""
    k = len(record.labels)
    return record.x_labelled[:-k], record.y_labelled[:-k]


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
    labels, model = _labels_and_model(config, ws, data, initial, rounds, passive)
    document["files"] = {name: str(p) for name, p in figures.items()}
    document["files"]["labels"] = str(ws.root / "labels.csv")
    document["files"]["model"] = None if model is None else str(model)
    document["artifact_prefix"] = artifact_prefix(config)
    write_json(ws.results_file, document)
    if publish:
        _publish(config, ws, document, figures, rounds, labels)
    return document


def _labels_and_model(config, ws: Workspace, data, initial: st.Initial, rounds, passive):
    """labels.csv (every labelled item) and the last round's model bundle
    (``<folder>/model/``; docs/outputs.md): (the labels' rows, the bundle's folder)."""
    store = Store(config)
    records = [store.load(st.ROUND, r.round) for r in rounds]
    answers = AnswerBook(ws.root / "answers.jsonl").read() if config.oracle == "human" else []
    rows = outputs.labels_rows(config, data, initial.state.params, records, passive, answers)
    outputs.write_labels(ws.root / "labels.csv", rows)
    if not records:
        return rows, None
    return rows, bundle.write(ws.root / "model", bundle.of_round(config, data, records[-1]))


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
    figures = _map_figures(config, ws, store, data, rounds, passive)
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


def _map_figures(config, ws: Workspace, store: Store, data, rounds, passive) -> dict:
    """The figures drawn on the pool's map (``tasks/maps.py``: the grid's images or a
    pool's scatter plots): the labelled data, the final model's predictions, the last
    round's scores, where the models err (where the map shows it), the rounds' GIF."""
    m = maps.for_data(data)
    quantity = strategies.get(config.acquisition).quantity
    figures = {"data": m.labelled(ws.plots / "data.png")}
    if not rounds:
        return figures
    last = store.load(st.ROUND, rounds[-1].round)
    x_eval = data.x_test if len(data.x_test) else data.pool
    final_preds = predict(last.state.params, x_eval)
    acc = "" if last.accuracy is None else f": {100 * last.accuracy:.1f}% test accuracy"
    figures["prediction"] = m.prediction(
        ws.plots / "prediction.png",
        x_eval,
        final_preds,
        last.x_labelled,
        last.y_labelled,
        f"Active model after {len(rounds)} rounds{acc}",
    )
    figures["uncertainty"] = m.uncertainty(
        ws.plots / "uncertainty.png",
        last.preds,
        last.scores,
        *_before_round(last),
        last.points,
        f"Round {len(rounds)}: {config.acquisition} scores and the chosen point(s)",
        quantity=quantity,
    )
    if passive is not None:
        wrong = m.misclassification(
            ws.plots / "misclassification.png", final_preds, passive.preds, (last.accuracy, passive.accuracy)
        )
        if wrong is not None:
            figures["misclassification"] = wrong
    frames = (_frame(last if r.round == last.round else store.load(st.ROUND, r.round)) for r in rounds)
    figures["animation"] = m.animation(ws.plots / "rounds.gif", frames, quantity=quantity)
    return figures


def _frame(record: st.RoundRecord) -> tuple:
    return (
        record.preds,
        record.scores,
        *_before_round(record),
        record.points,
        f"round {record.round}"
        + ("" if record.accuracy is None else f": accuracy after it {100 * record.accuracy:.1f}%"),
    )


def _publish(config, ws: Workspace, doc: dict, figures: dict, rounds: list[dict], labels: list[dict]) -> None:
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
    if labels:
        create_table_artifact(
            key=artifact_key(config, "labels"),
            table=[{k: "" if v is None else v for k, v in row.items()} for row in labels],
            description=f"Every labelled item (labels.csv in {ws.root})",
        )
    create_markdown_artifact(
        key=artifact_key(config, "results"), markdown=results_markdown(ws, doc), description="results.json"
    )
    if "animation" in figures:
        gif = "data:image/gif;base64," + base64.b64encode(figures["animation"].read_bytes()).decode()
        create_markdown_artifact(
            key=artifact_key(config, "animation"),
            markdown=f"# The rounds, animated\n\n![rounds]({gif})\n",
            description="The rounds, animated",
        )


INLINE_LIMIT = 200_000  # characters of results.json shown inline in its artifact


def results_markdown(ws: Workspace, doc: dict) -> str:
    """results.json as an artifact that opens in the UI: the document inline (its
    large per-point lists left out when it is too long), and where the file is."""
    text = json.dumps(doc, indent=2)
    note = ""
    if len(text) > INLINE_LIMIT:
        big = ("chosen_points", "initial_points", "initial_labels", "calibration")
        text = json.dumps({k: v for k, v in doc.items() if k not in big}, indent=2)
        note = f" (without {', '.join(big)}: see the file)"
    return f"# results.json\n\nThe file: `{ws.results_file}`{note}\n\n```json\n{text}\n```\n"
