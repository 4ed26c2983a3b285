"""The experiment's parameters: one frozen pydantic model, defaults = the tutorial's.

Prefect validates it as the flow's parameter (the UI renders a form from its schema),
the CLI builds it from flags, and ``prefect.yaml`` overrides it as a mapping. The
core's functions never receive it: they take keyword arguments.
"""

import hashlib
import json
from typing import Literal

from laplax.enums import CurvApprox
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_serializer, field_validator, model_validator

from alcore import stopping, strategies
from alcore.data import PROBLEMS

# The strategy names come from the registry (alcore/strategies.py), the only place
# a strategy is named; the run form shows them as an enum.
Acquisition = Literal[strategies.names()]
Curvature = CurvApprox  # laplax's own: full (here the exact dual form), diagonal, lanczos, lobpcg
Oracle = Literal["truth", "human"]
Problem = Literal[PROBLEMS]
CalibrationObjective = Literal["ece", "marglik"]


# Fields whose default depends on other fields (the data, the oracle): empty (None)
# in the schema, resolved by the configuration's validator.
AUTO_FIELDS = ("calibration", "exclude_labelled", "passive")


def auto_defaults(values) -> dict:
    """The data-dependent defaults of :data:`AUTO_FIELDS` for the given field values."""
    human = values.get("oracle") == "human"
    pool = (values.get("data") or "tutorial") != "tutorial"
    return {"calibration": "marglik" if pool else "ece", "exclude_labelled": pool, "passive": not human}


class Unresolved(ValueError):
    """A configuration's data file was not read yet (``sources.resolve``)."""


