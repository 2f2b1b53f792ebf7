"""Helpers shared by the test modules (import them from here, never from a test module).

`reference_numpy` beside it is the independent float64 oracle written from the paper's
equations; this module holds the small configurations, parameter draws and the
``../shared`` locator the tests share.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from reference_numpy import numpy_forward, numpy_routing

REPO = Path(__file__).resolve().parents[1]

#: XLA flags of every test process (set by conftest.py; subprocesses add theirs to it).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
SHARED = Path(os.environ.get("ELM_JAX_SHARED", REPO.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path under ../shared; skip when absent on a user's machine, fail under CI=true."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"{path} is absent (the reference checkpoints and data live in ../shared)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


ROUTINGS = {
    # name: (num_input, num_branch, num_synapse_per_branch)
    "none": (6, 3, 2),
    "random": (5, 4, 3),
    "neuronio": (12, 4, 5),
}


def make_config(routing, variant, layers, activation, **kw):
    num_input, num_branch, per_branch = ROUTINGS[routing]
    base = dict(num_input=num_input, num_output=3, num_memory=4, mlp_num_layers=layers,
                mlp_hidden_size=7, mlp_activation=activation, num_branch=num_branch,
                num_synapse_per_branch=per_branch, routing=routing, routing_seed=3,
                variant=variant, lambda_value=3.0, tau_s=4.0, memory_tau_min=1.5,
                memory_tau_max=40.0, delta_t=0.7)
    base.update(kw)
    return elm_jax.ELMConfig(**base)


def random_params(config, seed=0, dtype=jnp.float64):
    """init_params plus random w_s and tau_m so no parameter is at a special value."""
    key_init, key_ws, key_tau = jax.random.split(jax.random.key(seed), 3)
    params = elm_jax.init_params(key_init, config, dtype)
    params["w_s_raw"] = jax.random.uniform(key_ws, params["w_s_raw"].shape, dtype, -0.3, 1.5)
    params["tau_m_raw"] = params["tau_m_raw"] + jax.random.normal(key_tau, (config.num_memory,), dtype)
    return params


def reference(params, x, config):
    """The float64 oracle's run of `config`.  The routing table is built by the oracle
    from the specification (`numpy_routing`), never taken from `elm_jax.routing`; only
    an explicit ``config.routing_table`` (an input, like a checkpoint's table) is used
    as given."""
    table = numpy_routing(config.num_input, config.num_branch, config.num_synapse_per_branch,
                          config.routing, seed=config.routing_seed,
                          table=config.routing_table)
    return numpy_forward(params, x, table=table, num_branch=config.num_branch,
                         tau_s=config.tau_s, delta_t=config.delta_t,
                         lambda_value=config.lambda_value, tau_min=config.memory_tau_min,
                         tau_max=config.memory_tau_max, variant=config.variant,
                         activation=config.mlp_activation,
                         memory_feedback=config.memory_feedback)


def teacher_task(config, batch=8, steps=30, seed=0, dtype=jnp.float32):
    """A small learnable regression task: spike inputs (rate 0.3) and the outputs of a
    "teacher" ELM of the same config with `random_params`, standardised per output
    channel, so the best constant predictor has MSE 1 (`mean_predictor_mse`)."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.random(size=(batch, steps, config.num_input)) < 0.3, dtype)
    y = elm_jax.apply(random_params(config, seed=seed + 1, dtype=dtype), x, config,
                      backend="scan")
    y = (y - y.mean(axis=(0, 1))) / y.std(axis=(0, 1))
    return x, y


def mean_predictor_mse(y):
    """MSE of the best constant prediction (the per-channel mean)."""
    return float(jnp.mean((y - y.mean(axis=(0, 1))) ** 2))


def sin_loss(f):
    """``(params, x) -> sum(sin(f(params, x)))``: a scalar loss with non-trivial gradients."""
    import jax.numpy as jnp

    return lambda p, x: jnp.sum(jnp.sin(f(p, x)))


def sharded_outputs_and_grads(f, params, x, mesh):
    """``f(params, x)`` and the gradient of `sin_loss(f)` computed data-parallel inside
    `jax.shard_map` over `mesh` (axis ``"data"``): `x` (an array or `SpikeEvents`) split
    over the batch, `params` replicated (their gradients come out summed over shards)."""
    from jax.sharding import PartitionSpec as P

    def local(p, xb):
        return f(p, xb), jax.grad(sin_loss(f))(p, xb)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                                 out_specs=(P("data"), P())))(params, x)
