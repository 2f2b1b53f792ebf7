"""``compute_dtype=bfloat16`` against the float32 computation, on every backend.

A small branch-ELM with default-initialised (`elm_jax.init_params`) parameters, T = 200,
batch 2, spike inputs: the bfloat16 outputs and parameter gradients must be close to the
float32 ``backend="scan"`` ones (within a few times the measured bfloat16 error) and
must differ from them (so a backend that ignored compute_dtype would fail).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from helpers import make_config

# CI: scan, hoisted, associative; deer's bfloat16 path is also checked in CI by
# test_backend_options.test_deer_with_compute_dtype_is_close_to_scan
BACKENDS = ["scan", "hoisted", "associative", pytest.param("deer", marks=pytest.mark.slow)]

# Measured (jax 0.10.2, CPU) with the config and data below, error of bfloat16 against
# float32 scan; outputs: max|y_bf16 - y_f32| / max|y_f32|, gradients: per leaf
# max|g_bf16 - g_f32| / max|g_f32|, the worst leaf:
#
#   backend       output     worst gradient leaf
#   scan          5.76e-3    7.0e-3 (tau_m_raw)
#   hoisted       5.62e-3    7.6e-3 (tau_m_raw)
#   associative   5.62e-3    7.6e-3 (tau_m_raw)
#   deer          5.76e-3    7.3e-3 (tau_m_raw)
#
# (float32 backends differ from float32 scan by <= 1e-6 relative.)  The tolerances are
# ~3.5-4x the worst measured error; the lower bounds are ~10x below the smallest one
# and ~500x above float32 round-off, so compute_dtype must really have been used.
OUTPUT_RTOL = 0.02
GRAD_RTOL = 0.03
MIN_OUTPUT_ERROR = 5e-4
MIN_GRAD_ERROR = 5e-4


def _case():
    config = make_config("neuronio", "branch_elm", 1, "relu", num_memory=15,
                         learn_memory_tau=True, memory_tau_max=150.0, delta_t=1.0)
    params = elm_jax.init_params(jax.random.key(0), config)      # default init, float32
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random(size=(2, 200, config.num_input)) < 0.2, jnp.float32)
    target = jnp.asarray(rng.normal(size=(2, 200, config.num_output)), jnp.float32)
    return config, params, x, target


def _outputs_and_grads(config, params, x, target, **kw):
    def loss(p):
        y = elm_jax.apply(p, x, config, **kw)
        return jnp.mean((y - target) ** 2), y

    (_, y), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return y, grads


@pytest.fixture(scope="module")
def float32_scan():
    config, params, x, target = _case()
    return _outputs_and_grads(config, params, x, target, backend="scan")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_is_close_to_float32(backend, float32_scan):
    config, params, x, target = _case()
    want_y, want_g = float32_scan
    y, grads = _outputs_and_grads(config, params, x, target, backend=backend,
                                  compute_dtype=jnp.bfloat16)
    assert y.dtype == jnp.float32          # only the matmul operands are bfloat16
    scale = float(jnp.abs(want_y).max())
    assert scale > 0.1
    output_error = float(jnp.abs(y - want_y).max()) / scale
    assert MIN_OUTPUT_ERROR < output_error < OUTPUT_RTOL, output_error
    grad_errors = {}
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(grads),
                                 jax.tree_util.tree_leaves(want_g), strict=True):
        assert got.dtype == jnp.float32
        leaf_scale = float(jnp.abs(want).max())
        assert leaf_scale > 1e-3, jax.tree_util.keystr(path)   # every leaf is trained
        grad_errors[jax.tree_util.keystr(path)] = float(jnp.abs(got - want).max()) / leaf_scale
    assert max(grad_errors.values()) < GRAD_RTOL, grad_errors
    assert max(grad_errors.values()) > MIN_GRAD_ERROR, grad_errors
