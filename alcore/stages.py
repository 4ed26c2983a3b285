"""The experiment's stages: what each one reads from the configuration, and what it computes.

Every stage is declared once, here, with the configuration fields it reads
(:class:`Stage`), and its functions are decorated with that declaration. A stage
function never sees the configuration itself, only a :class:`ConfigView` of the
declared fields: reading any other field raises :class:`UndeclaredField`. A stage's
key is a hash of its declared fields, those of the stages it runs after, the round
and the code version (:meth:`Stage.key`), so the key follows from the declaration
and cannot miss a field the stage reads.

The functions are pure (no Prefect, no files): ``tasks/stages.py`` runs them as
Prefect tasks and stores their records. Records are NamedTuples of numpy arrays and
plain values, so they pickle compactly and compare exactly; they hold results only,
no wall-clock times (the store keeps what a stage took beside its record).
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from alcore import calibration, coldstart, marglik, problem, stopping, strategies
from alcore import data as datasets
from alcore import experiment as ex
from alcore.config import digest, held_out_labels, n_passive, passive_epochs
from alcore.data import Data
from alcore.model import hidden_layers_for


class UndeclaredField(AttributeError):
    """A stage read a configuration field it does not declare."""


class ConfigView:
    """The fields of a configuration that one stage declares; nothing else.

    Read-only attribute access like the configuration itself; any other field
    raises :class:`UndeclaredField` naming the stage and the field.
    """

    __slots__ = ("_stage", "_values")

    def __init__(self, stage: str, values: dict[str, Any]):
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise UndeclaredField(
                f"stage {self._stage!r} reads the configuration field {name!r} but does not declare it "
                "(add it to the stage's `reads` in alcore/stages.py, so it is part of the stage's key)"
            ) from None

    def __setattr__(self, name, value):
        raise AttributeError("a configuration view is read-only")

    def __reduce__(self):
        return ConfigView, (self._stage, self._values)

    def __repr__(self) -> str:
        return f"ConfigView({self._stage!r}, {self._values!r})"


STAGES: dict[str, "Stage"] = {}


class Stage:
    """A stage's declaration: its name, the fields it reads, the stages it runs after.

    Args:
        name: The stage's name (file and key prefix).
        reads: Configuration fields its functions read.
        after: Stages whose results it takes as input: their fields are part of
            its key too.
        per_round: Whether it runs once per round (its key includes the round).
    """

    def __init__(self, name: str, *, reads: Iterable[str], after: Iterable[str] = (), per_round: bool = False):
        self.name = name
        self.reads = tuple(sorted(set(reads)))
        self.after = tuple(after)
        self.per_round = per_round
        for upstream in self.after:
            if upstream not in STAGES:
                raise ValueError(f"stage {name!r} runs after unknown stage {upstream!r}")
        STAGES[name] = self

    @functools.cached_property
    def closure(self) -> tuple[str, ...]:
        """Every field this stage's result depends on: its own and its upstreams'."""
        fields = set(self.reads)
        for upstream in self.after:
            fields |= set(STAGES[upstream].closure)
        return tuple(sorted(fields))

    def view(self, config) -> ConfigView:
        """The part of ``config`` this stage may read (its whole closure: a stage may
        also need a field an upstream stage reads, e.g. the grid size)."""
        if isinstance(config, ConfigView):
            if config._stage != self.name:
                raise TypeError(f"stage {self.name!r} got the view of stage {config._stage!r}")
            return config
        return ConfigView(self.name, self.fields(config))

    def fields(self, config) -> dict[str, Any]:
        """The values of :attr:`closure` in ``config``."""
        return {f: getattr(config, f) for f in self.closure}

    def key(self, config, *, code_version: str, round_index: int | None = None) -> str:
        """The stage's key: name, round, closure fields and code version, hashed."""
        if self.per_round != (round_index is not None):
            raise ValueError(f"stage {self.name!r}: round_index is {'required' if self.per_round else 'not used'}")
        payload = {"stage": self.name, "round": round_index, "fields": self.fields(config), "code": code_version}
        return f"{self.name}-{digest(payload)}"

    def __call__(self, fn: Callable) -> Callable:
        """Decorate a function of this stage: its first argument (a configuration or
        this stage's view) reaches it as this stage's :class:`ConfigView`."""

        @functools.wraps(fn)
        def wrapper(config, *args, **kwargs):
            return fn(self.view(config), *args, **kwargs)

        wrapper.stage = self
        return wrapper

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, reads={self.reads}, after={self.after})"


