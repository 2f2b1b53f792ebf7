"""Backend options: a backend rejects what it does not use (options objects and the
legacy keywords), invalid values name the field, options are static under jit; the
step on prepared constants equals `step` and `apply`; deer honours compute_dtype."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from elm_jax.backends import DeerOptions, HoistedOptions, ScanOptions
from elm_jax.backends.options import resolve_options
from helpers import make_config, random_params


def _setup(seed=0, steps=9, dtype=None, **kw):
    """config, params, x in float64 under the x64 fixture, else float32."""
    config = make_config("neuronio", "branch_elm", 1, "relu", **kw)
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    params = random_params(config, seed=seed, dtype=dtype)
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, steps, config.num_input)),
                    dtype)
    return config, params, x


@pytest.mark.parametrize("backend,keyword,value", [
    ("deer", "unroll", 2), ("deer", "remat", "none"), ("deer", "chunk_size", 8),
    ("deer", "custom_backward", False), ("scan", "custom_backward", False),
    ("scan", "deer_options", DeerOptions()), ("hoisted", "deer_options", DeerOptions()),
    ("associative", "deer_options", DeerOptions()),
])
def test_legacy_keyword_unused_by_backend_is_an_error(backend, keyword, value):
    config, params, x = _setup()
    with pytest.raises(ValueError, match=rf"{keyword}=.* is not used by backend='{backend}'"):
        elm_jax.apply(params, x, config, backend=backend, **{keyword: value})


def test_legacy_defaults_are_accepted_by_every_backend(x64):
    config, params, x = _setup()
    want = elm_jax.apply(params, x, config, backend="scan")
    for backend in ("scan", "hoisted", "associative", "deer"):
        y = elm_jax.apply(params, x, config, backend=backend, unroll=1, remat="auto",
                          custom_backward=True)
        np.testing.assert_allclose(y, want, atol=1e-9)


@pytest.mark.parametrize("backend,options", [
    ("scan", HoistedOptions()), ("hoisted", ScanOptions()), ("associative", DeerOptions()),
    ("deer", ScanOptions()),
])
def test_wrong_options_type_is_an_error(backend, options):
    config, params, x = _setup()
    with pytest.raises(ValueError, match=rf"backend='{backend}' takes"):
        elm_jax.apply(params, x, config, backend=backend, options=options)


def test_legacy_keyword_with_options_is_an_error():
    config, params, x = _setup()
    with pytest.raises(ValueError, match=r"unroll=2 conflicts with options= of backend='scan'"):
        elm_jax.apply(params, x, config, backend="scan", options=ScanOptions(), unroll=2)
    with pytest.raises(ValueError, match=r"chunk_size=4 is not used by backend='deer'"):
        elm_jax.apply(params, x, config, backend="deer", options=DeerOptions(),
                      chunk_size=4)


def test_auto_validates_against_the_resolved_backend():
    config, params, x = _setup()
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="backend='hoisted' takes HoistedOptions"):
            elm_jax.apply(params, x, config, options=ScanOptions())
    with pytest.raises(ValueError, match="deer_options=.* is not used by backend="):
        elm_jax.apply(params, x, config, deer_options=DeerOptions())


@pytest.mark.parametrize("cls,field,value", [
    (ScanOptions, "unroll", 0), (ScanOptions, "remat", "all"),
    (ScanOptions, "chunk_size", 0), (ScanOptions, "compute_dtype", "int8"),
    (HoistedOptions, "unroll", True), (HoistedOptions, "chunk_size", 2.5),
    (HoistedOptions, "store_activations", "yes"), (HoistedOptions, "custom_backward", 1),
    (DeerOptions, "max_iter", 0), (DeerOptions, "compute_dtype", jnp.int32),
])
def test_invalid_values_name_the_field(cls, field, value):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}=.* is invalid"):
        cls(**{field: value})
    with pytest.raises(ValueError, match=r"HoistedOptions\.store_activations=True"):
        HoistedOptions(store_activations=True, custom_backward=False)


def test_options_are_hashable_and_static_under_jit(x64):
    config, params, x = _setup()
    assert hash(ScanOptions(compute_dtype=jnp.bfloat16)) == hash(
        ScanOptions(compute_dtype="bfloat16"))
    assert HoistedOptions(unroll=2) == HoistedOptions(unroll=2)
    want = elm_jax.apply(params, x, config, backend="scan")
    for backend, options in (("scan", ScanOptions(remat="chunk", chunk_size=4, unroll=2)),
                             ("hoisted", HoistedOptions(chunk_size=4,
                                                        store_activations=True)),
                             ("associative", HoistedOptions(custom_backward=False)),
                             ("deer", DeerOptions(max_iter=50))):
        f = jax.jit(lambda p, x, o=options, b=backend: elm_jax.apply(p, x, config,
                                                                     backend=b, options=o))
        np.testing.assert_allclose(f(params, x), want, atol=1e-9)


def test_legacy_keywords_convert_to_options():
    assert resolve_options("scan", remat="step", unroll=2) == ScanOptions(unroll=2,
                                                                          remat="step")
    assert resolve_options("hoisted", remat="none") == HoistedOptions(store_activations=True)
    assert resolve_options("associative", remat="chunk", chunk_size=3) == HoistedOptions(
        chunk_size=3, store_activations=False)
    assert resolve_options("deer", compute_dtype=jnp.bfloat16,
                           deer_options=DeerOptions(max_iter=7)) == DeerOptions(
        max_iter=7, compute_dtype=jnp.bfloat16)


def test_step_prepared_equals_step_and_apply(x64):
    config, params, x = _setup(seed=3, steps=6)
    dyn = elm_jax.prepare(params, config)
    state_a = state_b = elm_jax.initial_state(config, (2,), jnp.float64)
    ys = []
    for t in range(x.shape[1]):
        state_a, y_a = elm_jax.step_prepared(dyn, state_a, x[:, t], config)
        state_b, y_b = elm_jax.step(params, state_b, x[:, t], config)
        np.testing.assert_array_equal(y_a, y_b)
        ys.append(y_a)
    np.testing.assert_allclose(jnp.stack(ys, 1), elm_jax.apply(params, x, config),
                               rtol=0, atol=1e-12)


def test_cells_equal_apply(x64):
    config, params, x = _setup(seed=4, steps=7)
    want = elm_jax.apply(params, x, config)
    rnn = nn.RNN(elm_jax.ELMCell(config, param_dtype=jnp.float64))
    y = rnn.apply({"params": {"cell": {"elm": params}}}, x)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-12)
    model = elm_jax.NNXELM(config, params=params)
    dyn = model.prepare()
    state = elm_jax.initial_state(config, (2,), jnp.float64)
    ys = []
    for t in range(x.shape[1]):
        state, y_t = model.step(state, x[:, t], dyn)
        ys.append(y_t)
    np.testing.assert_allclose(jnp.stack(ys, 1), want, rtol=0, atol=1e-12)


def test_deer_with_compute_dtype_is_close_to_scan():
    config, params, x = _setup(seed=5, steps=40, dtype=jnp.float32)
    scan = elm_jax.apply(params, x, config, backend="scan", compute_dtype=jnp.bfloat16)
    deer = elm_jax.apply(params, x, config, backend="deer",
                         options=DeerOptions(compute_dtype=jnp.bfloat16, tol=1e-4))
    full = elm_jax.apply(params, x, config, backend="scan")
    assert float(jnp.max(jnp.abs(scan - full))) > 1e-4  # bfloat16 really was used
    np.testing.assert_allclose(deer, scan, atol=2e-3)


@pytest.mark.slow  # CI: the values above
def test_deer_with_compute_dtype_has_scans_gradients():
    config, params, x = _setup(seed=5, steps=40, dtype=jnp.float32)
    g_scan = jax.grad(lambda p: jnp.sum(elm_jax.apply(
        p, x, config, backend="scan", compute_dtype=jnp.bfloat16) ** 2))(params)
    g_deer = jax.grad(lambda p: jnp.sum(elm_jax.apply(
        p, x, config, backend="deer", compute_dtype=jnp.bfloat16) ** 2))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g_deer), jax.tree_util.tree_leaves(g_scan)):
        np.testing.assert_allclose(a, b, rtol=5e-2, atol=5e-2 * float(jnp.max(jnp.abs(b))))
