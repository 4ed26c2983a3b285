"""The acquisition strategies: one registry, the only place a strategy is named.

A strategy is a name, a description, what its score needs (``score``: the kind of
scorer ``alcore.experiment`` computes), and how a point is chosen from the scores
(``rule``: the argmax, or a draw with the scores as logits). The configuration's
``acquisition`` field, the command line's choices, the run form's enum and the
sweep's ``--strategies`` all come from :data:`REGISTRY`, so a new strategy is one
:func:`register` call here (and, if it needs a new kind of score, one scorer in
``alcore.experiment.SCORERS``).
"""

from typing import Literal, NamedTuple

Score = Literal["uniform", "std", "probs", "epig"]
Rule = Literal["argmax", "sample"]


class Strategy(NamedTuple):
    """One acquisition strategy.

    Attributes:
        name: What the configuration, CLI, run form and sweep call it.
        description: One sentence for the CLI help and the run form.
        score: The scorer it needs: ``uniform`` (no model), ``std`` (the
            linearised predictive std of the predicted class), ``probs``
            (Monte-Carlo class probabilities of the linearised predictive, then
            ``probability_score``), ``epig`` (the joint predictive of candidate
            and target inputs).
        rule: ``argmax`` of the scores (first of ties) or ``sample``: a draw with
            the scores as logits (uses the round's key).
        probability_score: For ``score="probs"``: the name of the function in
            ``alcore.acquisition`` that reduces samples (S, m, C) to scores (m,).
        min_samples: The fewest Monte-Carlo samples its score is reliable with
            (``predictive_samples`` is raised to it): EPIG's maps at 64 samples
            barely agree between random keys (rank correlation 0.25-0.44, against
            0.92-0.94 at 256; measured in alcore/epig.py).
        quantity: What its score is, with its unit in brackets (the maps' colourbar).
    """

    name: str
    description: str
    score: Score
    rule: Rule = "argmax"
    probability_score: str | None = None
    min_samples: int = 1
    quantity: str = "score [-]"

    @property
    def needs_covariance(self) -> bool:
        """Whether the score needs the per-point C x C (or joint) predictive
        covariance, which only the full-GGN dual form provides."""
        return self.score in ("probs", "epig")

    @property
    def uses_key(self) -> bool:
        """Whether the pick draws random numbers (the round's sampling key)."""
        return self.rule == "sample"


REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the registry (names are unique)."""
    if strategy.name in REGISTRY:
        raise ValueError(f"strategy {strategy.name!r} is already registered")
    if (strategy.score == "probs") != (strategy.probability_score is not None):
        raise ValueError(f"strategy {strategy.name!r}: probability_score goes with score='probs' only")
    REGISTRY[strategy.name] = strategy
    return strategy


_STD = "predictive std of the predicted class's logit [logit]"
for _strategy in (
    Strategy("max_std", "largest predictive std of the predicted class (the tutorial's)", "std", quantity=_STD),
    Strategy(
        "sampled",
        "drawn with the predicted class's stds as logits (the tutorial's alternative)",
        "std",
        "sample",
        quantity=_STD,
    ),
    Strategy(
        "entropy",
        "largest entropy of the predictive",
        "probs",
        probability_score="entropy_score",
        quantity="predictive entropy [nats]",
    ),
    Strategy(
        "bald",
        "largest mutual information of label and parameters",
        "probs",
        probability_score="bald_score",
        quantity="mutual information of label and parameters [nats]",
    ),
    Strategy(
        "margin",
        "smallest margin of the two most probable classes",
        "probs",
        probability_score="margin_score",
        quantity="minus the margin of the two most probable classes [probability]",
    ),
    Strategy(
        "random",
        "uniform over the candidates (random-in-the-loop)",
        "uniform",
        "sample",
        quantity="none: every candidate scores 0 [-]",
    ),
):
    register(_strategy)

# EPIG is retired from the registry (no choice of a run, a sweep or the run form):
# measured with the better model of the peers comparison (scratch retraining with the
# prior, TypiClust start; tutorial seeds 0-1, 70 labels) it reached 88.2 % where margin
# reached 98.9 %, at twice margin's cost a round. Its score is largest where a label
# would most change the predictions on the targets, which under the linearised Laplace
# posterior is where the GGN's curvature vanishes: points the network already predicts
# confidently. The score (alcore/epig.py) stays, tested against a brute-force
# computation; ``register(EPIG)`` brings the strategy back for an experiment.
EPIG = Strategy(
    "epig",
    "largest expected information gain about predictions on the pool (EPIG)",
    "epig",
    min_samples=256,
    quantity="expected predictive information gain [nats]",
)


def names() -> tuple[str, ...]:
    """The registered strategies' names, in registration order."""
    return tuple(REGISTRY)


def get(name: str) -> Strategy:
    """The registered strategy ``name``; a ValueError naming the choices otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown acquisition strategy {name!r}; expected one of {', '.join(names())}") from None


def describe() -> str:
    """Every strategy with its description, for help texts and the run form."""
    return "; ".join(f"{s.name}: {s.description}" for s in REGISTRY.values())
