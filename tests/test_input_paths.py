"""The three input paths (`elm_jax.input_paths`) compute the same function as the dense
routing matrix: outputs, state trajectories, final states and gradients in float64 to
1e-10, for every backend, both variants, every routing, dense and event input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elm_jax import ELMState, SpikeEvents, apply
from elm_jax.config import ELMConfig
from elm_jax.input_paths import input_path_costs, resolve_input, resolve_input_path
from elm_jax.routing import is_identity_routing, route
from helpers import make_config, random_params, reference

TOL = 1e-10


def identity_config(variant="elm", **kw):
    """routing="none" with one synapse per branch: the identity routing (SHD's shape)."""
    return make_config("none", variant, 1, "relu", num_input=6, num_branch=6,
                       num_synapse_per_branch=1, **kw)


def spikes(config, batch=2, steps=9, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.25, (batch, steps, config.num_input))
    return (counts * rng.choice([-1.0, 1.0], counts.shape)).astype(np.float64)


def run_all(params, x, config, backend, path, initial):
    """Outputs, states, final state and the gradients of a loss that reads all three."""
    def loss(p, init):
        y, states, final = apply(p, x, config, backend=backend, input_path=path,
                                 initial=init, return_states=True, return_final_state=True)
        total = jnp.sum(jnp.sin(y)) + jnp.sum(final.branch_traces ** 2) + \
            jnp.sum(final.memory)
        return total, (y, states, final)

    (_, aux), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, initial)
    return aux, grads


def assert_close(a, b, what):
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a),
                            jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=TOL, atol=TOL,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


def check_paths(config, backend, paths=("structured", "folded"), events=False, seed=0):
    params = random_params(config, seed)
    x = spikes(config, seed=seed)
    rng = np.random.default_rng(seed + 7)
    initial = ELMState(jnp.asarray(rng.normal(size=(2, config.num_branch))),
                       jnp.asarray(rng.normal(size=(2, config.num_memory)) * 0.3))
    want = run_all(params, jnp.asarray(x), config, backend, "matrix", initial)
    inp = SpikeEvents.from_dense(x, dtype=np.float64) if events else jnp.asarray(x)
    for path in paths:
        got = run_all(params, inp, config, backend, path, initial)
        assert_close(got, want, f"{backend}/{path}/events={events}")


GRID = [("identity", "elm"), ("neuronio", "branch_elm")]  # CI; the rest are slow
FULL_GRID = [(r, v) for r in ("identity", "none", "random", "neuronio")
             for v in ("elm", "branch_elm") if (r, v) not in GRID]


@pytest.mark.parametrize("routing,variant", GRID + [
    pytest.param(*case, marks=pytest.mark.slow) for case in FULL_GRID])
def test_paths_equal_matrix_hoisted(x64, routing, variant):
    config = identity_config(variant) if routing == "identity" else \
        make_config(routing, variant, 1, "relu")
    assert is_identity_routing(config) == (routing == "identity")
    check_paths(config, "hoisted")


@pytest.mark.parametrize("backend", ["scan", "associative", "deer"])
def test_paths_equal_matrix_other_backends(x64, backend):
    # the structured path only changes how the drive is computed, before any backend
    # runs (checked on "hoisted" above); the folded one changes what the backend sees
    check_paths(make_config("neuronio", "branch_elm", 1, "relu"), backend, paths=("folded",))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["scan", "associative", "deer"])
@pytest.mark.parametrize("routing,variant", GRID + FULL_GRID)
def test_paths_equal_matrix_every_backend_slow(x64, backend, routing, variant):
    """The whole grid: every other backend x routing x variant (CI runs the cases above)."""
    config = identity_config(variant) if routing == "identity" else \
        make_config(routing, variant, 1, "relu")
    check_paths(config, backend)