# ---------------------------------------------------------------- declarations

DATA = Stage(
    "data",
    reads=(
        "data",
        "data_file",
        "data_fingerprint",  # derived: the data file's SHA-256 (data_file names the file, this is its content)
        "label_column",
        "class_names",
        "item_column",
        "test_fraction",
        "pool_size",
        "n_features",
        "n_classes",
        "noise",
        "seed",
        "n_initial",
        "n_calibration",
        "grid_size",
        "oracle",
        "calibration",  # marglik needs no held-out points: none are drawn
        "cold_start",
        "standardise",
    ),
)
INITIAL = Stage(
    "initial",
    reads=("seed", "hidden_channels", "hidden_layers", "learning_rate", "batch_size", "initial_epochs"),
    after=("data",),
)
CALIBRATION = Stage(
    "calibration",
    reads=(
        "curvature",
        "calibration",
        "log_prior_prec_min",
        "log_prior_prec_max",
        "calibration_grid_size",
        "mc_samples",
    ),
    after=("initial",),
)
ROUND = Stage(
    "round",
    reads=(
        "acquisition",
        "acquisition_batch",
        "predictive_samples",
        "learning_rate",
        "batch_size",
        "epochs_per_round",
        "oracle",
        "recalibrate_every",
        "exclude_labelled",
        "retrain_schedule",
        "train_with_prior",
        "batch_rule",
        "batch_beta",
        "seed",  # scratch: the re-initialisation
        "hidden_channels",
        "hidden_layers",
        "initial_epochs",  # scratch: the epochs of each round's training
    ),
    after=("calibration",),
    per_round=True,
)
PASSIVE = Stage(
    "passive",
    reads=(
        "rounds",
        "count_all_labels",
        "acquisition_batch",
        "hidden_channels",
        "hidden_layers",
        "learning_rate",
        "batch_size",
        "initial_epochs",
        "epochs_per_round",
    ),
    after=("data",),
)

# Values a stage reads that are computed from fields, not fields themselves.
DERIVED = {"data_fingerprint"}

# Fields no stage reads: where the outputs go and what the flow runs or writes. They
# change no number, so they are in no key (a test checks every field is one or the other).
FLOW_FIELDS = {
    "artifacts_dir": "where the experiment's folder is",
    "label_wait_seconds": "how long a run waits for a person's answer",
    "label_hold_seconds": "how long a deployment's run waits paused before it suspends",
    "passive": "whether the passive baseline runs",
    "plots": "whether the report draws its figures",
    "stop_when": "whether the rounds end early at the stop rule's signal (how many run, not their numbers)",
}


def experiment_digest(config) -> str:
    """Names the experiment's folder: every field the active loop's rounds depend on
    (not ``rounds``: round r does not depend on how many follow, so a longer run of
    the same configuration extends a shorter one in the same folder)."""
    return digest(ROUND.fields(config))


def passive_digest(config) -> str:
    """Names the passive baseline's file, shared by every experiment with its budget."""
    return digest(PASSIVE.fields(config))


# ---------------------------------------------------------------- records


class Initial(NamedTuple):
    state: ex.ModelState
    losses: np.ndarray
    accuracy: float  # on the test set (the tutorial's: its grid)
    metrics: dict | None = None  # accuracy, nll, ece on the test set


class Calibration(NamedTuple):
    prior_prec: float
    grid: np.ndarray  # prior precisions tried
    curve: np.ndarray | None  # the objective at each (None on laplax's path)
    objective: str  # what the curve is ("ece")


class Acquired(NamedTuple):
    indices: list[int]
    points: np.ndarray
    scores: np.ndarray  # float32 over the candidates, before the round's first pick
    preds: np.ndarray  # int8 predicted class of every candidate


class Retrained(NamedTuple):
    state: ex.ModelState
    losses: np.ndarray


