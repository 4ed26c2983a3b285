"""Who labels: the oracles an experiment asks for labels.

The loop asks an :class:`Oracle` and never branches on which one it has. Two exist:

- :class:`oracles.truth.TruthOracle`: the problem's ground truth (a simulated
  experiment, the tutorial's);
- :class:`oracles.human.HumanOracle`: a person, answering forms in the Prefect UI while
  the run waits; every answer goes to the experiment's ledger before it is used.

A new oracle (one reading labels from a file, say) is one class with these methods,
and one line in :func:`for_config`.
"""

from pathlib import Path
from typing import Protocol

import numpy as np

from alcore.config import ExperimentConfig
from alcore.data import Data
from alcore.stages import Acquired


class Oracle(Protocol):
    """What the experiment asks of whoever labels."""

    warnings: list[str]  # for results.json: e.g. ledger lines that did not verify

    def label_data(self, drawn: Data) -> tuple[list[int] | None, list[int] | None]:
        """Labels of the initial and the calibration points (None: the drawn ones stand)."""

    def label_passive(self, data: Data, points: np.ndarray) -> list[int] | None:
        """Labels of the passive baseline's points (None: the ground truth's)."""

    def excluded(self) -> list[int]:
        """Candidates never to propose again (points that could not be labelled)."""

    def label_round(self, r: int, data: Data, acquired: Acquired, context: "RoundContext") -> dict[int, int] | None:
        """A class for every acquired candidate, or None when some could not be
        labelled: the round then acquires again, without them (:meth:`excluded`)."""

    def stops_after(self, r: int) -> bool:
        """Whether the loop ends after round ``r`` (a person asked it to)."""

    def accepted_guesses(self) -> dict[str, list[int]]:
        """Per ask (``round-007``), the candidates whose label is the model's guess,
        accepted as the form was pre-filled (none: every label is the oracle's own)."""


class RoundContext:
    """What a form may show of the round: the model it acquired with and the labelled set."""

    def __init__(
        self, params: dict, x_labelled: np.ndarray, y_labelled: np.ndarray, rounds: int, stop_line: str | None = None
    ):
        self.params, self.x_labelled, self.y_labelled, self.rounds = params, x_labelled, y_labelled, rounds
        self.stop_line = stop_line  # the stop rule's state in one line (alcore/stopping.py)


def for_config(config: ExperimentConfig, folder: Path, log) -> Oracle:
    """The oracle a configuration names (``config.oracle``)."""
    if config.oracle == "human":
        from oracles.human import HumanOracle  # Prefect's forms: only for a person

        return HumanOracle(config, folder, log)
    from oracles.truth import TruthOracle

    return TruthOracle()
