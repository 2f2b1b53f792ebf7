"""The experimental ``backend="deer"`` (Newton over the whole sequence, adjoint gradients)
against ``backend="scan"``: values, gradients, convergence info and failure handling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from elm_jax.backends.deer import (DeerInfo, DeerNotConvergedError, DeerOptions, _converged,
                                   _residual, deer_apply, deer_memory, invariant_bound,
                                   matrix_recurrence)
from elm_jax.backends.linear import linear_recurrence
from elm_jax.core import ELMState, prepare, readout
from helpers import make_config, random_params


def _inputs(config, batch, steps, seed, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, steps, config.num_input)), dtype)
    initial = ELMState(jnp.asarray(rng.normal(size=(batch, config.num_branch)), dtype),
                       jnp.asarray(rng.normal(size=(batch, config.num_memory)), dtype))
    return x, initial


def _loss_and_y(params, x, initial, config, **kw):
    y, final = elm_jax.apply(params, x, config, initial=initial, return_final_state=True,
                             **kw)
    loss = jnp.sum(jnp.sin(y)) + jnp.sum(final.memory ** 2) + jnp.sum(final.branch_traces)
    return loss, (y, final.memory)


def _values_and_grads(params, x, initial, config, **kw):
    # one compilation gives the outputs and the gradients w.r.t. params, x and initial
    (_, aux), grads = jax.value_and_grad(_loss_and_y, argnums=(0, 1, 2), has_aux=True)(
        params, x, initial, config, **kw)
    return aux, grads


def _assert_trees_close(got, want, rel):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        scale = float(jnp.abs(b).max()) + 1e-30
        assert float(jnp.abs(a - b).max()) <= rel * max(scale, 1.0), (a, b)


# (variant, layers, activation, num_memory, memory_tau_max, steps)
# CI runs the short Branch-ELM case; the 256-step ELM case is its slow variant
F64_CASES = [pytest.param("elm", 1, "relu", 6, 1000.0, 256, marks=pytest.mark.slow),
             ("branch_elm", 2, "silu", 4, 40.0, 64)]


def _assert_deer_matches_scan(params, x, initial, config):
    """Outputs, final state (1e-8) and gradients (1e-6) of "deer" against "scan";
    returns the scan outputs and the deer gradients."""
    (want, want_final), g_scan = _values_and_grads(params, x, initial, config,
                                                   backend="scan")
    (got, final), g_deer = _values_and_grads(params, x, initial, config, backend="deer")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
    np.testing.assert_allclose(final, want_final, rtol=0, atol=1e-8)
    _assert_trees_close(g_deer, g_scan, 1e-6)
    return want, g_deer


@pytest.mark.parametrize("variant,layers,activation,num_memory,tau_max,steps", F64_CASES)
def test_values_and_gradients_match_scan_float64(x64, variant, layers, activation,
                                                 num_memory, tau_max, steps):
    config = make_config("random", variant, layers, activation, num_memory=num_memory,
                         memory_tau_max=tau_max, learn_memory_tau=True)
    params = random_params(config, seed=1)
    x, initial = _inputs(config, 3, steps, seed=2)
    want, g_deer = _assert_deer_matches_scan(params, x, initial, config)
    # the gradient w.r.t. the initial memory is not trivially zero
    assert float(jnp.abs(g_deer[2].memory).max()) > 1e-3
    if variant == "elm":
        _check_info_and_variants(params, x, initial, config, want)


def _check_info_and_variants(params, x, initial, config, want):
    # deer_memory called eagerly (it compiles only the Newton loop)
    dyn = prepare(params, config)
    traces = linear_recurrence(dyn.trace_decay, jnp.swapaxes(x, 0, 1) @ dyn.input_matrix,
                               initial.branch_traces)
    memory, info = deer_memory(dyn, traces, initial.memory, config, DeerOptions(max_iter=40))
    assert isinstance(info, DeerInfo)
    assert 1 <= int(info.iterations) <= 40 and bool(info.converged)
    # float64 default tol 1e-10, relative to the memory's magnitude above 1
    np.testing.assert_allclose(info.threshold,
                               1e-10 * max(1.0, float(jnp.abs(memory).max())), rtol=1e-12)
    assert float(info.residual) <= float(info.threshold)
    y = jnp.swapaxes(readout(dyn, memory), 0, 1)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-8)
    # quasi-DEER and damped Newton reach the same solution, in more iterations
    for slower in (DeerOptions(jacobian="diagonal", max_iter=300),
                   DeerOptions(damping=0.25, max_iter=300)):
        memory, info_slow = deer_memory(dyn, traces, initial.memory, config, slower)
        assert bool(info_slow.converged), (slower, info_slow)
        assert int(info.iterations) < int(info_slow.iterations) <= 300, (slower, info_slow)
        y_slow = jnp.swapaxes(readout(dyn, memory), 0, 1)
        np.testing.assert_allclose(y_slow, want, rtol=0, atol=1e-8, err_msg=str(slower))
    assert DeerOptions().tolerance(jnp.float32) == 1e-5
    assert DeerOptions().tolerance(jnp.float64) == 1e-10


def test_float32_values_and_gradients():
    config = make_config("neuronio", "elm", 1, "relu", num_memory=8, memory_tau_max=1000.0)
    params = random_params(config, seed=3, dtype=jnp.float32)
    x, initial = _inputs(config, 2, 96, seed=4, dtype=jnp.float32)
    (want, _), g_scan = _values_and_grads(params, x, initial, config, backend="scan")
    (got, _), g_deer = _values_and_grads(params, x, initial, config, backend="deer")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4 * float(jnp.abs(want).max()))
    _assert_trees_close(g_deer, g_scan, 2e-3)


def test_not_converged_raises_clear_error_eagerly_and_under_jit(x64):
    config = make_config("none", "elm", 1, "relu", num_memory=5, memory_tau_max=1000.0)
    params = random_params(config, seed=7)
    x, initial = _inputs(config, 2, 64, seed=8)
    options = DeerOptions(max_iter=2)
    pattern = (r"DEER did not converge: residual max\|m_t - f\(m_\(t-1\)\)\| = [0-9.e+-]+ > "
               r"[0-9.e+-]+ .* after 2 Newton iterations \(max_iter=2\)")
    # eagerly (deer_memory outside jit) the exception type itself is raised
    dyn = prepare(params, config)
    traces = linear_recurrence(dyn.trace_decay, jnp.swapaxes(x, 0, 1) @ dyn.input_matrix,
                               initial.branch_traces)
    with pytest.raises(DeerNotConvergedError, match=pattern):
        deer_memory(dyn, traces, initial.memory, config, options)
    # under jit (apply is jitted): a RuntimeError (JaxRuntimeError) carrying the message
    with pytest.raises(RuntimeError, match=pattern):
        jax.block_until_ready(elm_jax.apply(params, x, config, backend="deer",
                                            initial=initial, deer_options=options))
    # on_failure="nan" does not raise ("ignore" neither; it returns the last iterate)
    memory, info = deer_memory(dyn, traces, initial.memory, config,
                               DeerOptions(max_iter=2, on_failure="nan"))
    assert int(info.iterations) == 2 and not bool(info.converged)
    assert float(info.residual) > float(info.threshold)
    assert bool(jnp.isnan(memory).all())


def test_overflow_is_not_convergence_and_projection_prevents_it():
    # an overflowed iterate (residual and threshold inf, or NaN) never counts as converged
    memory = jnp.array([[[jnp.inf, 1.0]]])
    residual, threshold = _residual(memory, jnp.zeros_like(memory), 1e-5)
    assert not bool(_converged(jnp.max(residual), threshold))
    residual, threshold = _residual(memory * jnp.nan, jnp.zeros_like(memory), 1e-5)
    assert float(residual[0]) == np.inf and not bool(_converged(residual[0], threshold))
    # float32, strong recurrent weights: the linearisation around the first guess is
    # expansive over 1000 steps; an unprojected Newton step overflows (the first
    # iterate is inf/NaN, measured), the projected iterates stay in the invariant box
    config = elm_jax.ELMConfig(num_input=5, num_output=2, num_memory=8)
    params = elm_jax.init_params(jax.random.key(0), config)
    params["mlp"] = [dict(kernel=3 * layer["kernel"], bias=layer["bias"])
                     for layer in params["mlp"]]
    x = jax.random.normal(jax.random.key(1), (1, 1000, 5))
    _, states = elm_jax.apply(params, x, config, return_states=True)
    dyn = prepare(params, config)
    bound = invariant_bound(dyn.memory_decay, dyn.update_scale, jnp.zeros(8))
    assert bool((jnp.abs(states["memory"]) <= bound).all())
    y, info = deer_apply(params, x, config, DeerOptions(max_iter=3, on_failure="ignore"))
    assert int(info.iterations) == 3 and not bool(info.converged)
    assert bool(jnp.isfinite(info.residual)) and bool(jnp.isfinite(y).all())


def test_long_sequence_default_init_small(x64):
    # the default-run version of the slow test below: T = 1000, d_m = 8, batch 1,
    # default initialisation (at T = 2000 it converged in 6 Newton iterations, residual
    # 1.3e-15 against a threshold of 3.6e-10; outputs within 2e-15 of scan, gradients
    # within 1e-14 relative).
    config = elm_jax.ELMConfig(num_input=16, num_output=2, num_memory=8,
                               learn_memory_tau=True)
    params = elm_jax.init_params(jax.random.key(0), config, jnp.float64)
    x, initial = _inputs(config, 1, 1000, seed=14)
    y, info = jax.jit(lambda p: deer_apply(p, x, config, DeerOptions(), initial))(params)
    assert bool(info.converged) and 1 <= int(info.iterations) <= 12, info
    assert float(info.residual) <= float(info.threshold)
    want, _ = _assert_deer_matches_scan(params, x, initial, config)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("num_memory", [8, 32])
def test_long_sequence_default_init_float64(x64, num_memory):
    config = elm_jax.ELMConfig(num_input=16, num_output=2, num_memory=num_memory,
                               learn_memory_tau=True)
    params = elm_jax.init_params(jax.random.key(0), config, jnp.float64)
    x, initial = _inputs(config, 2, 2048, seed=14)
    _assert_deer_matches_scan(params, x, initial, config)


def test_matrix_recurrence_forward_and_reverse(x64):
    rng = np.random.default_rng(11)
    steps, batch, d = 37, 2, 3
    a = jnp.asarray(rng.normal(size=(steps, batch, d, d)) * 0.5)
    c = jnp.asarray(rng.normal(size=(steps, batch, d)))
    h, want = np.zeros((batch, d)), []
    for t in range(steps):
        h = np.einsum("bij,bj->bi", a[t], h) + c[t]
        want.append(h)
    scan = jax.jit(matrix_recurrence, static_argnames=("reverse", "transposed"))
    np.testing.assert_allclose(scan(a, c), np.stack(want), atol=1e-12)
    np.testing.assert_allclose(scan(jnp.swapaxes(a, -1, -2), c, transposed=True),
                               np.stack(want), atol=1e-12)
    h, want = np.zeros((batch, d)), []
    for t in reversed(range(steps)):
        h = np.einsum("bij,bj->bi", a[t], h) + c[t]
        want.append(h)
    np.testing.assert_allclose(scan(a, c, reverse=True), np.stack(want[::-1]), atol=1e-12)
    diag = jnp.diagonal(a, axis1=-2, axis2=-1)
    np.testing.assert_allclose(scan(diag, c), scan(jax.vmap(jax.vmap(jnp.diag))(diag), c),
                               atol=1e-12)


def test_parallel_elm_and_option_errors(x64):
    config = make_config("none", "branch_elm", 1, "relu", memory_feedback=False)
    params = random_params(config, seed=12)
    x, initial = _inputs(config, 2, 30, seed=13)
    np.testing.assert_allclose(
        elm_jax.apply(params, x, config, backend="deer", initial=initial),
        elm_jax.apply(params, x, config, backend="scan", initial=initial), atol=1e-10)
    assert hash(DeerOptions(max_iter=5)) == hash(DeerOptions(max_iter=5))
    for bad, message in ((dict(max_iter=0), "max_iter=0"), (dict(tol=-1.0), "tol=-1.0"),
                         (dict(damping=1.0), "damping=1.0"),
                         (dict(jacobian="dense"), "jacobian='dense'"),
                         (dict(on_failure="warn"), "on_failure='warn'"),
                         (dict(project=1), "project=1")):
        with pytest.raises(ValueError, match=f"DeerOptions.{message} is invalid"):
            DeerOptions(**bad)
    with pytest.raises(ValueError, match="deer_options: expected"):
        elm_jax.apply(params, x, config, backend="deer", deer_options=(("max_iter", 3),))
