"""What labelling gives back, as files: ``labels.csv`` (every labelled item) and the
model bundle of a round (``alcore/bundle.py``). No Prefect: the report writes them,
``python -m flows.export`` writes them for older folders.

``labels.csv`` has one row per labelled item, whoever labelled it (the truth or a
person), in the order they were labelled (docs/outputs.md):

- ``item``: the item's id: its row number in the source table (a user's file: 0 is
  the first row after a CSV's header) for pool-based data; for the tutorial, the
  grid index of a round's point (``grid-<i>``), or the drawn point's place among the
  initial, calibration or passive points (``initial-<n>``);
- ``image``: the item's image file, where the data have one (``--item-column``);
- ``pool_index``: its index among the candidates (rounds; passive points of a pool);
- ``source``: ``initial``, ``calibration``, ``round <r>`` or ``passive``;
- ``label``: the class name;
- ``answered_at``, ``accepted_guess``: a person's answer's time, and whether the
  answer was the model's guess accepted (empty where the ledger does not say);
- ``model_guess``, ``model_probability``: the class the model guessed when the item
  was asked (rounds: the model the round acquired with) and its probability.
"""

import csv
import io
from pathlib import Path

import numpy as np

from alcore import stages as st
from alcore.data import Data
from alcore.experiment import probabilities
from store import files
from store.ledger import FormAnswer

COLUMNS = (
    "item",
    "image",
    "pool_index",
    "source",
    "label",
    "answered_at",
    "accepted_guess",
    "model_guess",
    "model_probability",
)


def _answers_by_item(answers: list[FormAnswer]) -> dict[tuple[str, int], tuple[str, object]]:
    """(ask kind, point index) -> (answer time, accepted guess or None) of the last
    answer that labelled it. Read defensively: older ledgers say nothing of guesses."""
    out = {}
    for answer in answers:
        kind = "round" if answer.ask.startswith("round-") else answer.ask
        for p in answer.points:
            if p.label is not None:
                accepted = getattr(p, "accepted_guess", None)  # absent in older ledgers: unknown
                out[(kind, int(p.index))] = (answer.answered_at, accepted)
    return out


def labels_rows(
    config,
    data: Data,
    initial_params: dict,
    rounds: list[st.RoundRecord],
    passive: st.Passive | None,
    answers: list[FormAnswer] = (),
) -> list[dict]:
    """The rows of ``labels.csv`` (see the module's docstring)."""
    rows_in = None if data.rows is None else dict(zip(("initial", "calibration", "pool"), data.rows, strict=True))
    images = data.items is not None and data.items.kind == "image" and rows_in is not None
    human = _answers_by_item(list(answers)) if config.oracle == "human" else {}
    classes = data.classes

    def row(item, pool_index, source, label, kind, key, guess=None):
        answered_at, accepted = human.get((kind, key), (None, None))
        return {
            "item": item,
            "image": data.items.values[item] if images else None,
            "pool_index": pool_index,
            "source": source,
            "label": classes[int(label)],
            "answered_at": answered_at,
            "accepted_guess": accepted,
            "model_guess": None if guess is None else classes[guess[0]],
            "model_probability": None if guess is None else round(guess[1], 6),
        }

    out = []
    for kind, labels in (("initial", data.y_initial), ("calibration", data.y_calibration)):
        for n, label in enumerate(labels):
            item = f"{kind}-{n}" if rows_in is None else int(rows_in[kind][n])
            out.append(row(item, None, kind, label, kind, n))
    params = initial_params
    for record in rounds:
        probs = probabilities(params, np.asarray(record.points))
        for i, label, p in zip(record.indices, record.labels, probs, strict=True):
            item = f"grid-{i}" if rows_in is None else int(rows_in["pool"][i])
            guess = (int(np.argmax(p)), float(np.max(p)))
            out.append(row(item, int(i), f"round {record.round}", label, "round", int(i), guess))
        params = record.state.params
    if passive is not None:
        indices = st.passive_indices(config, data)
        for n, label in enumerate(passive.y):
            pool_index = None if indices is None else int(indices[n])
            item = f"passive-{n}" if rows_in is None else int(rows_in["pool"][pool_index])
            out.append(row(item, pool_index, "passive", label, "passive", n))
    return out


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV text with :data:`COLUMNS` (empty cells for None)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r[k] is None else r[k] for k in COLUMNS})
    return buffer.getvalue()


def write_labels(path: Path, rows: list[dict], *, fmt: str = "csv") -> Path:
    """Write the rows as CSV (atomically) or Parquet (needs pyarrow, not a dependency
    of the project: ``pip install pyarrow``)."""
    if fmt == "csv":
        files.write_text(path, to_csv(rows))
        return path
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("--format parquet needs pyarrow, which is not installed: pip install pyarrow") from None
        table = pa.table({k: [r[k] if r[k] is None else str(r[k]) for r in rows] for k in COLUMNS})
        pq.write_table(table, path)
        return path
    raise ValueError(f"format {fmt!r}: expected csv or parquet")


def labels_of_folder(folder: Path) -> list[dict]:
    """The rows of ``labels.csv`` for an experiment folder as it is on disk, whatever
    code version wrote its stages (``python -m flows.export``).

    Raises:
        ValueError: one line: not an experiment folder, or a stage file missing or damaged.
    """
    from store.bundle import config_of, record_of_any_version
    from store.layout import Workspace
    from store.ledger import AnswerBook

    folder = Path(folder).expanduser().resolve()
    config = config_of(folder)
    data = record_of_any_version(folder / "data.joblib", Data)
    initial = record_of_any_version(folder / "initial.joblib", st.Initial)
    rounds = [record_of_any_version(p, st.RoundRecord) for p in sorted(folder.glob("rounds/round-*.joblib"))]
    passive_file = Workspace(folder).passive_file(config)
    passive = record_of_any_version(passive_file, st.Passive) if config.passive and passive_file.is_file() else None
    answers = AnswerBook(folder / "answers.jsonl").read()
    return labels_rows(config, data, initial.state.params, rounds, passive, answers)
