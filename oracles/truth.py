"""The ground truth as the oracle: a simulated experiment (the tutorial's)."""

import numpy as np

from alcore.data import Data
from alcore.stages import Acquired


class TruthOracle:
    """Labels every point with the problem's true class, at once."""

    def __init__(self):
        self.warnings: list[str] = []

    def label_data(self, drawn: Data) -> tuple[None, None]:
        return None, None  # drawn with their true labels

    def label_passive(self, data: Data, points: np.ndarray) -> None:
        return None  # the passive stage draws its points with their true labels

    def excluded(self) -> list[int]:
        return []

    def label_round(self, r: int, data: Data, acquired: Acquired, context) -> dict[int, int]:
        return {int(i): int(data.pool_labels[i]) for i in acquired.indices}

    def stops_after(self, r: int) -> bool:
        return False

    def accepted_guesses(self) -> dict[str, list[int]]:
        return {}
