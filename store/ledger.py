"""A person's answers: an append-only, checksummed ledger in the experiment folder.

Labels from a person are data that cannot be recomputed, so each form's answer is
written here (and fsynced) before the flow uses it: one JSON line per submitted
form, with the flow-run input's id, the time, every point's class or "cannot
label", and whether the person asked to stop after the round. A replay of the flow
(a suspended run re-runs from the top when answered; a resumed or re-run
experiment starts over) reads the ledger first and never asks again for what it
holds. The ledger is not keyed by the code version: a person's label of a point
stays valid when the math changes.

Each line carries the SHA-256 of its content; a line that does not verify (a crash
in the middle of a write: only the last line can be affected, and the flow had not
continued past it) is ignored with a warning, and that form is asked again.
"""

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from store.files import writing


class PointAnswer(NamedTuple):
    """One point of a form: its index among the candidates, coordinates, class, and
    the model's guess the form was pre-filled with (lines written before guesses
    were recorded read as None)."""

    index: int
    point: list[float]
    label: int | None  # None: the person could not label it
    guess: int | None = None  # the class the form's select was pre-filled with (None: no guess shown)
    accepted_guess: bool | None = None  # the answer is the pre-filled guess (None: there was none)

    @property
    def own(self) -> bool:
        """Whether the person gave this label themselves (not an accepted guess)."""
        return self.label is not None and not self.accepted_guess


class FormAnswer(NamedTuple):
    """One submitted form."""

    ask: str  # "initial", "calibration", "passive" or "round-007"
    attempt: int  # 1 for the first form of an ask, 2 after skipped points were replaced, ...
    points: list[PointAnswer]
    stop: bool  # "stop after this round"
    input_id: str | None  # the Prefect flow-run input the answer came in
    answered_at: str  # ISO 8601, UTC
    source: str = "human"

    @property
    def labels(self) -> dict[int, int | None]:
        return {p.index: p.label for p in self.points}

    @property
    def skipped(self) -> list[int]:
        return [p.index for p in self.points if p.label is None]


def _digest(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class AnswerBook:
    """The ledger of one experiment: ``<folder>/answers.jsonl``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.warnings: list[str] = []

    def read(self) -> list[FormAnswer]:
        """Every verified answer, in the order they were given."""
        self.warnings = []
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                checksum = entry.pop("sha256")
                if _digest(entry) != checksum:
                    raise ValueError("checksum mismatch")
                points = [
                    PointAnswer(p["index"], p["point"], p["label"], p.get("guess"), p.get("accepted_guess"))
                    for p in entry.pop("points")
                ]
                out.append(FormAnswer(points=points, **entry))
            except (ValueError, KeyError, TypeError) as e:
                self.warnings.append(f"{self.path} line {n} is damaged ({e}); that form will be asked again")
        return out

    def for_ask(self, ask: str) -> list[FormAnswer]:
        return [a for a in self.read() if a.ask == ask]

    def append(self, answer: FormAnswer) -> None:
        """Write one answer durably (append, flush, fsync) before it is used."""
        entry = answer._asdict()
        entry["points"] = [p._asdict() for p in answer.points]
        entry["sha256"] = _digest({k: v for k, v in entry.items()})
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def skipped(self) -> list[int]:
        """Every candidate index a person could not label (excluded from later picks)."""
        return sorted({i for a in self.read() for i in a.skipped if not a.ask.startswith(("initial", "calibration"))})


def accepted_guesses(answers: Iterable[FormAnswer]) -> dict[str, list[int]]:
    """Per ask (``round-007``), the candidates whose label is the model's pre-filled
    guess, accepted as it was (the rest are the person's own answers)."""
    out: dict[str, list[int]] = {}
    for a in answers:
        for p in a.points:
            if p.accepted_guess:
                out.setdefault(a.ask, []).append(int(p.index))
    return out


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resolve(answers: Iterable[FormAnswer], indices: list[int]) -> dict[int, int]:
    """The labels the answers so far give to ``indices`` (skipped points have none)."""
    labels = {p.index: p.label for a in answers for p in a.points if p.label is not None}
    return {i: labels[i] for i in indices if i in labels}