class RoundRecord(NamedTuple):
    """Everything a round produced: the state the next round starts from."""

    round: int
    indices: list[int]
    points: np.ndarray
    labels: list[int]
    label_source: str  # who labelled: "truth"
    accuracy: float
    scores: np.ndarray
    preds: np.ndarray
    x_labelled: np.ndarray
    y_labelled: np.ndarray
    state: ex.ModelState
    losses: np.ndarray
    metrics: dict | None = None  # accuracy, nll, ece on the test set (None: no test labels)
    prior_prec: float | None = None  # in force after the round (the next acquisition's)
    # share of the pool (the stop set) whose predicted class the round changed: the
    # model before it (``preds``) against the retrained one (alcore/stopping.py)
    prediction_change: float | None = None

    def summary(self) -> "RoundSummary":
        return RoundSummary(
            self.round,
            [int(i) for i in self.indices],
            np.asarray(self.points).tolist(),
            [int(c) for c in self.labels],
            self.label_source,
            self.accuracy,
            len(self.y_labelled),
            self.metrics,
            self.prior_prec,
            self.prediction_change,
        )


class RoundSummary(NamedTuple):
    """What the report and the log need of a round (small: no arrays)."""

    round: int
    indices: list[int]
    points: list[list[float]]
    labels: list[int]
    label_source: str
    accuracy: float
    n_labelled: int
    metrics: dict | None = None
    prior_prec: float | None = None
    prediction_change: float | None = None


class Passive(NamedTuple):
    accuracy: float
    x: np.ndarray
    y: np.ndarray
    preds: np.ndarray  # on the test set
    state: ex.ModelState
    losses: np.ndarray
    metrics: dict | None = None


RECORDS = {"data": Data, "initial": Initial, "calibration": Calibration, "round": RoundRecord, "passive": Passive}


# ---------------------------------------------------------------- the stages' functions


def _train(cfg: ConfigView, x, y, *, epochs: int, n_classes: int, compile_only: bool = False):
    return ex.train_from_scratch(
        x,
        y,
        seed=cfg.seed,
        hidden_channels=cfg.hidden_channels,
        hidden_layers=hidden_layers_for(x.shape[1], cfg.hidden_layers),
        learning_rate=cfg.learning_rate,
        epochs=epochs,
        batch_size=cfg.batch_size,
        n_classes=n_classes,
        compile_only=compile_only,
    )


def _evaluate(params: dict, data: Data) -> tuple[float | None, dict | None]:
    """Test accuracy and metrics (None where the test set has no labels)."""
    if data.y_test is None:
        return None, None
    metrics = ex.metrics(params, data.x_test, data.y_test)
    return metrics["accuracy"], metrics


@DATA
def generate_data(cfg: ConfigView, table: datasets.Table | None) -> Data:
    """The problem's data: initial and calibration points with their true labels
    (where known), the pool of candidates, the test set, the sampling key; from the
    problem's ``table`` (``sources.table_for``, which names a table's classes; None for
    the tutorial, whose classes ``class_names`` names here); the initial points chosen
    by the cold start."""
    data = datasets.build(
        table,
        problem_name=cfg.data,
        seed=cfg.seed,
        n_initial=cfg.n_initial,
        n_calibration=held_out_labels(cfg),
        grid_size=cfg.grid_size,
        test_fraction=cfg.test_fraction,
    )
    if cfg.data == "tutorial" and cfg.class_names:
        data = data._replace(classes=datasets.parse_class_names(cfg.class_names, data.n_classes))
    if cfg.standardise:
        data = coldstart.standardised(data)
    return coldstart.apply(data, cold_start=cfg.cold_start, seed=cfg.seed)


@DATA
def label_data(cfg: ConfigView, drawn: Data, initial: list[int] | None, calibration: list[int] | None) -> Data:
    """The data with the oracle's labels: the ground truth's as drawn (``truth``), or
    a person's answers (``human``; the truth, where known, is kept beside them)."""
    if cfg.oracle == "truth":
        return drawn
    known = drawn.pool_labels is not None
    return drawn._replace(
        y_initial=np.asarray(initial, np.int32),
        y_calibration=np.asarray(calibration, np.int32),
        initial_truth=drawn.y_initial if known else None,
        calibration_truth=drawn.y_calibration if known else None,
    )


@INITIAL
def initial_training(cfg: ConfigView, data: Data) -> Initial:
    """Train the MLP from its seeded initialisation on the initial points."""
    state, losses = _train(cfg, data.x_initial, data.y_initial, epochs=cfg.initial_epochs, n_classes=data.n_classes)
    accuracy, metrics = _evaluate(state.params, data)
    return Initial(state, losses, accuracy, metrics)


