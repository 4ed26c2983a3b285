"""Where an experiment's files live, and the code version in every cache key.

No Prefect here: the CLI's ``--status`` and the tests read experiments through it.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alcore.config import ExperimentConfig
from tasks import storage

_ROOT = Path(__file__).resolve().parent.parent
# The code a stage's numbers depend on; its hash is part of every cache key, so a
# change to the math (or to how a stage assembles its result) never reuses results.
_VERSIONED_SOURCES = sorted((_ROOT / "alcore").glob("*.py")) + [_ROOT / "tasks" / "stages.py"]


def code_version() -> str:
    """Short hash of the core's and the stages' source."""
    h = hashlib.sha256()
    for path in _VERSIONED_SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


CODE_VERSION = code_version()

JAX_CACHE_ENV = "BAL_JAX_CACHE_DIR"


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (idempotent); returns its folder.

    Every run compiles the same programs (training scans, the grid prediction, the
    Laplace fit and map, the model's initialisation): with the cache, runs after the
    first (a schedule, a sweep, a resume) load them from disk instead. ``BAL_JAX_CACHE_DIR`` chooses the folder (default
    ``~/.cache/bal-pipeline/jax``); ``off`` disables it. Numbers do not change: the
    cache holds the compiled programs, not results.
    """
    import jax

    folder = os.environ.get(JAX_CACHE_ENV, str(Path.home() / ".cache" / "bal-pipeline" / "jax"))
    if folder.lower() == "off":
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


@dataclass(frozen=True)
class Workspace:
    """The output folder of one experiment: ``<artifacts_dir>/al-<round hash>/``.

    The folder is named by the hash of the round-relevant parameters, so the same
    command finds its earlier rounds, a longer run extends a shorter one, and a
    different configuration never touches another's files.
    """

    root: Path

    @classmethod
    def for_config(cls, config: ExperimentConfig) -> "Workspace":
        return cls(Path(config.artifacts_dir).expanduser().resolve() / f"al-{config.round_hash()}")

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def results_file(self) -> Path:
        return self.root / "results.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def stage_file(self, stage: str) -> Path:
        """File of a one-off stage: data, initial, calibration."""
        return self.root / f"{stage}.joblib"

    def round_file(self, round_index: int) -> Path:
        return self.root / "rounds" / f"round-{round_index:03d}.joblib"

    def passive_file(self, config: ExperimentConfig) -> Path:
        """The passive baseline's file, shared by every experiment with the same budget
        and training schedule (it does not depend on the acquisition strategy), so a
        sweep trains one per seed: ``<artifacts_dir>/passive/passive-<hash>.joblib``."""
        return self.root.parent / "passive" / f"passive-{config.passive_hash()}.joblib"

    def write_config(self, config: ExperimentConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config.model_dump(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.config_file)

    def status(self) -> dict:
        """What is on disk: finished stages and rounds, their accuracy and size."""
        rows = []
        for stage in ("data", "initial", "calibration"):
            rows.append(_row(stage, self.stage_file(stage)))
        round_files = sorted((self.root / "rounds").glob("round-*.joblib"))
        for path in round_files:
            rows.append(_row(path.stem, path))
        return {"folder": str(self.root), "exists": self.root.exists(), "stages": rows}

    def status_for(self, config: ExperimentConfig) -> dict:
        """:meth:`status` plus the configuration's passive baseline."""
        out = self.status()
        out["stages"].append(_row("passive", self.passive_file(config)))
        return out


def _row(name: str, path: Path) -> dict:
    row = {"stage": name, "file": str(path), "bytes": path.stat().st_size if path.exists() else None}
    try:
        content = storage.load(path)
    except FileNotFoundError:
        row["state"] = "missing"
        return row
    except storage.DamagedFile as e:
        row["state"] = f"damaged: {e.reason}"
        return row
    row["state"] = "ok"
    for key in ("accuracy", "prior_prec", "labels", "indices"):
        if isinstance(content, dict) and key in content:
            value = content[key]
            row[key] = value.tolist() if hasattr(value, "tolist") else value
    return row


def check_writable(folder: str | Path) -> Path:
    """Resolve ``folder`` and make sure files can be created in it (before any compute).

    Raises:
        ValueError: naming the folder and why it cannot be written.
    """
    path = Path(folder).expanduser().resolve()
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ValueError(f"artifacts_dir {str(folder)!r}: {probe_dir} exists and is not a folder")
    try:  # a real probe: os.access says yes to root on read-only mounts
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as e:
        raise ValueError(f"artifacts_dir {str(folder)!r}: cannot create files in {probe_dir} ({e.strerror})") from e
    return path
