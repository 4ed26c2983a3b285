"""The experiment's parameters: one frozen pydantic model, defaults = the tutorial's.

Prefect validates it as the flow's parameter (the UI renders a form from its schema),
the CLI builds it from flags, and ``prefect.yaml`` overrides it as a mapping. The
core's functions never receive it: they take keyword arguments.
"""

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alcore import strategies

# The strategy names come from the registry (alcore/strategies.py), the only place
# a strategy is named; the run form shows them as an enum.
Acquisition = Literal[strategies.names()]
Curvature = Literal["full", "diagonal", "lanczos", "lobpcg"]
Oracle = Literal["truth", "human"]


class ExperimentConfig(BaseModel):
    """One active-learning experiment (and its passive baseline)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seed: int = Field(
        2392386, ge=0, le=2**32 - 1, description="Seed split into the initial, calibration, passive and sampling keys."
    )
    rounds: int = Field(50, ge=0, le=2000, description="Active-learning rounds: one labelled point each.")
    n_initial: int = Field(20, ge=1, le=10_000, description="Uniform random points labelled before the first round.")
    n_calibration: int = Field(30, ge=1, le=10_000, description="Held-out points for calibrating the prior precision.")
    grid_size: int = Field(
        100, ge=2, le=1000, description="G: the G x G grid of candidate points and accuracy evaluation."
    )
    hidden_channels: int = Field(32, ge=1, le=1024, description="Width of the MLP's three hidden layers.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Adam learning rate.")
    batch_size: int = Field(10, ge=1, le=10_000, description="Mini-batch size (the tutorial's loader shuffling).")
    initial_epochs: int = Field(
        1000, ge=1, le=1_000_000, description="Epochs of the initial training (tutorial: 50 x initial points)."
    )
    epochs_per_round: int = Field(
        35, ge=1, le=1_000_000, description="Epochs of retraining after each new label (optimizer state carried over)."
    )
    acquisition: Acquisition = Field("max_std", description=strategies.describe() + ".")
    acquisition_batch: int = Field(
        1,
        ge=1,
        le=1000,
        description="Points labelled per round (k). k > 1: greedy, each pick conditioning the linearised posterior on the earlier picks; k = 1 is the single-point rule.",
    )
    predictive_samples: int = Field(
        64, ge=1, le=100_000, description="Monte-Carlo samples of the predictive for entropy, bald and margin."
    )
    curvature: Curvature = Field(
        "full", description="Laplace curvature: full (exact, fast dual form) or laplax's diagonal, lanczos, lobpcg."
    )
    log_prior_prec_min: float = Field(
        -2.0, ge=-10, le=10, description="log10 of the smallest prior precision tried in calibration."
    )
    log_prior_prec_max: float = Field(
        3.0, ge=-10, le=10, description="log10 of the largest prior precision tried in calibration."
    )
    calibration_grid_size: int = Field(100, ge=1, le=10_000, description="Prior precisions tried (log-spaced).")
    mc_samples: int = Field(
        30, ge=1, le=10_000, description="Monte-Carlo samples of the predictive in the ECE objective."
    )
    oracle: Oracle = Field(
        "truth",
        description="Who labels: truth (the problem's ground truth, the tutorial's) or human (a person answers forms in the Prefect UI; needs a Prefect server).",
    )
    label_wait_seconds: int = Field(
        86_400,
        ge=1,
        le=30 * 86_400,
        description="Human oracle: how long a run waits for an answer before it ends (nothing is lost; re-run to continue).",
    )
    passive: bool = Field(
        True,
        description="Also train the passive baseline (uniform points, same label budget). Off by default with a human oracle (it would ask as many labels again).",
    )
    plots: bool = Field(True, description="Write the PNG plots and the GIF (sweeps turn this off).")
    artifacts_dir: str = Field(
        "artifacts", min_length=1, description="Folder under which each experiment gets its own output folder."
    )

    @model_validator(mode="before")
    @classmethod
    def _human_oracle_skips_the_passive_baseline(cls, values):
        """With a human oracle the passive baseline is off unless asked for."""
        if isinstance(values, dict) and values.get("oracle") == "human" and "passive" not in values:
            return {**values, "passive": False}
        return values

    @model_validator(mode="after")
    def _check_ranges(self):
        if self.log_prior_prec_min > self.log_prior_prec_max:
            raise ValueError(
                f"log_prior_prec_min ({self.log_prior_prec_min}) must not exceed "
                f"log_prior_prec_max ({self.log_prior_prec_max})"
            )
        if self.curvature != "full" and strategies.get(self.acquisition).needs_covariance:
            raise ValueError(
                f"acquisition {self.acquisition!r} needs the per-point predictive covariance of the full-GGN "
                f"dual form: use curvature 'full' (got {self.curvature!r})"
            )
        return self

    @property
    def n_passive(self) -> int:
        """Passive baseline's label budget: initial points + k per round."""
        return n_passive(self)

    @property
    def passive_epochs(self) -> int:
        """Passive baseline's epochs: initial training + every round's retraining."""
        return passive_epochs(self)


def n_passive(c) -> int:
    """Passive label budget of a configuration (or of a stage's view of one)."""
    return c.n_initial + c.rounds * c.acquisition_batch


def passive_epochs(c) -> int:
    """Passive epochs of a configuration (or of a stage's view of one)."""
    return c.initial_epochs + c.rounds * c.epochs_per_round


def digest(payload) -> str:
    """Short stable hash of a JSON-serialisable payload (keys, folder names)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
