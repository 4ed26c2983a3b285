"""The experiment folder as the one store of stage results (plain Python; no Prefect).

Every stage's record is a checksummed file in the experiment's folder, saved under
the stage's key (``alcore.stages.Stage.key``: its declared fields, the round and the
code version). A resume reads nothing else: Prefect keeps no results of its own
(tasks run with ``persist_result=False``), so a run with an empty ``PREFECT_HOME``,
on a new machine or in a fresh container, resumes from the folder alone.

A resume restores the longest valid prefix of the chain data -> initial ->
calibration -> round 1 -> ... -> round R, and computes the rest. A damaged file
(truncated, corrupted, another format) ends the prefix with a warning naming it; a
file written under another key (other code version) ends it with a note; either
way that stage and every later one are computed again and their files rewritten.
"""

import contextlib
import fcntl
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import sources
from alcore import numerics
from alcore import stages as st
from alcore.config import ExperimentConfig
from store import files
from store.code_version import CODE_VERSION
from store.layout import Workspace

CHAIN = (st.DATA, st.INITIAL, st.CALIBRATION)


@dataclass
class Restored:
    """What a resume found valid in the folder, in chain order."""

    data: object = None
    initial: st.Initial | None = None
    calibration: st.Calibration | None = None
    rounds: list[st.RoundSummary] = field(default_factory=list)
    last_round: st.RoundRecord | None = None
    passive: st.Passive | None = None
    warnings: list[str] = field(default_factory=list)  # damaged files
    notes: list[str] = field(default_factory=list)  # stale files (other code or parameters)
    platforms: dict[str, dict | None] = field(default_factory=dict)  # stages computed on another platform
    seconds: dict[str, float | None] = field(default_factory=dict)  # what each restored stage took to compute

    @property
    def names(self) -> list[str]:
        """The restored stages, as the run graph and results.json name them."""
        out = [s.name for s, rec in zip(CHAIN, (self.data, self.initial, self.calibration), strict=True) if rec]
        return out + [f"round-{r.round:02d}" for r in self.rounds] + (["passive"] if self.passive else [])

    def __len__(self) -> int:
        return len(self.names)


def stage_name(stage: st.Stage, round_index: int | None = None) -> str:
    """A stage's name in the run graph and results.json: ``initial``, ``round-07``."""
    return stage.name if round_index is None else f"round-{round_index:02d}"


class PlatformMix(Exception):
    """A stage to resume from was computed on another numeric platform (one line:
    both platforms and how to accept the mix)."""


