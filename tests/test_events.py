"""`SpikeEvents`: host conversions, validation, and `apply` on events equal to `apply` on
the dense input (outputs and gradients, every backend, both variants, all routings)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from elm_jax.events import SpikeEvents, branch_drive, check_events, is_events
from helpers import make_config, random_params


def _spikes(config, batch=2, steps=11, density=0.3, seed=0):
    """(batch, steps, num_input) float64 in {-1, 0, 1}, mostly zero."""
    rng = np.random.default_rng(seed)
    shape = (batch, steps, config.num_input)
    return (rng.integers(-1, 2, size=shape) * (rng.random(shape) < density)).astype(np.float64)


def _loss_and_y(params, x, config, **kw):
    y = elm_jax.apply(params, x, config, **kw)
    return jnp.sum(jnp.sin(y)), y


def _assert_trees_close(a, b, tol=1e-10):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- host side
def test_from_dense_to_dense_round_trip():
    x = np.zeros((3, 5, 4), np.float32)
    x[0, 1, 2], x[0, 4, 0], x[0, 4, 3] = 1.0, -1.0, 2.5
    x[2, 0, 1] = 1.0                                  # sequence 1 has no events
    events = SpikeEvents.from_dense(x)
    assert is_events(events) and not is_events(x)
    assert events.shape == (3, 5, 4) and events.capacity == 3
    assert events.dtype == np.float32 and events.time.dtype == np.int32
    assert isinstance(events.time, np.ndarray)
    np.testing.assert_array_equal(events.to_dense(), x)
    # padding: value 0 (time and channel 0)
    np.testing.assert_array_equal(events.value[1], 0.0)
    np.testing.assert_array_equal(events.value[2], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(events.time[2], [0, 0, 0])
    # a larger capacity pads more; the dense input is the same
    wide = SpikeEvents.from_dense(x, capacity=7, dtype=np.int8)
    assert wide.capacity == 7 and wide.value.dtype == np.int8
    np.testing.assert_array_equal(wide.to_dense(), x.astype(np.int8))
    # a batch of all-zero sequences keeps one padding slot
    assert SpikeEvents.from_dense(np.zeros((2, 3, 4))).capacity == 1
    with pytest.raises(ValueError, match="capacity=2 is too small: sequence 0 has 3"):
        SpikeEvents.from_dense(x, capacity=2)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, time, num_input\)"):
        SpikeEvents.from_dense(np.zeros((5, 4)))


def test_from_lists_and_duplicates_sum():
    events = SpikeEvents.from_lists(
        [([0, 3, 3], [1, 2, 2], [1.0, 1.0, -3.0]),   # (3, 2) twice: summed to -2
         ([], [], [])],
        num_steps=4, num_input=3, capacity=4)
    assert events.shape == (2, 4, 3) and events.capacity == 4
    want = np.zeros((2, 4, 3), np.float32)
    want[0, 0, 1], want[0, 3, 2] = 1.0, -2.0
    np.testing.assert_array_equal(events.to_dense(), want)
    np.testing.assert_array_equal(events.value[0], [1.0, 1.0, -3.0, 0.0])
    with pytest.raises(ValueError, match="capacity=2 is too small: sequence 0 has 3"):
        SpikeEvents.from_lists([([0, 1, 2], [0, 0, 0], [1, 1, 1])], 4, 3, capacity=2)


def test_branch_drive_equals_routing_matmul():
    rng = np.random.default_rng(1)
    x = (rng.random((2, 6, 5)) < 0.4) * rng.normal(size=(2, 6, 5))
    matrix = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    drive = branch_drive(SpikeEvents.from_dense(x), matrix)
    assert drive.shape == (6, 2, 3) and drive.dtype == jnp.float32
    want = np.einsum("bti,in->tbn", x, np.asarray(matrix))
    np.testing.assert_allclose(drive, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- validation
def test_invalid_events_raise_naming_the_field():
    config = make_config("none", "branch_elm", 1, "relu")
    params = elm_jax.init_params(jax.random.key(0), config)
    good = SpikeEvents.from_dense(np.eye(config.num_input)[None, :4], capacity=5)
    ok = elm_jax.apply(params, good, config)
    assert ok.shape == (1, 4, config.num_output)
    bad = {
        r"x.num_input: expected 6, got 7": dataclasses.replace(good, num_input=7),
        r"x.num_steps: expected an integer >= 1": dataclasses.replace(good, num_steps=0),
        r"x.time: expected shape \(1, 5\) \(as value\), got \(1, 4\)":
            dataclasses.replace(good, time=good.time[:, :4]),
        r"x.channel: expected shape \(1, 5\)":
            dataclasses.replace(good, channel=good.channel[None]),
        r"x.value: expected shape \(batch, capacity\)":
            dataclasses.replace(good, value=good.value[..., None]),
        r"x.time: expected an integer dtype, got float32":
            dataclasses.replace(good, time=good.time.astype(np.float32)),
        r"x.value: expected a float or integer dtype, got complex64":
            dataclasses.replace(good, value=good.value.astype(np.complex64)),
    }
    for message, events in bad.items():
        with pytest.raises(ValueError, match=message):
            elm_jax.apply(params, events, config)
    # value ranges can only be checked on host arrays (`apply` sees traced ones): a
    # SpikeEvents built from NumPy arrays rejects out-of-range times and channels,
    # negative ones included
    check_events(good, config.num_input)
    for field, values, bound in (("time", [[0, 0, 0, 0, 4]], 4),
                                 ("time", [[-1, 0, 0, 0, 0]], 4),
                                 ("channel", [[0, 6, 0, 0, 0]], 6)):
        with pytest.raises(ValueError,
                           match=rf"events.{field}: expected values in \[0, {bound}\)"):
            dataclasses.replace(good, **{field: np.asarray(values, np.int32)})


# ---------------------------------------------------------------------------- apply
# every routing with both variants, each backend twice
CASES = [("none", "elm", "scan"), ("random", "branch_elm", "hoisted"),
         ("neuronio", "elm", "associative"), ("none", "branch_elm", "associative"),
         ("random", "elm", "scan"), ("neuronio", "branch_elm", "hoisted")]


@pytest.mark.parametrize("routing,variant,backend", CASES)
def test_apply_events_equals_dense_in_float64(x64, routing, variant, backend):
    config = make_config(routing, variant, 1, "silu", learn_memory_tau=True)
    params = random_params(config, seed=2)
    x = _spikes(config, seed=3)
    events = SpikeEvents.from_dense(x, dtype=np.float64)
    value_and_grad = jax.value_and_grad(_loss_and_y, has_aux=True)

    @jax.jit  # an outer jit around both (one compilation)
    def both(params, x, events):
        return (value_and_grad(params, x, config, backend=backend),
                value_and_grad(params, events, config, backend=backend))

    ((_, y_dense), g_dense), ((_, y_events), g_events) = both(params, jnp.asarray(x), events)
    assert y_events.dtype == jnp.float64
    np.testing.assert_allclose(y_events, y_dense, rtol=0, atol=1e-10)
    _assert_trees_close(g_events, g_dense)
    assert float(jnp.abs(g_events["w_s_raw"]).max()) > 0  # the routing gradient is live


def test_apply_events_deer_states_and_int8(x64):
    config = make_config("neuronio", "elm", 1, "relu")
    params = random_params(config, seed=5)
    x = _spikes(config, steps=7, seed=6).astype(np.int8)
    events = SpikeEvents.from_dense(x, capacity=40, dtype=np.int8)   # int8 values
    assert events.value.dtype == np.int8
    dense = jnp.asarray(x)
    # return_states (the "elm" variant's synapse traces included) and the final state
    y_e, states_e, final_e = elm_jax.apply(params, events, config, backend="hoisted",
                                           return_states=True, return_final_state=True)
    y_d, states_d, final_d = elm_jax.apply(params, dense, config, backend="hoisted",
                                           return_states=True, return_final_state=True)
    assert set(states_e) == {"memory", "branch_traces", "synapse_traces"}
    _assert_trees_close((y_e, states_e, final_e), (y_d, states_d, final_d))
    # deer (forward)
    np.testing.assert_allclose(elm_jax.apply(params, events, config, backend="deer"),
                               elm_jax.apply(params, dense, config, backend="deer"),
                               rtol=0, atol=1e-10)
