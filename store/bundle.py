"""The model bundle on disk: a folder with ``bundle.json`` and ``arrays.npz``.

The format is ``alcore/bundle.py``'s (docs/outputs.md): the JSON document (format,
architecture, classes, feature names, prior precision, scaler flag, round, versions)
and the arrays (the parameters, the labelled inputs of the posterior, the scaler).
Reading it needs NumPy, JSON and ``alcore``: no Prefect, no experiment folder.
:func:`of_round` makes the bundle of any stored round (the report writes the last
round's to ``<experiment>/model/``).
"""

import io
import json
from pathlib import Path

import numpy as np

import alcore
from alcore import bundle as fmt
from alcore import numerics
from alcore import stages as st
from alcore.config import ExperimentConfig
from alcore.data import Data
from store import files
from store.code_version import CODE_VERSION

DOCUMENT, ARRAYS = "bundle.json", "arrays.npz"


def write(folder: Path, bundle: fmt.Bundle) -> Path:
    """Write ``bundle`` into ``folder`` (each file atomically); returns the folder."""
    folder = Path(folder)
    document, arrays = fmt.to_arrays(bundle)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files.write_bytes(folder / ARRAYS, buffer.getvalue())
    files.write_text(folder / DOCUMENT, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return folder


def read(folder: Path) -> fmt.Bundle:
    """The bundle in ``folder``.

    Raises:
        ValueError: no bundle there, or one of another format (one line, naming it).
    """
    folder = Path(folder)
    if not (folder / DOCUMENT).is_file() or not (folder / ARRAYS).is_file():
        raise ValueError(f"{folder}: no model bundle ({DOCUMENT} and {ARRAYS})")
    document = json.loads((folder / DOCUMENT).read_text())
    with np.load(folder / ARRAYS, allow_pickle=False) as arrays:
        return fmt.from_arrays(document, {k: arrays[k] for k in arrays.files})


def versions() -> dict:
    """The code and platform versions a bundle records."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"code_version": CODE_VERSION, "math_version": alcore.MATH_VERSION, "platform": numerics.platform()}
    for package in ("jax", "flax", "laplax", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def of_round(config, data: Data, record: st.RoundRecord) -> fmt.Bundle:
    """The bundle of a stored round: its model, its labelled set, the prior precision
    in force after it (the one the next round would acquire with)."""
    prior_prec = record.prior_prec
    if prior_prec is None:
        raise ValueError(f"round {record.round} records no prior precision")
    return fmt.Bundle(
        record.state.params,
        np.asarray(record.x_labelled, np.float32),
        float(prior_prec),
        tuple(data.classes),
        tuple(data.feature_names()),
        data.scaler,
        {
            "round": record.round,
            "accuracy": record.accuracy,
            "n_labelled": len(record.y_labelled),
            "label_column": config.label_column if config.data == "file" else "label",
            "data": config.data,
            "experiment": config.model_dump(),
            **versions(),
        },
    )


def record_of_any_version(path: Path, record_type: type):
    """A stage record from its file, whatever code version wrote it (a bundle of an
    older experiment is still its model): the file's checksum is verified, its key
    is not."""
    if not path.is_file():
        raise ValueError(f"{path}: no such stage file")
    try:
        saved = files.load(path)["record"]
    except files.DamagedFile as e:
        raise ValueError(str(e)) from None
    return record_type(**{k: v for k, v in saved.items() if k in record_type._fields})


def config_of(folder: Path):
    """The configuration an experiment folder was run with (its ``config.json``)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder}: not an experiment folder (no config.json)")
    return ExperimentConfig.model_validate_json(path.read_text())


def of_folder(folder: Path, round_index: int | None = None) -> fmt.Bundle:
    """The model of an experiment folder: the report's bundle (``model/``) of the last
    round, or the bundle of round ``round_index`` made from its stored record.

    Raises:
        ValueError: one line: not an experiment folder, no such round, no bundle.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"experiment folder {folder}: no such folder")
    rounds = sorted(folder.glob("rounds/round-*.joblib"))
    if round_index is None and (folder / "model" / DOCUMENT).is_file():
        return read(folder / "model")
    if not rounds:
        raise ValueError(f"experiment folder {folder}: no finished round, so no model")
    last = int(rounds[-1].stem.split("-")[1])
    r = last if round_index is None else round_index
    if not 1 <= r <= last:
        raise ValueError(f"experiment folder {folder}: no round {r} (rounds 1-{last} are stored)")
    config = config_of(folder)
    data = record_of_any_version(folder / "data.joblib", Data)
    record = record_of_any_version(folder / "rounds" / f"round-{r:03d}.joblib", st.RoundRecord)
    return of_round(config, data, record)
