"""Every backend computes the same function as the plain scan: outputs and gradients,
both variants, all routings, with and without memory feedback (the parallel ELM)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from elm_jax.apply import (HOISTED_CHUNK_FLOATS, default_chunk_size, hoisted_chunk_size,
                           resolve_backend, resolve_remat)
from elm_jax.backends import hoisted
from helpers import ROUTINGS, make_config, random_params, reference

OPTIONS = [
    dict(backend="scan", remat="step"),
    dict(backend="scan", remat="chunk", chunk_size=5),
    dict(backend="hoisted", chunk_size=8),
    dict(backend="hoisted", chunk_size=64),
    dict(backend="associative", chunk_size=6),
    dict(backend="hoisted", chunk_size=7, custom_backward=False),
]


def _loss(params, x, config, **kw):
    return jnp.sum(jnp.sin(elm_jax.apply(params, x, config, **kw)))


def _loss_and_y(params, x, config, **kw):
    y = elm_jax.apply(params, x, config, **kw)
    return jnp.sum(jnp.sin(y)), y


CASES = list(itertools.product(ROUTINGS, ("elm", "branch_elm"), (True, False)))
# CI runs these six: every routing, variant, feedback setting and backend option once
CI_CASES = (0, 2, 4, 7, 9, 11)


@pytest.mark.parametrize("index", [
    i if i in CI_CASES else pytest.param(i, marks=pytest.mark.slow)
    for i in range(len(CASES))])
def test_backends_agree_in_float64(x64, index):
    # each model case checks two backend options, rotating so every option meets
    # every routing, variant and feedback setting across the cases
    routing, variant, feedback = CASES[index]
    config = make_config(routing, variant, 1, "silu", learn_memory_tau=True,
                         memory_feedback=feedback)
    params = random_params(config, seed=2)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 29, config.num_input)))
    (_, base), g_base = jax.value_and_grad(_loss_and_y, has_aux=True)(
        params, x, config, backend="scan", remat="none")
    for options in (OPTIONS[index % len(OPTIONS)], OPTIONS[(index + 3) % len(OPTIONS)]):
        (_, y), grads = jax.value_and_grad(_loss_and_y, has_aux=True)(params, x, config,
                                                                      **options)
        np.testing.assert_allclose(y, base, rtol=0, atol=1e-10, err_msg=str(options))
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(g_base)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=str(options))


@pytest.mark.parametrize("layers,activation", [(0, "relu"), (2, "relu"), (2, "silu")])
def test_custom_backward_any_depth_float32(layers, activation):
    config = make_config("neuronio", "elm", layers, activation, learn_memory_tau=True)
    params = random_params(config, seed=4, dtype=jnp.float32)
    x = jnp.asarray(np.random.default_rng(5).integers(-1, 2, size=(3, 40, 12)), jnp.int8)
    g_scan = jax.grad(_loss)(params, x, config, backend="scan")
    g_hoist = jax.grad(_loss)(params, x, config, backend="hoisted", chunk_size=16)
    for a, b in zip(jax.tree_util.tree_leaves(g_hoist), jax.tree_util.tree_leaves(g_scan)):
        scale = float(jnp.abs(b).max()) + 1e-12
        assert float(jnp.abs(a - b).max()) <= 1e-5 * scale


@pytest.mark.parametrize("mode,layers,activation", [
    # CI: each reverse mode once; the other depths are slow variants
    pytest.param("jacobian", 0, "relu", marks=pytest.mark.slow), ("jacobian", 1, "silu"),
    ("recompute", 2, "silu"), ("store", 1, "relu"),
    pytest.param("store", 2, "silu", marks=pytest.mark.slow)])
def test_custom_backward_reverse_modes(x64, monkeypatch, mode, layers, activation):
    # the reverse loop multiplies per-token Jacobians (small models), keeps only the
    # carry and redoes the products over all tokens, or stores them: all exact
    chosen = []

    def forced(num_memory, num_hidden_layers, mlp_macs):
        chosen.append(mode)
        return mode

    monkeypatch.setattr(hoisted, "reverse_mode", forced)
    jax.clear_caches()  # `apply` is jitted per config: retrace with the forced mode
    config = make_config("random", "branch_elm", layers, activation, learn_memory_tau=True)
    params = random_params(config, seed=11)
    x = jnp.asarray(np.random.default_rng(12).normal(size=(2, 23, config.num_input)))
    g_scan = jax.grad(_loss)(params, x, config, backend="scan", remat="none")
    g_hoist = jax.grad(_loss)(params, x, config, backend="hoisted", chunk_size=5)
    assert chosen
    for a, b in zip(jax.tree_util.tree_leaves(g_hoist), jax.tree_util.tree_leaves(g_scan)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layers,variant", [(0, "elm"), (1, "branch_elm"), (2, "elm")])
def test_custom_backward_with_stored_activations(x64, layers, variant):
    # remat="none" has the forward loop store the MLP activations for the backward
    config = make_config("neuronio", variant, layers, "silu", learn_memory_tau=True)
    params = random_params(config, seed=15)
    x = jnp.asarray(np.random.default_rng(16).normal(size=(2, 21, config.num_input)))
    g_scan = jax.grad(_loss)(params, x, config, backend="scan", remat="none")
    for backend in ("hoisted", "associative"):
        g = jax.grad(_loss)(params, x, config, backend=backend, remat="none", chunk_size=6)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_scan)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_store_activations_rule():
    pathx = make_config("none", "elm", 1, "relu").replace(num_memory=150,
                                                         mlp_hidden_size=300)
    neuronio = elm_jax.ELMConfig.preset("neuronio_branch_dm15")
    store = hoisted.should_store_activations
    assert store("none", neuronio, 500, 8) and not store("chunk", pathx, 16, 1)
    assert not store("auto", neuronio, 500, 8)  # small MLP: recomputing is cheaper
    assert store("auto", pathx, 4096, 32)  # 236 MB of activations
    assert not store("auto", pathx, 16384, 32)  # 944 MB: recompute (Path-X, 1 GB test)


def test_reverse_mode_rule():
    assert hoisted.reverse_mode(15, 1, 900) == "jacobian"  # NeuronIO d_m = 15
    assert hoisted.reverse_mode(15, 2, 1800) == "recompute"
    assert hoisted.reverse_mode(150, 1, 92400) == "store"  # Path-X d_m = 150


def test_hoisted_chunk_rule():
    neuronio = elm_jax.ELMConfig.preset("neuronio_branch_dm15")
    assert hoisted_chunk_size(500, 8, neuronio) == 500  # whole window: one chunk
    pathx = make_config("none", "elm", 1, "relu").replace(num_memory=150,
                                                         mlp_hidden_size=300)
    chunk = hoisted_chunk_size(16384, 32, pathx)
    per_token = hoisted.chunk_floats_per_token(pathx)
    assert chunk & (chunk - 1) == 0 and 8 <= chunk < 16384
    assert chunk * 32 * per_token <= HOISTED_CHUNK_FLOATS < 2 * chunk * 32 * per_token
    assert hoisted_chunk_size(10**6, 10**4, pathx) == 8  # floor


def test_parallel_elm_equals_its_own_sequential_loop(x64):
    config = make_config("random", "branch_elm", 2, "relu", memory_feedback=False)
    assert config.mlp_input_size == config.num_branch
    params = random_params(config, seed=8)
    x = np.random.default_rng(6).normal(size=(2, 33, config.num_input))
    want = reference(params, x, config)
    for backend in ("scan", "hoisted", "associative"):
        y, states = elm_jax.apply(params, jnp.asarray(x), config, backend=backend,
                                  return_states=True)
        np.testing.assert_allclose(y, want["y"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(states["memory"], want["memory"], rtol=0, atol=1e-10)
    assert elm_jax.count_params(config) < elm_jax.count_params(
        config.replace(memory_feedback=True))


def test_final_state_and_continuation_for_every_backend(x64):
    config = make_config("none", "elm", 1, "relu")
    params = random_params(config, seed=9)
    x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 26, config.num_input)))
    y_full = elm_jax.apply(params, x, config, backend="scan")
    for backend in ("scan", "hoisted", "associative"):
        y_a, state = elm_jax.apply(params, x[:, :11], config, backend=backend,
                                   return_final_state=True, remat="chunk", chunk_size=4)
        y_b = elm_jax.apply(params, x[:, 11:], config, backend=backend, initial=state)
        np.testing.assert_allclose(jnp.concatenate([y_a, y_b], 1), y_full, atol=1e-12)


def test_resolution_rules_and_errors():
    config = make_config("none", "elm", 1, "relu")
    assert resolve_backend("auto", config, "cpu") == "hoisted"
    assert resolve_backend("auto", config.replace(memory_feedback=False), "cpu") == "hoisted"
    assert resolve_backend("auto", config, "gpu") == "scan"
    assert resolve_backend("auto", config, "tpu") == "scan"
    parallel = config.replace(memory_feedback=False)
    assert resolve_backend("auto", parallel, "gpu") == "associative"
    assert resolve_backend("auto", parallel, "tpu") == "associative"
    assert resolve_remat("auto", 100) == "none" and resolve_remat("auto", 16384) == "chunk"
    assert default_chunk_size(16384) == 128 and default_chunk_size(10) == 8
    params = elm_jax.init_params(jax.random.key(0), config)
    x = jnp.zeros((1, 3, 6))
    with pytest.raises(ValueError, match=r"backend='fast' is invalid: expected one of \('auto'"):
        elm_jax.apply(params, x, config, backend="fast")
    with pytest.raises(ValueError, match=r"remat='all' is invalid: expected one of"):
        elm_jax.apply(params, x, config, remat="all")
    with pytest.raises(ValueError, match="chunk_size=0 is invalid"):
        elm_jax.apply(params, x, config, chunk_size=0)