@CALIBRATION
def calibrate(cfg: ConfigView, data: Data, initial: Initial) -> Calibration:
    """The prior precision: by ECE on the held-out calibration points (the tutorial's)
    or by the marginal likelihood of the initial labelled points (no extra labels)."""
    tau, grid, curve = _prior_precision(cfg, initial.state.params, data, data.x_initial, data.y_initial, first=True)
    return Calibration(tau, grid, curve, cfg.calibration)


def _prior_precision(cfg: ConfigView, params, data: Data, x_labelled, y_labelled, *, first: bool):
    """(prior precision, grid, objective curve) by the configured objective.

    ECE: the tutorial builds the first posterior from the calibration set itself and
    scores it there; later recalibrations use the labelled set's posterior (the one
    the rounds acquire with), scored on the calibration set. Marginal likelihood:
    the labelled set both defines the posterior and scores its evidence.
    """
    bounds = {"log_min": cfg.log_prior_prec_min, "log_max": cfg.log_prior_prec_max, "size": cfg.calibration_grid_size}
    if cfg.calibration == "marglik":  # NumPy: no compiled shapes to keep fixed
        return marglik.calibrate(params, np.asarray(x_labelled), np.asarray(y_labelled), **bounds)
    if first:
        return ex.calibrate_prior_precision(
            params,
            data.x_calibration,
            data.y_calibration,
            curvature=cfg.curvature,
            log_min=cfg.log_prior_prec_min,
            log_max=cfg.log_prior_prec_max,
            size=cfg.calibration_grid_size,
            mc_samples=cfg.mc_samples,
        )
    x_pad, _, mask = ex.padded(x_labelled, n_classes=data.n_classes)
    return calibration.calibrate(
        params, x_pad, mask, data.x_calibration, data.y_calibration, num_samples=cfg.mc_samples, **bounds
    )


@ROUND
def recalibrate(cfg: ConfigView, data: Data, state: ex.ModelState, x_labelled, y_labelled) -> Calibration:
    """The prior precision again, for the grown labelled set and the retrained model."""
    tau, grid, curve = _prior_precision(cfg, state.params, data, x_labelled, y_labelled, first=False)
    return Calibration(tau, grid, curve, cfg.calibration)


def recalibrates_after(config, round_index: int) -> bool:
    """Whether the prior precision is chosen again after round ``round_index``."""
    every = ROUND.view(config).recalibrate_every
    return bool(every) and round_index % every == 0


@ROUND
def acquire(
    cfg: ConfigView,
    round_index: int,
    data: Data,
    state: ex.ModelState,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    prior_prec: float,
    exclude: list[int] = (),
) -> Acquired:
    """Score the candidates and choose the round's point(s) to label, never one of
    ``exclude`` (points a person could not label) nor, with ``exclude_labelled``, a
    cold start's initial point."""
    stochastic_batch = cfg.acquisition_batch > 1 and cfg.batch_rule != "greedy"
    uses_key = strategies.get(cfg.acquisition).uses_key or stochastic_batch
    if cfg.exclude_labelled and data.initial_indices is not None:
        exclude = [*exclude, *(int(i) for i in data.initial_indices)]
    indices, scores, preds = ex.acquire(
        state.params,
        x_labelled,
        y_labelled,
        data.pool,
        strategy=cfg.acquisition,
        batch=cfg.acquisition_batch,
        prior_prec=prior_prec,
        curvature=cfg.curvature,
        predictive_samples=cfg.predictive_samples,
        key=ex.round_key(data.sampling_key, round_index) if uses_key else None,
        exclude=list(exclude),
        batch_rule=cfg.batch_rule,
        batch_beta=cfg.batch_beta,
    )
    return Acquired(
        indices,
        np.asarray(data.pool[indices]),
        scores.astype(np.float32),
        preds.astype(np.int8),
    )


@ROUND
def labels_of(cfg: ConfigView, data: Data, acquired: Acquired, answers: dict[int, int] | None = None) -> list[int]:
    """The oracle's labels of the acquired candidates, in their order (``answers``:
    candidate index -> class; None: the pool's own labels, its ground truth)."""
    if answers is None:
        return [int(data.pool_labels[i]) for i in acquired.indices]
    return [int(answers[i]) for i in acquired.indices]


