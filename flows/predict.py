"""Predictions from an experiment's model: the ``predict`` flow and its command line.

    python -m flows.predict --experiment <folder> --data new.csv [--round N] [--out predictions.csv]

The model is the stored posterior of a round (the last by default: the report's
bundle in ``<folder>/model/``; ``--round N``: made from round N's record), never a
retrained one. The input is a CSV with the training data's feature columns (by name;
the label column is optional), standardised with the saved scaler. The output CSV
has, per row, the predicted class name, the class probabilities, and the Laplace
posterior's predictive uncertainty: std, entropy and BALD (docs/outputs.md). The
bundle and the input are checked before anything is computed; a refusal is one line.
"""

import os
import sys

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import argparse  # noqa: E402
import csv
import io
import json
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from alcore import bundle as fmt
from alcore.data import DataError
from sources.inputs import read_inputs
from store import bundle as bundles
from store import files


class Refused(ValueError):
    """The model or the input cannot be used (one line, before any compute)."""


def prepare(experiment: str, data: str, round_index: int | None = None):
    """(bundle, x, labels or None): everything checked, nothing computed.

    Raises:
        Refused: one line naming what is wrong.
    """
    try:
        model = bundles.of_folder(Path(experiment), round_index)
        label_column = model.meta.get("label_column")
        x, y = read_inputs(data, features=model.features, label_column=label_column, classes=model.classes)
    except (ValueError, DataError) as e:
        raise Refused(str(e)) from None
    return model, x, y


def predictions_csv(model: fmt.Bundle, out: fmt.Predictions, labels: np.ndarray | None) -> str:
    """The output table: row, predicted class, a probability per class, std, entropy,
    BALD (and the given label, where the input had one)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["row", "predicted", *(f"p_{c}" for c in model.classes), "std", "entropy", "bald"]
    writer.writerow(header + (["label"] if labels is not None else []))
    for i in range(len(out.classes)):
        row = [i, model.classes[int(out.classes[i])], *(f"{p:.6g}" for p in out.probabilities[i])]
        row += [f"{out.std[i]:.6g}", f"{out.entropy[i]:.6g}", f"{out.bald[i]:.6g}"]
        writer.writerow(row + ([model.classes[int(labels[i])]] if labels is not None else []))
    return buffer.getvalue()


def default_out(experiment: str, data: str, model: fmt.Bundle) -> Path:
    folder = Path(experiment).expanduser().resolve()
    return folder / "predictions" / f"{Path(data).stem}-round-{model.meta['round']:03d}.csv"


def run(experiment: str, data: str, round_index: int | None = None, out: str | None = None, log=None) -> dict:
    """Check, predict, write the CSV; returns what was done (the path, rows, accuracy)."""
    model, x, y = prepare(experiment, data, round_index)
    predicted = fmt.predict(model, x)
    path = Path(out).expanduser() if out else default_out(experiment, data, model)
    files.write_text(path, predictions_csv(model, predicted, y))
    accuracy = None if y is None else float(np.mean(predicted.classes == y))
    summary = {
        "predictions": str(path),
        "rows": len(x),
        "round": model.meta["round"],
        "accuracy": accuracy,
        "mean_entropy": float(np.mean(predicted.entropy)),
        "mean_bald": float(np.mean(predicted.bald)),
    }
    if log is not None:
        acc = "" if accuracy is None else f"; accuracy on its labels {100 * accuracy:.2f} %"
        log.info("predicted %d rows with round %d's posterior into %s%s", len(x), summary["round"], path, acc)
    return summary


@flow(name="predict", log_prints=True)
def predict(experiment: str, data: str, round: int | None = None, out: str | None = None) -> dict:  # noqa: A002
    """Predict a CSV file's rows with an experiment's stored model (its Laplace posterior).

    Args:
        experiment: The experiment's folder (``artifacts/al-<hash>``).
        data: A CSV file with the training data's feature columns (the label column optional).
        round: The round whose posterior predicts (default: the last).
        out: The output CSV (default: ``<experiment>/predictions/<name>-round-<r>.csv``).
    """
    log = get_run_logger()
    summary = run(experiment, data, round, out, log)
    create_markdown_artifact(
        markdown=f"# Predictions\n\n```json\n{json.dumps(summary, indent=2)}\n```\n", description="predict"
    )
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="the experiment's folder (artifacts/al-<hash>)")
    p.add_argument("--data", required=True, help="a CSV with the training data's feature columns")
    p.add_argument("--round", type=int, default=None, help="the round whose posterior predicts (default: the last)")
    p.add_argument("--out", default=None, help="the output CSV (default: <experiment>/predictions/...)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        prepare(args.experiment, args.data, args.round)  # refused here, before the server or any compute
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from runtime import local_server

    local_server.start_early()
    with local_server.connected():
        state = predict(args.experiment, args.data, args.round, args.out, return_state=True)
    if not state.is_completed():
        print(f"{state.name}: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
