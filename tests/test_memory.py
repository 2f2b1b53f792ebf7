"""Temporary memory of one training step in the Path-X setting (compile-time analysis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import elm_jax

PATHX = elm_jax.ELMConfig(num_input=8, num_output=2, num_memory=150, tau_s=150.0,
                          memory_tau_max=2e4)


def train_step_temp_bytes(config, batch, steps, **options):
    """Compiled temp bytes of one Adam step with cross-entropy on the last output."""
    params = jax.eval_shape(lambda: elm_jax.init_params(jax.random.key(0), config))
    optimizer = optax.adam(1e-3)
    opt_state = jax.eval_shape(optimizer.init, params)

    def step(p, s, x, labels):
        def loss(p):
            logits = elm_jax.apply(p, x, config, **options)[:, -1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        value, grads = jax.value_and_grad(loss)(p)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    x = jax.ShapeDtypeStruct((batch, steps, config.num_input), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, x, labels).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("options", [dict(), dict(backend="scan", remat="chunk"),
                                     dict(backend="hoisted")])
def test_pathx_training_step_fits_in_1gb(options):
    # T = 16,384, batch 32, d_m = 150, 8 one-hot inputs; default options pick chunked remat
    temp = train_step_temp_bytes(PATHX, 32, 16384, **options)
    assert temp <= 1e9, f"{options}: {temp / 1e9:.2f} GB of temporaries"


def test_remat_reduces_memory():
    plain = train_step_temp_bytes(PATHX, 32, 16384, backend="scan", remat="none")
    chunked = train_step_temp_bytes(PATHX, 32, 16384, backend="scan", remat="chunk")
    assert plain > 2 * chunked
