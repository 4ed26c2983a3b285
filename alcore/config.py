"""The experiment's parameters: one frozen pydantic model, defaults = the tutorial's.

Prefect validates it as the flow's parameter (the UI renders a form from its schema),
the CLI builds it from flags, and ``prefect.yaml`` overrides it as a mapping. The
core's functions never receive it: they take keyword arguments.
"""

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Acquisition = Literal["max_std", "sampled", "entropy", "bald", "margin", "random"]
Curvature = Literal["full", "diagonal", "lanczos", "lobpcg"]

# Fields that do not change any number of a round: left out of the round cache key.
# ``rounds`` is one of them because round r does not depend on how many follow it
# (the sampling keys are a prefix-consistent split), which is what lets a longer run
# reuse a shorter one's rounds.
_NOT_IN_ROUND_KEY = {"rounds", "artifacts_dir", "passive", "plots"}
# What the passive baseline's numbers depend on (not the acquisition strategy: a sweep
# over strategies trains one passive model per seed and budget).
_PASSIVE_KEY = (
    "seed",
    "n_initial",
    "rounds",
    "acquisition_batch",
    "grid_size",
    "hidden_channels",
    "learning_rate",
    "batch_size",
    "initial_epochs",
    "epochs_per_round",
)


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
    acquisition: Acquisition = Field(
        "max_std",
        description="max_std: largest predictive std of the predicted class (the tutorial's); sampled: drawn with those stds as logits; entropy: of the predictive; bald: mutual information (MC over the linearised Laplace predictive); margin: smallest top-2 margin; random: uniform (the passive baseline on the active loop's schedule).",
    )
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
    passive: bool = Field(True, description="Also train the passive baseline (uniform points, same label budget).")
    plots: bool = Field(True, description="Write the PNG plots and the GIF (sweeps turn this off).")
    artifacts_dir: str = Field(
        "artifacts", min_length=1, description="Folder under which each experiment gets its own output folder."
    )

    @model_validator(mode="after")
    def _check_ranges(self):
        if self.log_prior_prec_min > self.log_prior_prec_max:
            raise ValueError(
                f"log_prior_prec_min ({self.log_prior_prec_min}) must not exceed "
                f"log_prior_prec_max ({self.log_prior_prec_max})"
            )
        if self.curvature != "full" and self.acquisition in ("entropy", "bald", "margin"):
            raise ValueError(
                f"acquisition {self.acquisition!r} needs the per-point predictive covariance of the full-GGN "
                f"dual form: use curvature 'full' (got {self.curvature!r})"
            )
        return self

    @property
    def n_passive(self) -> int:
        """Passive baseline's label budget: initial points + k per round."""
        return self.n_initial + self.rounds * self.acquisition_batch

    @property
    def passive_epochs(self) -> int:
        """Passive baseline's epochs: initial training + every round's retraining."""
        return self.initial_epochs + self.rounds * self.epochs_per_round

    def round_key_fields(self) -> dict:
        """The fields every round's numbers depend on."""
        return {k: v for k, v in self.model_dump().items() if k not in _NOT_IN_ROUND_KEY}

    def round_hash(self) -> str:
        """Hash of :meth:`round_key_fields`: names the experiment folder and keys rounds."""
        return _hash(self.round_key_fields())

    def passive_hash(self) -> str:
        """Hash of what the passive baseline depends on."""
        return _hash({k: getattr(self, k) for k in _PASSIVE_KEY})

    def full_hash(self) -> str:
        """Hash of everything that changes a number, rounds included (passive, report)."""
        return _hash({**self.round_key_fields(), "rounds": self.rounds})


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
