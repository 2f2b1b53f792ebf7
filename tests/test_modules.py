"""The Flax shells own parameters only: their outputs equal `elm_jax.apply`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import elm_jax
from helpers import make_config, random_params


def test_linen_sequence_equals_apply(x64):
    config = make_config("neuronio", "branch_elm", 1, "relu")
    params = random_params(config, seed=4)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 11, config.num_input)))
    module = elm_jax.ELMSequence(config, param_dtype=jnp.float64, unroll=2, remat="step",
                                 backend="scan")
    variables = module.init(jax.random.key(0), x)
    assert set(variables["params"]) == {"elm"}
    y = module.apply({"params": {"elm": params}}, x)
    np.testing.assert_allclose(y, elm_jax.apply(params, x, config), rtol=0, atol=1e-12)
    y2, states = module.apply({"params": {"elm": params}}, x, return_states=True)
    assert states["memory"].shape == (2, 11, config.num_memory)


def test_linen_init_equals_init_params():
    config = make_config("none", "elm", 1, "relu")
    variables = elm_jax.ELMSequence(config).init(jax.random.key(3), jnp.zeros((1, 2, 6)))
    expected = elm_jax.init_params(jax.random.key(3), config)
    got = variables["params"]["elm"]
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)


def test_nnx_module_equals_apply_and_step(x64):
    config = make_config("random", "elm", 2, "silu")
    params = random_params(config, seed=6)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 10, config.num_input)))
    model = elm_jax.NNXELM(config, params=params)
    np.testing.assert_allclose(model(x), elm_jax.apply(params, x, config), rtol=0, atol=1e-12)
    hoisted = elm_jax.NNXELM(config, params=params, backend="hoisted", chunk_size=4)
    np.testing.assert_allclose(hoisted(x), elm_jax.apply(params, x, config), rtol=0, atol=1e-12)
    state = elm_jax.initial_state(config, (3,), jnp.float64)
    state, y0 = model.step(state, x[:, 0])
    np.testing.assert_allclose(y0, elm_jax.apply(params, x[:, :1], config)[:, 0], atol=1e-12)
    fresh = elm_jax.NNXELM(config, rngs=nnx.Rngs(0))
    assert jax.tree_util.tree_structure(fresh.elm_params()) == jax.tree_util.tree_structure(params)


def test_nnx_optimizer_trains_params_but_not_frozen_tau():
    config = make_config("neuronio", "elm", 1, "relu", learn_memory_tau=False)
    model = elm_jax.NNXELM(config, rngs=nnx.Rngs(0))
    tau_before = np.asarray(model.tau_m_raw[...])
    w_before = np.asarray(model.w_s_raw[...])
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2, weight_decay=0.1), wrt=nnx.Param)
    x = jnp.ones((2, 7, config.num_input))

    @nnx.jit
    def train_step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, x)) for _ in range(5)]
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(model.tau_m_raw[...], tau_before)
    assert not np.allclose(model.w_s_raw[...], w_before)