@ROUND
def retrain(
    cfg: ConfigView,
    state: ex.ModelState,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    prior_prec: float | None = None,
    compile_only: bool = False,
) -> Retrained:
    """Train on the grown labelled set by the configured schedule (the tutorial's:
    continue, optimizer state carried over); with ``train_with_prior``, on the loss
    with the Gaussian prior of precision ``prior_prec`` (the one in force)."""
    if cfg.train_with_prior and prior_prec is None:
        raise ValueError("train_with_prior: retrain needs the prior precision in force")
    out = ex.retrain(
        state,
        x_labelled,
        y_labelled,
        learning_rate=cfg.learning_rate,
        epochs=cfg.initial_epochs if cfg.retrain_schedule == "scratch" else cfg.epochs_per_round,
        batch_size=cfg.batch_size,
        restart=cfg.retrain_schedule,
        prior_prec=prior_prec if cfg.train_with_prior else None,
        seed=cfg.seed,
        hidden_channels=cfg.hidden_channels,
        compile_only=compile_only,
    )
    return out if compile_only else Retrained(*out)


@ROUND
def evaluate(
    cfg: ConfigView,
    round_index: int,
    data: Data,
    acquired: Acquired,
    labels: list[int],
    retrained: Retrained,
    x_labelled: np.ndarray,
    y_labelled: np.ndarray,
    prior_prec: float | None = None,
) -> RoundRecord:
    """Test accuracy (the tutorial's: on its grid) of the retrained model; the round's
    whole record (``prior_prec``: the prior precision in force after it)."""
    accuracy, metrics = _evaluate(retrained.state.params, data)
    change = stopping.changed_share(acquired.preds, ex.predict(retrained.state.params, data.pool))
    return RoundRecord(
        round_index,
        [int(i) for i in acquired.indices],
        acquired.points,
        [int(c) for c in labels],
        cfg.oracle,
        accuracy,
        acquired.scores,
        acquired.preds,
        x_labelled,
        y_labelled,
        retrained.state,
        retrained.losses,
        metrics,
        prior_prec,
        change,
    )


def class_probabilities(params: dict, x: np.ndarray) -> np.ndarray:
    """The model's predicted class probabilities at ``x`` (what a form shows as its guess)."""
    return ex.probabilities(params, x)


def passive_points(config, data: Data) -> tuple[np.ndarray, np.ndarray | None]:
    """The passive baseline's points (x, their true labels or None): the tutorial's
    uniform draws on the square from its passive key (as the tutorial does: not grid
    points), or, for every other problem, a seeded uniform sample of the pool without
    replacement."""
    cfg = PASSIVE.view(config)
    n = n_passive(cfg)
    if cfg.data == "tutorial":
        x = problem.uniform_points(problem.split_keys(cfg.seed).passive, n)
        truth = problem.true_labels(x)
        if data.scaler is not None:  # the tutorial standardised
            x = ((x - data.scaler[0]) / data.scaler[1]).astype(np.float32)
        return x, truth
    idx = passive_indices(config, data)
    return data.pool[idx], None if data.pool_labels is None else data.pool_labels[idx]


def passive_indices(config, data: Data) -> np.ndarray | None:
    """The pool indices of the passive baseline's points (None for the tutorial's,
    which are drawn on the square, not taken from the pool)."""
    cfg = PASSIVE.view(config)
    if cfg.data == "tutorial":
        return None
    n = n_passive(cfg)
    if n > len(data.pool):
        raise datasets.DataError(f"the passive baseline needs {n} points, the pool has {len(data.pool)}")
    return np.sort(datasets._rng(cfg.seed, 3).choice(len(data.pool), size=n, replace=False))


@PASSIVE
def passive_baseline(cfg: ConfigView, data: Data, labels: list[int] | None = None) -> Passive:
    """Uniform random points, the active loop's label and epoch budget; labelled by
    the ground truth, or by a person (``labels``, with a human oracle)."""
    x, truth = passive_points(cfg, data)
    y = truth if cfg.oracle == "truth" else np.asarray(labels, np.int32)
    state, losses = _train(cfg, x, y, epochs=passive_epochs(cfg), n_classes=data.n_classes)
    accuracy, metrics = _evaluate(state.params, data)
    preds = ex.predict(state.params, data.x_test).astype(np.int8)
    return Passive(accuracy, x, y, preds, state, losses, metrics)


