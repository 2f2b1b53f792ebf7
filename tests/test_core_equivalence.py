"""`elm_jax.apply` and `elm_jax.step` against an independent float64 NumPy loop."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from elm_jax.routing import routing_table
from helpers import ROUTINGS, make_config, random_params, reference, require_shared
from reference_numpy import numpy_routing

CASES = list(itertools.product(ROUTINGS, ("elm", "branch_elm"), (0, 1, 2), ("relu", "silu")))


@pytest.mark.parametrize("routing,variant,layers,activation", CASES)
def test_apply_matches_float64_loop(x64, routing, variant, layers, activation):
    config = make_config(routing, variant, layers, activation)
    params = random_params(config)
    x = np.random.default_rng(1).normal(size=(2, 23, config.num_input))
    want = reference(params, x, config)
    y, states = elm_jax.apply(params, jnp.asarray(x), config, return_states=True)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, want["y"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(states["memory"], want["memory"], rtol=0, atol=1e-10)
    key = "synapse_traces" if variant == "elm" else "branch_traces"
    np.testing.assert_allclose(states[key], want["traces"], rtol=0, atol=1e-10)


def test_neuronio_routing_matches_independent_construction():
    config = elm_jax.ELMConfig.preset("neuronio_branch_dm15")
    table = routing_table(config)
    want = numpy_routing(1278, 45, 100, "neuronio")
    np.testing.assert_array_equal(table, want)
    valid_per_branch = (table.reshape(45, 100) >= 0).sum(1)
    assert list(valid_per_branch[-4:]) == [89, 60, 31, 2]
    assert set(np.bincount(table[table >= 0], minlength=1278)) <= {1, 2, 3, 4}


# The reference's own NeuronIO tables, as saved in its checkpoints
# (input_to_synapse_indices where valid_indices_mask is set): v1 and v2 code alike.
NEURONIO_CHECKPOINTS = {"num_memory_15": "neuronio_best_model_state.pt",
                        "best_elm_neuron": "neuronio_best_model_state.pt",
                        "branch_elm_v2_neuronio": "state.pt"}


@pytest.mark.parametrize("folder", sorted(NEURONIO_CHECKPOINTS))
def test_neuronio_routing_matches_released_checkpoint_tables(folder):
    from elm_jax.checkpoints.torch_pickle import read_torch_state_dict

    state = read_torch_state_dict(require_shared("reference", folder,
                                                 NEURONIO_CHECKPOINTS[folder]))
    released = np.where(state["valid_indices_mask"].astype(bool),
                        state["input_to_synapse_indices"], -1)
    # the oracle's construction from the specification ...
    np.testing.assert_array_equal(numpy_routing(1278, 45, 100, "neuronio"), released)
    # ... and the library's generated table (no table taken from the checkpoint)
    generated = elm_jax.ELMConfig.preset("neuronio_branch_dm15")
    assert generated.routing_table is None
    np.testing.assert_array_equal(routing_table(generated), released)


@pytest.mark.parametrize("num_input,num_branch,per_branch,seed",
                         [(5, 4, 3, 3), (40, 8, 10, 0), (1278, 45, 100, 11)])
def test_random_routing_matches_documented_construction(num_input, num_branch, per_branch,
                                                        seed):
    config = elm_jax.ELMConfig(num_input=num_input, num_output=1, num_branch=num_branch,
                               num_synapse_per_branch=per_branch, routing="random",
                               routing_seed=seed)
    table = routing_table(config)
    want = numpy_routing(num_input, num_branch, per_branch, "random", seed=seed)
    np.testing.assert_array_equal(table, want)
    assert table.min() >= 0 and table.max() < num_input  # every slot valid, in range
    other = routing_table(config.replace(routing_seed=seed + 1))
    assert not np.array_equal(table, other)  # the seed is used


@pytest.mark.parametrize("variant", ["elm", "branch_elm"])
def test_step_loop_matches_apply(x64, variant):
    config = make_config("neuronio", variant, 1, "relu", learn_memory_tau=True)
    params = random_params(config, seed=5)
    x = jnp.asarray(np.random.default_rng(2).integers(-1, 2, size=(3, 17, 12)), jnp.int8)
    y_scan, final = elm_jax.apply(params, x, config, return_final_state=True)
    state = elm_jax.initial_state(config, (3,), jnp.float64)
    ys = []
    for t in range(x.shape[1]):
        state, y_t = elm_jax.step(params, state, x[:, t], config)
        ys.append(y_t)
    np.testing.assert_allclose(jnp.stack(ys, 1), y_scan, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.memory, final.memory, rtol=0, atol=1e-12)


def test_continuing_from_final_state_equals_one_pass(x64):
    config = make_config("random", "elm", 1, "silu")
    params = random_params(config, seed=7)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 30, config.num_input)))
    y_full = elm_jax.apply(params, x, config)
    y_a, state = elm_jax.apply(params, x[:, :13], config, return_final_state=True)
    y_b = elm_jax.apply(params, x[:, 13:], config, initial=state)
    np.testing.assert_allclose(jnp.concatenate([y_a, y_b], 1), y_full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("unroll,remat", [(1, "step"), (4, "none"), (5, "step")])
def test_unroll_and_remat_do_not_change_results(x64, unroll, remat):
    config = make_config("none", "branch_elm", 2, "relu")
    params = random_params(config, seed=9)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 19, config.num_input)))
    loss = lambda p, **kw: jnp.sum(elm_jax.apply(p, x, config, **kw) ** 2)  # noqa: E731
    np.testing.assert_allclose(loss(params, unroll=unroll, remat=remat), loss(params),
                               rtol=1e-13)
    g0 = jax.grad(loss)(params)
    g1 = jax.grad(lambda p: loss(p, unroll=unroll, remat=remat))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