class Store:
    """Keys, files, saving and restoring of one experiment's stages.

    Every record carries the numeric platform that computed it
    (``alcore.numerics.platform``). A stage computed on another platform is not
    restored unless ``accept_platform_mix``: :class:`PlatformMix` is raised instead,
    before anything is computed, since the resumed run would mix numbers that no
    single machine computes. Accepted mixes are listed in ``mixed``.
    """

    def __init__(
        self, config: ExperimentConfig, code_version: str = CODE_VERSION, *, accept_platform_mix: bool = False
    ):
        self.config = config = sources.resolve(config)  # a data file's fingerprint is in every key
        self.code_version = code_version
        self.workspace = Workspace.for_config(config)
        self.accept_platform_mix = accept_platform_mix
        self.platform = numerics.platform()
        self.mixed: dict[str, dict | None] = {}  # stage -> the other platform it was computed on
        self.seconds: dict[str, float | None] = {}  # stage -> seconds it took, as saved or restored

    # -- keys and files
    def key(self, stage: st.Stage, round_index: int | None = None) -> str:
        return stage.key(self.config, code_version=self.code_version, round_index=round_index)

    def file(self, stage: st.Stage, round_index: int | None = None) -> Path:
        if stage is st.ROUND:
            return self.workspace.round_file(round_index)
        if stage is st.PASSIVE:
            return self.workspace.passive_file(self.config)
        return self.workspace.stage_file(stage.name)

    @contextlib.contextmanager
    def lock(self, stage: st.Stage, round_index: int | None = None):
        """An exclusive lock on a stage's file, across processes (``flock``): two
        experiments sharing a passive baseline (a sweep's strategies of one seed, on
        two workers) compute it once; the second waits, then restores it."""
        path = self.file(stage, round_index).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- one stage
    def save(
        self, stage: st.Stage, record: tuple, round_index: int | None = None, *, seconds: float | None = None
    ) -> str:
        """Write a stage's record (atomic, checksummed) with the seconds it took to
        compute; returns its digest."""
        path, key = self.file(stage, round_index), self.key(stage, round_index)
        self.seconds[stage_name(stage, round_index)] = seconds
        return files.save_record(path, key, record, self.platform, seconds)

    def shared_draw(self):
        """The data stage's result as another experiment drew it (same key, same numeric
        platform; ``share_draw``), or None."""
        key = self.key(st.DATA)
        try:
            record, platform, _ = files.load_record(self.workspace.draw_file(key), key, st.RECORDS[st.DATA.name])
        except (FileNotFoundError, files.DamagedFile, files.StaleFile):
            return None
        return record if platform == self.platform else None

    def share_draw(self, data) -> None:
        """Offer this drawn data to the experiments that draw the same (a sweep's other
        strategies of the seed, on other workers: a draw's TypiClust costs 1.2-2 s)."""
        key = self.key(st.DATA)
        path = self.workspace.draw_file(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            files.save_record(path, key, data, self.platform)

    def load(self, stage: st.Stage, round_index: int | None = None) -> tuple:
        """A stage's record; raises FileNotFoundError, DamagedFile or StaleFile."""
        return self._load(stage, round_index)[0]

    def _load(self, stage: st.Stage, round_index: int | None = None) -> tuple[tuple, dict | None, float | None]:
        path, key = self.file(stage, round_index), self.key(stage, round_index)
        return files.load_record(path, key, st.RECORDS[stage.name])

    def check(self, stage: st.Stage, round_index: int | None = None) -> tuple[str, tuple | None, str | None]:
        """(state, record, message): state is ``ok``, ``missing``, ``damaged`` or
        ``stale``; the message says why for the last two. A file of an older format
        is stale, not damaged: it was written correctly, by older code.

        Raises:
            PlatformMix: the stage was computed on another numeric platform and
                mixes are not accepted.
        """
        path = self.file(stage, round_index)
        redo = "recomputing it" if stage is st.PASSIVE else "recomputing it and every stage after it"
        try:
            record, platform, seconds = self._load(stage, round_index)
            if platform != self.platform:
                self._other_platform(path, stage, round_index, platform)
            self.seconds[stage_name(stage, round_index)] = seconds
            return "ok", record, None
        except FileNotFoundError:
            return "missing", None, None
        except files.DamagedFile as e:
            if e.reason.startswith("format version"):
                return "stale", None, f"{path} has an older file {e.reason.split(',')[0]}; {redo}"
            return "damaged", None, f"damaged result file {path}: {e.reason}; {redo}"
        except files.StaleFile:
            return "stale", None, f"{path} was computed by another code version or configuration; {redo}"

    def _other_platform(self, path: Path, stage: st.Stage, round_index: int | None, platform: dict | None) -> None:
        name = stage_name(stage, round_index)
        if not self.accept_platform_mix:
            raise PlatformMix(
                f"refusing to resume from {path}: it was computed on {numerics.describe(platform)}, and this process "
                f"computes on {numerics.describe(self.platform)}; the run would mix numbers no single machine computes. "
                "Run with --accept-platform-mix to accept the mix, or --refresh to recompute everything here"
            )
        self.mixed[name] = platform

    # -- a round's acquisition while its form waits for a person
    def _asked(self, round_index: int, y_labelled, exclude: list[int]) -> tuple[Path, str]:
        """The file and key of round ``round_index``'s acquisition from the labelled
        set with labels ``y_labelled`` (the person's answers so far) and ``exclude``."""
        labels = hashlib.sha256(json.dumps([[int(v) for v in y_labelled], sorted(map(int, exclude))]).encode())
        key = f"{self.key(st.ROUND, round_index)}:acquired:{labels.hexdigest()[:16]}"
        return self.workspace.root / "asked" / f"round-{round_index:03d}.joblib", key

    def save_acquired(self, round_index: int, y_labelled, exclude: list[int], acquired: st.Acquired) -> None:
        """Keep a round's acquisition while a person answers its form: a run that
        suspended and is started again by the answer takes it back instead of
        computing it again (about 1 s at round 49 of digits, on the person's clock).
        Only the latest round's is kept."""
        path, key = self._asked(round_index, y_labelled, exclude)
        for old in path.parent.glob("round-*.joblib"):
            if old != path:
                old.unlink(missing_ok=True)
        files.save_record(path, key, acquired, self.platform)

    def load_acquired(self, round_index: int, y_labelled, exclude: list[int]) -> st.Acquired | None:
        """The acquisition :meth:`save_acquired` kept for exactly this round, labelled
        set and exclusions, computed on this platform; None otherwise."""
        path, key = self._asked(round_index, y_labelled, exclude)
        try:
            acquired, platform, _ = files.load_record(path, key, st.Acquired)
        except (FileNotFoundError, files.DamagedFile, files.StaleFile):
            return None
        return acquired if platform == self.platform else None

    # -- the chain
    def probe_passive(self) -> bool:
        """Whether the passive baseline's file exists (a stat, no reading)."""
        return self.file(st.PASSIVE).exists()

    def probe(self) -> int:
        """How many chain files exist, in order (a stat per file, no reading): what a
        resume may restore at most. For deciding what to compile ahead."""
        count = 0
        for stage in CHAIN:
            if not self.file(stage).exists():
                return count
            count += 1
        for r in range(1, self.config.rounds + 1):
            if not self.file(st.ROUND, r).exists():
                break
            count += 1
        return count

    def restore(self, *, passive: bool = False) -> Restored:
        """Load the longest valid prefix of the chain (every file verified), and the
        passive baseline when ``passive`` and its file is valid."""
        out = Restored(platforms=self.mixed, seconds=self.seconds)
        if passive:
            state, record, message = self.check(st.PASSIVE)
            out.passive = record
            _note(out, state, message)
        for stage, attr in zip(CHAIN, ("data", "initial", "calibration"), strict=True):
            state, record, message = self.check(stage)
            if state != "ok":
                _note(out, state, message)
                return out
            setattr(out, attr, record)
        for r in range(1, self.config.rounds + 1):
            state, record, message = self.check(st.ROUND, r)
            if state != "ok":
                _note(out, state, message)
                return out
            out.rounds.append(record.summary())
            out.last_round = record
        return out

    def status(self) -> dict:
        """What is on disk for this configuration: every stage's file, its state and
        its main numbers (for ``--status``)."""
        rows = [_row(stage.name, self.file(stage), *self._status_of(stage)) for stage in CHAIN]
        rounds = sorted(self.workspace.round_file(1).parent.glob("round-*.joblib"))
        for path in rounds:
            r = int(path.stem.split("-")[1])
            rows.append(_row(path.stem, path, *self._status_of(st.ROUND, r)))
        rows.append(_row("passive", self.file(st.PASSIVE), *self._status_of(st.PASSIVE)))
        return {"folder": str(self.workspace.root), "exists": self.workspace.root.exists(), "stages": rows}

    def _status_of(self, stage: st.Stage, round_index: int | None = None) -> tuple[str, tuple | None, str | None]:
        try:
            return self.check(stage, round_index)
        except PlatformMix as e:
            return "other-platform", None, str(e)


def _note(out: Restored, state: str, message: str | None) -> None:
    if state == "damaged":
        out.warnings.append(message)
    elif state == "stale":
        out.notes.append(message)


def _row(name: str, path: Path, state: str, record, message: str | None) -> dict:
    row = {"stage": name, "file": str(path), "bytes": path.stat().st_size if path.exists() else None, "state": state}
    if message:
        row["message"] = message
    if record is not None:
        for key in ("accuracy", "prior_prec", "labels", "indices"):
            if key in record._fields:
                value = getattr(record, key)
                row[key] = value.tolist() if hasattr(value, "tolist") else value
    return row


def print_status(config: ExperimentConfig) -> None:
    print(json.dumps(Store(config).status(), indent=2))