# ---------------------------------------------------------------- ahead-of-time compilation


def precompile(
    config, data: Data, *, first_round: int = 1, passive: bool = True, initial: bool = True, warm: bool = False
) -> int:
    """Compile the JAX programs the stages still to run will use; returns how many.

    Each program is compiled through the stage's own function (``compile_only``), on
    arrays of exactly the shapes it will see (``data``: the data stage's result, for
    their shapes), so nothing here repeats the stages' shape logic. ``first_round``: the
    first round to compute (rounds before it are restored, so their programs are not
    needed); ``passive``/``initial``: whether those stages will be computed. The
    command line does this while Prefect's server boots; it changes no number.

    ``warm``: run each program once on zeros instead, at every padding the rounds
    will reach (compiling ahead covers the first round's training only), so that no
    round of this process waits for a first call: what a run with a person as the
    oracle does in the background (``flows.active_learning.warm_up``).
    """
    from alcore.model import init_params

    d, c = data.n_features, data.n_classes
    count = 0
    zeros = functools.partial(_zero_set, n_features=d)
    if initial:
        view = INITIAL.view(config)
        _train(view, *zeros(len(data.x_initial)), epochs=view.initial_epochs, n_classes=c, compile_only=not warm)
        count += 1
    if passive:
        view = PASSIVE.view(config)
        _train(view, *zeros(n_passive(view)), epochs=passive_epochs(view), n_classes=c, compile_only=not warm)
        count += 1
    depth = hidden_layers_for(d, config.hidden_layers)
    params = init_params(seed=config.seed, hidden=config.hidden_channels, in_dim=d, n_classes=c, hidden_layers=depth)
    if first_round <= config.rounds:
        cfg = ROUND.view(config)
        tx_state = ex.training.make_optimizer(learning_rate=cfg.learning_rate).init(params)
        n = len(data.x_initial) + (first_round - 1) * cfg.acquisition_batch
        last = len(data.x_initial) + config.rounds * cfg.acquisition_batch  # the labelled set after the last round
        count += _precompile_rounds(cfg, data, params, tx_state, n, last, warm=warm)
    if initial or passive or first_round <= config.rounds:
        ex.predict(params, data.pool, compile_only=not warm)
        count += 1
        if warm and data.y_test is not None:
            _evaluate(params, data)
            count += 1
        elif data.x_test is not data.pool and len(data.x_test) != len(data.pool):
            ex.predict(params, data.x_test, compile_only=True)
            count += 1
    return count


def _precompile_rounds(cfg: ConfigView, data: Data, params, tx_state, n: int, last: int, *, warm: bool) -> int:
    """The rounds' programs from a labelled set of ``n`` points up to ``last``: the
    retraining's (compiling ahead: the first round's only; warming: every padding,
    first, as an answer needs it first) and the acquisition's at every padding of the
    posterior."""
    c = data.n_classes
    zeros = functools.partial(_zero_set, n_features=data.n_features)
    count = 0
    step = cfg.acquisition_batch
    trained = range(n + step, last + 1, step) if warm else [n + step]  # the sets the retrainings train on
    for m in {ex.training_capacity(m, c, cfg.batch_size): m for m in trained}.values():
        retrain(cfg, ex.ModelState(params, tx_state), *zeros(m), 1.0, compile_only=not warm)
        count += 1
    if cfg.curvature != "full":
        return count
    preds = np.zeros(len(data.pool), np.int32)
    score = strategies.get(cfg.acquisition).score
    for m in {ex.posterior_capacity(m, c): m for m in range(n, last)}.values():  # the sets acquisitions score with
        if warm and score != "uniform":
            kw = {"prior_prec": 1.0, "curvature": "full", "predictive_samples": cfg.predictive_samples}
            ex.scores_for(params, *zeros(m), data.pool, preds, strategy=cfg.acquisition, **kw)
            count += 2
        elif score == "std":
            ex.uncertainty_map(params, *zeros(m), data.pool, preds, prior_prec=1.0, curvature="full", compile_only=True)
            count += 2
    return count


def _zero_set(n: int, *, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """A labelled set of ``n`` zero points (x, y): the shapes a program is compiled for."""
    return np.zeros((n, n_features), np.float32), np.zeros(n, np.int32)
