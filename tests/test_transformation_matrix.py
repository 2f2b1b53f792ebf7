"""Every way to run the ELM under every JAX transformation researchers compose it with.

Paths: `apply` with each backend, a Python loop of `step`, `nn.RNN(ELMCell)`,
`ELMSequence` and `NNXELM` -- each written as ``f(params, x) -> y`` with the plain
parameter dict.  Transformations: `jit`, `grad`, `vmap` over inputs and over stacked
parameters, `jvp` and `jacfwd` (forward mode), a Hessian-vector product (forward over
reverse), `jax.checkpoint` and `shard_map`.  The reference for every value is the same
transformation of the ``"scan"`` backend (plain JAX autodiff of the sequential loop,
itself checked against an independent float64 loop and finite differences elsewhere),
in float64.  docs/backends.md lists the matrix.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import elm_jax
from elm_jax.core import varying_like
from helpers import make_config, random_params, sharded_outputs_and_grads, sin_loss

CONFIG = make_config("random", "branch_elm", 1, "silu", learn_memory_tau=True)


def _apply(backend):
    return lambda p, x: elm_jax.apply(p, x, CONFIG, backend=backend)


def _step_loop(p, x):
    state = elm_jax.initial_state(CONFIG, x.shape[:1], x.dtype)
    ys = []
    for t in range(x.shape[1]):
        state, y = elm_jax.step(p, state, x[:, t], CONFIG)
        ys.append(y)
    return jnp.stack(ys, axis=1)


def _rnn(p, x):
    cell = elm_jax.ELMCell(CONFIG, param_dtype=x.dtype)  # the carry takes this dtype
    # nn.RNN's zero carry does not vary over shard_map's mesh axes while the step output
    # does: pass a carry that varies like x (a no-op outside shard_map)
    carry = varying_like(cell.initialize_carry(None, x[:, 0].shape), x)
    return nn.RNN(cell).apply({"params": {"cell": {"elm": p}}}, x, initial_carry=carry)


def _sequence(p, x):
    return elm_jax.ELMSequence(CONFIG).apply({"params": {"elm": p}}, x)


def _nnx(p, x):
    return elm_jax.NNXELM(CONFIG, params=p)(x)


PATHS = {"scan": _apply("scan"), "hoisted": _apply("hoisted"),
         "associative": _apply("associative"), "deer": _apply("deer"),
         "step": _step_loop, "nn.RNN(ELMCell)": _rnn, "ELMSequence": _sequence,
         "NNXELM": _nnx}


def _hvp(f, p, x, v):
    return jax.jvp(lambda q: jax.grad(sin_loss(f))(q, x), (p,), (v,))[1]


def _shard_map(f, p, x):
    return sharded_outputs_and_grads(f, p, x, Mesh(np.array(jax.devices()[:1]), ("data",)))


TRANSFORMS = {
    "jit": lambda f, p, x, v: jax.jit(f)(p, x),
    "grad": lambda f, p, x, v: jax.grad(sin_loss(f), argnums=(0, 1))(p, x),
    "vmap_inputs": lambda f, p, x, v: jax.vmap(f, in_axes=(None, 0))(p, jnp.stack([x, 2 * x])),
    "vmap_params": lambda f, p, x, v: jax.vmap(f, in_axes=(0, None))(
        jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), p, v), x),
    "jvp": lambda f, p, x, v: jax.jvp(f, (p, x), (v, x))[1],
    "jacfwd": lambda f, p, x, v: jax.jacfwd(f, argnums=1)(p, x),
    "hvp": _hvp,
    "checkpoint": lambda f, p, x, v: jax.grad(jax.checkpoint(sin_loss(f)))(p, x),
    "shard_map": lambda f, p, x, v: _shard_map(f, p, x),
}


@pytest.fixture(scope="module")
def inputs():
    with jax.enable_x64(True):
        params = random_params(CONFIG, seed=31)
        direction = random_params(CONFIG, seed=32)
        x = jnp.asarray(np.random.default_rng(33).normal(size=(2, 6, CONFIG.num_input)))
    return params, x, direction


#: (path, transform) pairs that are refused with a clear error instead of computed
UNSUPPORTED = {("deer", "hvp"): "backend='deer' supports first derivatives only"}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("path", [p for p in PATHS if p != "scan"])
def test_transformation_matches_scan(x64, inputs, path, transform):
    params, x, direction = inputs
    if (path, transform) in UNSUPPORTED:
        with pytest.raises(NotImplementedError, match=UNSUPPORTED[path, transform]):
            TRANSFORMS[transform](PATHS[path], params, x, direction)
        return
    got = TRANSFORMS[transform](PATHS[path], params, x, direction)
    want = TRANSFORMS[transform](PATHS["scan"], params, x, direction)
    got_leaves, want_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves)
    scale = max(float(jnp.max(jnp.abs(w))) for w in want_leaves)
    assert scale > 1e-3, "a reference that is all zeros would check nothing"
    for g, w in zip(got_leaves, want_leaves):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=f"{path} under {transform}")
