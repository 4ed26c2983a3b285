"""The experiment's parameters: one frozen pydantic model, defaults = the tutorial's.

Prefect validates it as the flow's parameter (the UI renders a form from its schema),
the CLI builds it from flags, and ``prefect.yaml`` overrides it as a mapping. The
core's functions never receive it: they take keyword arguments.
"""

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_serializer, field_validator, model_validator

from alcore import stopping, strategies
from alcore.data import PROBLEMS

# The strategy names come from the registry (alcore/strategies.py), the only place
# a strategy is named; the run form shows them as an enum.
Acquisition = Literal[strategies.names()]
# laplax's CurvApprox values (tests/test_storage_and_config.py checks they still are):
# full (here the exact dual form), diagonal, lanczos, lobpcg. Named here, not imported:
# laplax's package import costs 0.33 s, at every start of a run's process.
Curvature = Literal["full", "diagonal", "lanczos", "lobpcg"]
Oracle = Literal["truth", "human"]
Problem = Literal[PROBLEMS]
CalibrationObjective = Literal["ece", "marglik"]
ColdStart = Literal["uniform", "typiclust"]
RetrainSchedule = Literal["warm", "fresh", "scratch"]
BatchRule = Literal["greedy", "softrank", "power", "diverse"]

# What pool data (every problem but the tutorial) default to, where a field is not
# given: the setting that won the measured comparison with scikit-activeml's peers
# (benchmarks/peers.py, README "Ahead of the peers"). The tutorial keeps its own
# settings: its faithful run is the product's promise.
POOL_DEFAULTS = {
    "calibration": "marglik",
    "exclude_labelled": True,
    "cold_start": "typiclust",
    "retrain_schedule": "scratch",
    "train_with_prior": True,
    "batch_size": 0,
    "learning_rate": 3e-3,
    "recalibrate_every": 10,
    "batch_rule": "diverse",
}


# The tutorial's own values of the fields POOL_DEFAULTS sets for pools.
TUTORIAL_DEFAULTS = {
    "calibration": "ece",
    "exclude_labelled": False,
    "cold_start": "uniform",
    "retrain_schedule": "warm",
    "train_with_prior": False,
    "batch_size": 10,
    "learning_rate": 1e-3,
    "recalibrate_every": 0,
    "batch_rule": "greedy",
}

# Fields whose default depends on other fields (the data, the oracle): empty (None)
# in the schema, resolved by the configuration's validator.
AUTO_FIELDS = (*POOL_DEFAULTS, "passive")


def auto_defaults(values) -> dict:
    """The data-dependent defaults of :data:`AUTO_FIELDS` for the given field values:
    the tutorial's own or :data:`POOL_DEFAULTS`; the passive baseline off with a person
    as the oracle."""
    pool = (values.get("data") or "tutorial") != "tutorial"
    return {**(POOL_DEFAULTS if pool else TUTORIAL_DEFAULTS), "passive": values.get("oracle") != "human"}


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
    n_initial: int = Field(20, ge=1, le=10_000, description="Points labelled before the first round (see cold_start).")
    standardise: bool = Field(
        False,
        description="tutorial: standardise the inputs by the grid's mean and std, as pools are by their split (the tutorial's network sees the unit square as it is). Pools: always.",
    )
    cold_start: ColdStart | None = Field(
        None,
        description="How the initial points are chosen, without labels: uniform (seeded random draws, the tutorial's) or typiclust (the most typical point of each of n_initial k-means clusters of the candidates; PCA-20 first for more features). Empty: uniform for the tutorial, typiclust for pools.",
    )
    n_calibration: int = Field(30, ge=1, le=10_000, description="Held-out points for calibrating the prior precision.")
    grid_size: int = Field(
        100, ge=2, le=1000, description="G: the G x G grid of candidate points and accuracy evaluation."
    )
    hidden_channels: int = Field(32, ge=1, le=1024, description="Width of the MLP's hidden layers.")
    hidden_layers: int | None = Field(
        None,
        ge=1,
        le=8,
        description="How many hidden layers the MLP has. Empty: 3 for data of two features (the tutorial's), 1 for more.",
    )
    learning_rate: float | None = Field(
        None, gt=0, le=10, description="Adam learning rate. Empty: 1e-3 for the tutorial, 3e-3 for pools."
    )
    batch_size: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="Mini-batch size (the tutorial's loader shuffling); 0: full batches. Empty: 10 for the tutorial, 0 for pools.",
    )
    initial_epochs: int = Field(
        1000, ge=1, le=1_000_000, description="Epochs of the initial training (tutorial: 50 x initial points)."
    )
    epochs_per_round: int = Field(
        35, ge=1, le=1_000_000, description="Epochs of retraining after each new label (warm and fresh schedules)."
    )
    retrain_schedule: RetrainSchedule | None = Field(
        None,
        description="How each round retrains: warm (epochs_per_round more, optimizer state carried over: the tutorial's), fresh (epochs_per_round more with a new Adam state) or scratch (re-initialised from the seed, initial_epochs anew). Empty: warm for the tutorial, scratch for pools.",
    )
    train_with_prior: bool | None = Field(
        None,
        description="Retrain each round on cross-entropy + tau/2 |theta|^2 with tau the calibrated prior precision (the MAP the Laplace approximation assumes); off: plain cross-entropy (the tutorial's). Empty: off for the tutorial, on for pools.",
    )
    acquisition: Acquisition = Field("max_std", description=strategies.describe() + ".")
    acquisition_batch: int = Field(
        1,
        ge=1,
        le=1000,
        description="Points labelled per round (k); k = 1 is the single-point rule; k > 1: see batch_rule.",
    )
    batch_rule: BatchRule | None = Field(
        None,
        description="k > 1: greedy (each pick conditions the linearised posterior on the earlier picks: k scoring passes), softrank or power (k points drawn from one scoring pass with weights rank^-beta or score^beta: stochastic batch acquisition, Kirsch et al. 2023), diverse (the best-scoring point of each of k k-means clusters of the top beta x k candidates: Zhdanov 2019). Empty: greedy for the tutorial, diverse for pools.",
    )
    batch_beta: float = Field(
        4.0,
        gt=0,
        le=1000,
        description="softrank and power: the exponent beta; diverse: the candidates clustered, beta x k (larger beta: softrank and power closer to the top-k, diverse more spread).",
    )
    predictive_samples: int = Field(
        64, ge=1, le=100_000, description="Monte-Carlo samples of the predictive for entropy, bald and margin."
    )
    curvature: Curvature = Field(
        "full",
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
    recalibrate_every: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="Choose the prior precision again every k rounds as the labelled set grows (0: once, before the rounds). Empty: 0 for the tutorial, 10 for pools.",
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
        but the tutorial) take :data:`POOL_DEFAULTS` (the prior precision by marginal
        likelihood, no point picked twice, the measured winner's cold start and
        training), the tutorial its own values. Explicit values win. The UI's *Custom run* sends every field
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
