"""The tutorial's procedure as it is written: the baseline of the benchmark.

nnx module and optimizer, a Python loop over batches with an ``nnx.jit`` step, a
fresh loader (numpy ``default_rng(0)``) per labelled-set size, and laplax's dense
full-GGN posterior with a pushforward vmapped over the grid. Kept out of ``alcore``
on purpose: it is the thing being measured against, not part of the product.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from laplax.curv import create_ggn_mv, create_posterior_fn
from laplax.eval.pushforward import lin_pred_mean, lin_pred_std, lin_setup, set_lin_pushforward
from optax.losses import softmax_cross_entropy_with_integer_labels

from alcore import laplax_path
from alcore.model import MLP


class DataLoader:
    """The tutorial helper's loader."""

    def __init__(self, X, y, batch_size):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.indices = np.arange(X.shape[0])
        self.rng = np.random.default_rng(seed=0)

    def __iter__(self):
        self.rng.shuffle(self.indices)
        for i in range(0, len(self.indices), self.batch_size):
            idx = self.indices[i : i + self.batch_size]
            yield self.X[idx], self.y[idx]

    def add(self, x, y):
        return DataLoader(jnp.concatenate((self.X, jnp.atleast_2d(x))), jnp.concatenate((self.y, y)), self.batch_size)


@nnx.jit
def train_step(model, optimizer, batch, labels):
    def loss_fn(model):
        return softmax_cross_entropy_with_integer_labels(model(batch), labels).sum()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def train_model(model, optimizer, loader, n_epochs):
    for _ in range(n_epochs):
        for xb, yb in loader:
            train_step(model, optimizer, xb, yb)
    return model


def new_model(seed, lr):
    model = MLP(2, 32, 3, rngs=nnx.Rngs(seed))
    return model, nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)


def split(model):
    graph_def, params = nnx.split(model)

    def model_fn(input, params):  # noqa: A002 - laplax's keyword
        return nnx.call((graph_def, params))(input)[0]

    return model_fn, params


def uncertainty(loader, model, prior_prec, grid):
    """All-class predictive std over the grid, the tutorial's way."""
    model_fn, params = split(model)
    dataset = {"input": loader.X, "target": loader.y}
    ggn_mv = create_ggn_mv(model_fn, params, dataset, loss_fn="cross_entropy")
    posterior_fn = create_posterior_fn(curv_type="full", mv=ggn_mv, layout=params)
    prob = partial(
        set_lin_pushforward,
        model_fn=model_fn,
        mean_params=params,
        posterior_fn=posterior_fn,
        pushforward_fns=[lin_setup, lin_pred_mean, lin_pred_std],
    )(prior_arguments={"prior_prec": prior_prec})
    return jax.vmap(prob)(grid)["pred_std"]


def calibrate(loader, model):
    """laplax's ECE grid search on the calibration set, as the tutorial calls it."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return laplax_path.calibrate(
        params, loader.X, loader.y, loader.X, loader.y, log_prior_prec_min=-2.0, log_prior_prec_max=3.0, grid_size=100
    )


def grid_predictions(model, grid):
    return jnp.argmax(model(grid), axis=-1)
