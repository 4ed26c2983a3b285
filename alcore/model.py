"""The tutorial's MLP (2-32-32-32-3, tanh) and its pure functional form."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

Params = dict  # nested {"linear1": {"kernel": ..., "bias": ...}, ...}
N_LAYERS = 4


@functools.cache
def _mlp_class():
    """The nnx module, defined on first use: flax is imported only to initialise a
    network (a resumed run, which restores its networks, never imports it)."""
    from flax import nnx

    class MLP(nnx.Module):
        """Four linear layers with tanh between them, as in the tutorial's helper."""

        def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, *, rngs: nnx.Rngs):
            self.linear1 = nnx.Linear(in_channels, hidden_channels, rngs=rngs)
            self.linear2 = nnx.Linear(hidden_channels, hidden_channels, rngs=rngs)
            self.linear3 = nnx.Linear(hidden_channels, hidden_channels, rngs=rngs)
            self.linear4 = nnx.Linear(hidden_channels, out_channels, rngs=rngs)

        def __call__(self, x):
            x = nnx.tanh(self.linear1(x))
            x = nnx.tanh(self.linear2(x))
            x = nnx.tanh(self.linear3(x))
            return self.linear4(x)

    return MLP


def __getattr__(name: str):
    if name == "MLP":
        return _mlp_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def init_params(*, seed: int, hidden: int = 32, in_dim: int = 2, n_classes: int = 3) -> Params:
    """Initial parameters exactly as ``Model(..., rngs=nnx.Rngs(seed))`` draws them.

    Returns a plain nested dict of arrays (layer -> {"kernel", "bias"}), so the rest
    of the code is pure JAX and results pickle without flax graph objects.
    """
    from flax import nnx

    model = _mlp_class()(in_dim, hidden, n_classes, rngs=nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    return jax.tree.map(lambda v: v, nnx.to_pure_dict(state))


def forward(params: Params, x: jax.Array, xp=jnp) -> jax.Array:
    """Logits for inputs ``x`` of shape (..., 2): same math as ``MLP.__call__``.

    ``xp=numpy`` evaluates it in NumPy (no XLA compilation), for one-off work.
    """
    h = x
    for i in range(1, N_LAYERS + 1):
        layer = params[f"linear{i}"]
        h = h @ layer["kernel"] + layer["bias"]
        if i < N_LAYERS:
            h = xp.tanh(h)
    return h


def laplax_model_fn() -> Callable:
    """``model_fn(input, params)`` in laplax's calling convention."""

    def model_fn(input, params):  # noqa: A002 - laplax's keyword name
        return forward(params, input)

    return model_fn


def n_params(params: Params) -> int:
    """Number of scalar parameters."""
    return sum(int(p.size) for p in jax.tree.leaves(params))
