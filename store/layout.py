"""Where an experiment's files live, and whether a folder can take them.

No Prefect here: the CLI's ``--status`` and the tests read experiments through it.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sources
from alcore.config import ExperimentConfig
from alcore.stages import experiment_digest, passive_digest
from store import files


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
        config = sources.resolve(config)  # a data file's fingerprint names the folder too
        return cls(Path(config.artifacts_dir).expanduser().resolve() / f"al-{experiment_digest(config)}")

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
        return self.root.parent / "passive" / f"passive-{passive_digest(config)}.joblib"

    def draw_file(self, key: str) -> Path:
        """A data stage's result shared by every experiment that draws the same data
        (a sweep's strategies of one seed, on any of its workers):
        ``<artifacts_dir>/draws/<key>.joblib``."""
        return self.root.parent / "draws" / f"{key}.joblib"

    def write_config(self, config: ExperimentConfig) -> None:
        files.write_text(self.config_file, json.dumps(config.model_dump(), indent=2, sort_keys=True) + "\n")


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