class ExperimentConfig(BaseModel):
    """One active-learning experiment (and its passive baseline)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seed: int = Field(
        2392386, ge=0, le=2**32 - 1, description="Seed split into the initial, calibration, passive and sampling keys."
    )
    data: Problem = Field(
        "tutorial",
        description="The problem: tutorial (the laplax tutorial's square and grid); moons, circles (2-D, synthetic); blobs (synthetic, n_features x n_classes); digits, wine, breast_cancer, iris (shipped with scikit-learn); file (data_file).",
    )
    data_file: str | None = Field(
        None, description="data=file: a .csv (header row), .npy (features) or .npz (arrays x, optionally y)."
    )
    label_column: str | None = Field(
        "label", description="data=file, CSV: the label column's name; none for a file without labels (human oracle)."
    )
    class_names: str | None = Field(
        None,
        description="Comma-separated class names: the classes a person chooses from, for data without labels; for labelled data they rename the data's own (in the order of the labels' sorted values; the tutorial's 0, 1, 2).",
    )
    item_column: str | None = Field(
        None,
        description="data=file, CSV: a column showing each row to a person, not a feature: an image file's path (relative to the CSV's folder) or a short text.",
    )
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Pool-based data: the share held out as the test set (seeded split)."
    )
    pool_size: int = Field(2000, ge=10, le=10_000_000, description="moons, circles, blobs: how many points to draw.")
    n_features: int = Field(20, ge=1, le=10_000, description="blobs: input dimension.")
    n_classes: int = Field(5, ge=2, le=1000, description="blobs: number of classes.")
    noise: float = Field(0.1, ge=0.0, le=10.0, description="moons, circles: std of the Gaussian noise.")
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
        CurvApprox.FULL,
        description="Laplace curvature: full (exact, fast dual form) or laplax's diagonal, lanczos, lobpcg.",
    )
    log_prior_prec_min: float = Field(
        -2.0, ge=-10, le=10, description="log10 of the smallest prior precision tried in calibration."
    )
    log_prior_prec_max: float = Field(
        3.0, ge=-10, le=10, description="log10 of the largest prior precision tried in calibration."
    )
    calibration: CalibrationObjective | None = Field(
        None,
        description="How the prior precision is chosen: ece (the tutorial's: ECE of the predictive on held-out labelled calibration points) or marglik (the Laplace marginal likelihood of the labelled set: no extra labels). Empty: ece for the tutorial, marglik for other data.",
    )
    recalibrate_every: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Choose the prior precision again every k rounds as the labelled set grows (0: once, before the rounds).",
    )
    exclude_labelled: bool | None = Field(
        None,
        description="Never pick a candidate that is already labelled (the tutorial's argmax may pick a grid point twice). Empty: off for the tutorial, on for pools.",
    )
    count_all_labels: bool = Field(
        False,
        description="Give the passive baseline every label the active side used, calibration labels included (off: the tutorial's comparison, initial + acquired labels).",
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
    label_hold_seconds: int = Field(
        300,
        ge=0,
        le=30 * 86_400,
        description="Human oracle, a deployment's run: how long it waits paused, its process kept (the next form follows an answer within a second), before it suspends and frees the worker's process (the next form then takes a few seconds).",
    )
    passive: bool | None = Field(
        None,
        description="Also train the passive baseline (uniform points, same label budget). Empty: on, but off with a human oracle (it would ask as many labels again).",
    )
    plots: bool = Field(True, description="Write the PNG plots and the GIF (sweeps turn this off).")
    stop_when: str | None = Field(
        None,
        description="End the rounds early when a stopping rule signals: stable (stabilising predictions: the pool's predicted classes changed on at most 1 % per round over the last 3 rounds) or stable:<percent>, e.g. stable:0.5; none: every round runs.",
    )
    artifacts_dir: str = Field(
        "artifacts", min_length=1, description="Folder under which each experiment gets its own output folder."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_that_depend_on_other_fields(cls, values):
        """Defaults that follow other fields, where a field is not given or empty
        (None): the passive baseline is off with a human oracle; pool data (anything
        but the tutorial) choose the prior precision by marginal likelihood and never
        re-pick a point. Explicit values win. The UI's *Custom run* sends every field
        of the form, so these fields' schema defaults are empty (None), never the
        tutorial's values, which would override the data's (see :meth:`_auto_as_empty`)."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for name, value in auto_defaults(values).items():
            if values.get(name) is None:
                values[name] = value
        return values

    @field_serializer(*AUTO_FIELDS, when_used="json")
    def _auto_as_empty(self, value, info):
        """In JSON (the flow's parameter default in Prefect's schema, a run's
        parameters) a field whose value is its data-dependent default is written
        empty, so a form that sends it back unchanged keeps it data-dependent; the
        Python dump (``results.json``, ``config.json``) keeps the resolved value."""
        return None if value == auto_defaults(self.__dict__)[info.field_name] else value

    # (data_file, its SHA-256) once ``sources.resolve`` has read the file; not a field:
    # the schema and the UI never show it, and it is set only by reading the file
    _data_fingerprint: tuple[str, str] | None = PrivateAttr(None)

    @property
    def data_fingerprint(self) -> str:
        """SHA-256 of the data file (data=file), "" otherwise: in the data stage's key,
        so results are never restored for an edited file. ``sources.resolve`` reads
        the file and sets it; before that, asking for it raises :class:`Unresolved`."""
        if self.data != "file":
            return ""
        if not self.has_data_fingerprint:
            raise Unresolved(
                f"the data file {self.data_file} has not been read for this configuration: "
                "pass it through sources.resolve(config) first"
            )
        return self._data_fingerprint[1]

    @property
    def has_data_fingerprint(self) -> bool:
        """Whether the fingerprint is set, for this configuration's ``data_file``."""
        fp = self._data_fingerprint
        return fp is not None and fp[0] == self.data_file

    def with_data_fingerprint(self, sha256: str) -> "ExperimentConfig":
        """A copy carrying the SHA-256 of its data file (computed by ``sources``)."""
        out = self.model_copy()
        out._data_fingerprint = (self.data_file, sha256)
        return out

    @model_validator(mode="after")
    def _check_data(self):
        """What can be checked without reading the file (``sources.resolve`` reads it)."""
        if self.data == "file" and not self.data_file:
            raise ValueError("data=file needs data_file, the path of a .csv, .npy or .npz file")
        if self.data != "file" and self.data_file:
            raise ValueError(f"data_file is set but data is {self.data!r}: use data=file to read it")
        return self

    @field_validator("stop_when")
    @classmethod
    def _stop_when(cls, value):
        stopping.parse_stop_when(value)  # raises ValueError naming what is expected
        return value

    @property
    def stop_threshold_pct(self) -> float | None:
        """The stop rule's threshold in percent of the pool (None: no rule)."""
        return stopping.parse_stop_when(self.stop_when)

    @model_validator(mode="after")
    def _check_ranges(self):
        if self.log_prior_prec_min > self.log_prior_prec_max:
            raise ValueError(
                f"log_prior_prec_min ({self.log_prior_prec_min}) must not exceed "
                f"log_prior_prec_max ({self.log_prior_prec_max})"
            )
        if self.curvature != "full" and self.calibration == "marglik":
            raise ValueError(
                f"calibration 'marglik' uses the full GGN's eigenvalues: use curvature 'full' (got {self.curvature!r})"
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


def held_out_labels(c) -> int:
    """Labels the calibration uses beyond the labelled set (ECE on held-out points)."""
    return c.n_calibration if c.calibration == "ece" else 0


def n_passive(c) -> int:
    """Passive label budget of a configuration (or of a stage's view of one): the
    initial and acquired labels (the tutorial's), plus the calibration's held-out
    labels when every label counts."""
    return c.n_initial + c.rounds * c.acquisition_batch + (held_out_labels(c) if c.count_all_labels else 0)


def passive_epochs(c) -> int:
    """Passive epochs of a configuration (or of a stage's view of one)."""
    return c.initial_epochs + c.rounds * c.epochs_per_round


def digest(payload) -> str:
    """Short stable hash of a JSON-serialisable payload (keys, folder names)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
