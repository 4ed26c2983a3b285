"""A trained round's model as a self-contained bundle, and predictions from it.

A :class:`Bundle` holds what predicting needs, and nothing of Prefect or of the
experiment's folder: the MAP network's parameters and architecture, the labelled set
its Laplace posterior is fitted on (the exact dual form needs the labelled inputs,
not their labels: ``alcore/laplace.py``), the prior precision, the scaler, the class
and feature names, and the versions that made it. :func:`to_arrays` and
:func:`from_arrays` turn it into one JSON document and a flat dict of arrays, the
bundle's format on disk (``store/bundle.py`` writes and reads them; docs/outputs.md).

:func:`predict` standardises raw inputs with the saved scaler and returns the MAP
class, its class probabilities and the posterior's predictive uncertainty: the
linearised predictive std of the predicted class's logit (the tutorial's score),
and the entropy and BALD of the Monte-Carlo predictive, computed by the same
functions the acquisition uses (``alcore/laplace.py``, ``alcore/acquisition.py``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alcore import acquisition, laplace
from alcore import experiment as ex
from alcore.model import forward, n_layers

FORMAT = "bal-model"
FORMAT_VERSION = 1
PREDICTIVE_SAMPLES = 64  # Monte-Carlo samples of the predictive for entropy and BALD
CHUNK = 2048  # inputs per predictive pass


class Bundle(NamedTuple):
    params: dict  # {"linear1": {"kernel": (in, out), "bias": (out,)}, ...}
    x_labelled: np.ndarray  # (n, d) float32, standardised: the posterior's inputs
    prior_prec: float
    classes: tuple[str, ...]
    features: tuple[str, ...]  # the input columns' names, in order
    scaler: tuple[np.ndarray, np.ndarray] | None  # (mean, std), or None: inputs used as they are
    meta: dict  # round, label column, versions, the experiment's configuration


def architecture(params: dict) -> dict:
    """The network's shape, as the bundle records it."""
    kernels = [np.shape(params[f"linear{i}"]["kernel"]) for i in range(1, n_layers(params) + 1)]
    return {
        "kind": "mlp",
        "layers": n_layers(params),
        "activation": "tanh",
        "in_dim": int(kernels[0][0]),
        "hidden": int(kernels[0][1]),
        "n_classes": int(kernels[-1][1]),
    }


def to_arrays(bundle: Bundle) -> tuple[dict, dict[str, np.ndarray]]:
    """(the JSON document, the arrays): the bundle's format (docs/outputs.md)."""
    arrays = {
        f"{layer}.{name}": np.asarray(value, np.float32)
        for layer, weights in bundle.params.items()
        for name, value in weights.items()
    }
    arrays["x_labelled"] = np.asarray(bundle.x_labelled, np.float32)
    if bundle.scaler is not None:
        arrays["scaler_mean"], arrays["scaler_std"] = (np.asarray(a, np.float32) for a in bundle.scaler)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture(bundle.params),
        "classes": list(bundle.classes),
        "features": list(bundle.features),
        "prior_precision": float(bundle.prior_prec),
        "standardised": bundle.scaler is not None,
        "posterior": "linearised Laplace, full GGN (exact dual form over x_labelled), isotropic prior precision",
        **bundle.meta,
    }
    return document, arrays


def from_arrays(document: dict, arrays: dict[str, np.ndarray]) -> Bundle:
    """The bundle of :func:`to_arrays`'s output; refuses another format."""
    if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"not a model bundle of format {FORMAT} {FORMAT_VERSION} "
            f"(found {document.get('format')!r} {document.get('format_version')!r})"
        )
    params: dict = {}
    for key, value in arrays.items():
        layer, _, name = key.partition(".")
        if layer.startswith("linear") and name:
            params.setdefault(layer, {})[name] = np.asarray(value, np.float32)
    scaler = (arrays["scaler_mean"], arrays["scaler_std"]) if document["standardised"] else None
    meta_keys = set(document) - {"architecture", "classes", "features", "prior_precision", "standardised", "posterior"}
    return Bundle(
        params,
        np.asarray(arrays["x_labelled"], np.float32),
        float(document["prior_precision"]),
        tuple(document["classes"]),
        tuple(document["features"]),
        scaler,
        {k: document[k] for k in meta_keys},
    )


class Predictions(NamedTuple):
    classes: np.ndarray  # (m,) int: the MAP network's class (what the reported accuracy counts)
    probabilities: np.ndarray  # (m, C) float64: the MAP network's class probabilities
    std: np.ndarray  # (m,): linearised predictive std of the predicted class's logit
    entropy: np.ndarray  # (m,): entropy of the Monte-Carlo predictive (nats)
    bald: np.ndarray  # (m,): mutual information between the label and the parameters (nats)


def standardise(bundle: Bundle, x_raw: np.ndarray) -> np.ndarray:
    """Raw inputs in the model's units (the saved scaler; as they are without one)."""
    x = np.asarray(x_raw, np.float32)
    if bundle.scaler is None:
        return x
    mean, std = bundle.scaler
    return ((x - mean) / std).astype(np.float32)


def predict(bundle: Bundle, x_raw: np.ndarray, *, samples: int = PREDICTIVE_SAMPLES) -> Predictions:
    """Predictions and predictive uncertainty at raw inputs ``x_raw`` (m, d)."""
    x = standardise(bundle, x_raw)
    params = bundle.params
    post = ex.posterior_of(params, bundle.x_labelled)
    tau = jnp.float32(bundle.prior_prec)
    classes = ex.predict(params, x)
    probs = ex.probabilities(params, x)
    std, entropy, bald = [], [], []
    for start in range(0, len(x), CHUNK):
        chunk = jnp.asarray(x[start : start + CHUNK])
        cov = laplace.predictive_cov_blocks(post, params, chunk, tau)
        picked = classes[start : start + CHUNK]
        std.append(np.sqrt(np.maximum(np.asarray(cov)[np.arange(len(picked)), picked, picked], 0.0)))
        mc = acquisition.mc_probabilities(
            forward(params, chunk), cov.astype(jnp.float32), jax.random.key(ex.MC_KEY_SEED), jnp.zeros(samples)
        )
        entropy.append(np.asarray(acquisition.entropy_score(mc)))
        bald.append(np.asarray(acquisition.bald_score(mc)))
    return Predictions(classes, probs, *(np.concatenate(v) if v else np.zeros(0) for v in (std, entropy, bald)))