@pytest.mark.parametrize("routing", ["identity", "neuronio"])
def test_paths_equal_matrix_events(x64, routing):
    config = identity_config() if routing == "identity" else \
        make_config(routing, "elm", 1, "relu")
    check_paths(config, "hoisted", events=True)
    # "auto" turns these (many per step, for a model this small) into a dense array
    params, x = random_params(config), spikes(config)
    events = SpikeEvents.from_dense(x, dtype=np.float64)
    assert resolve_input("auto", config, events)[1] == (routing == "neuronio")
    np.testing.assert_allclose(apply(params, events, config),
                               apply(params, jnp.asarray(x), config, input_path="matrix"),
                               rtol=TOL, atol=TOL)


@pytest.mark.parametrize("case", ["parallel", "two_layers_silu"])
def test_paths_equal_matrix_other_mlps(x64, case):
    kw = {"memory_feedback": False} if case == "parallel" else {}
    layers, act = (1, "relu") if case == "parallel" else (2, "silu")
    config = make_config("random", "elm", layers, act, **kw)
    check_paths(config, "hoisted", paths=("folded",))
    if case == "two_layers_silu":
        check_paths(config, "scan", paths=("folded",))


def test_folded_matches_the_float64_oracle(x64):
    """The folded path against the independent NumPy loop, not only against apply."""
    config = make_config("neuronio", "elm", 1, "relu")
    params = random_params(config, 3)
    x = spikes(config, seed=3)
    y = apply(params, jnp.asarray(x), config, input_path="folded")
    np.testing.assert_allclose(np.asarray(y), reference(params, x, config)["y"], rtol=TOL,
                               atol=TOL)


def test_route_equals_dense_matrix(x64):
    for config in (identity_config(), make_config("neuronio", "elm", 1, "relu"),
                   make_config("random", "elm", 1, "relu")):
        params = random_params(config, 1)
        w_s = jax.nn.relu(params["w_s_raw"])
        x = jnp.asarray(spikes(config))
        from elm_jax.routing import branch_input_matrix

        np.testing.assert_allclose(route(x, w_s, config), x @ branch_input_matrix(w_s, config),
                                   rtol=TOL, atol=TOL)


def test_auto_picks_the_cheapest_path():
    neuronio = ELMConfig.preset("neuronio_branch_dm15")
    shd = ELMConfig(num_input=700, num_output=20, num_memory=100, mlp_hidden_size=200,
                    routing="none", num_branch=700, num_synapse_per_branch=1)
    assert is_identity_routing(shd) and not is_identity_routing(neuronio)
    # NeuronIO dense: 1278 x 30 beats 1278 x 45 + 45 x 30 (and gathering 4,500 inputs)
    assert resolve_input_path("auto", neuronio, jnp.zeros((1, 4, 1278))) == "folded"
    # a few events per step: one 30-wide row of F per event beats everything
    events = SpikeEvents(np.zeros((1, 12), np.int32), np.zeros((1, 12), np.int32),
                         np.zeros((1, 12), np.float32), 4, 1278)
    assert resolve_input_path("auto", neuronio, events) == "folded"
    # SHD: 700 x 200 per token either way, but the folded traces are 200 wide, not 700
    assert resolve_input_path("auto", shd, jnp.zeros((1, 4, 700))) == "folded"
    # events: one 200-wide row each while they are few; a dense product when many
    few, many = (SpikeEvents(*(np.zeros((1, n), t) for t in (np.int32, np.int32, np.float32)),
                             100, 700) for n in (500, 5000))
    assert resolve_input("auto", shd, few) == ("folded", False)
    assert resolve_input("auto", shd, many) == ("folded", True)
    assert resolve_input("structured", shd, many) == ("structured", False)
    costs = input_path_costs(shd)
    assert costs["matrix"] > costs["structured"] > costs["folded"]
    # a random table, few branches: the dense product beats gathering from x or F
    sparse = ELMConfig(num_input=64, num_output=2, num_memory=4, num_branch=4,
                       num_synapse_per_branch=16, routing="random")
    assert resolve_input_path("auto", sparse, jnp.zeros((1, 4, 64))) == "matrix"
    assert resolve_input_path("matrix", shd) == "matrix"
    with pytest.raises(ValueError, match="input_path='gpu' is invalid"):
        resolve_input_path("gpu", shd)
