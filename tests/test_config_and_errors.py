"""Invalid configs, shapes and dtypes raise ValueError naming the field and what is allowed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elm_jax
from elm_jax import ELMConfig

BASE = dict(num_input=6, num_output=2, num_memory=3)


@pytest.mark.parametrize("changes,pattern", [
    (dict(num_memory=0), r"num_memory=0 .*positive integer"),
    (dict(num_input=-4), r"num_input=-4 .*positive integer"),
    (dict(num_output=2.5), r"num_output=2.5 .*positive integer"),
    (dict(mlp_num_layers=-1), r"mlp_num_layers=-1 .*>= 0"),
    (dict(mlp_hidden_size=0), r"mlp_hidden_size=0"),
    (dict(lambda_value=0.0), r"lambda_value=0.0 .*> 0"),
    (dict(tau_s=float("nan")), r"tau_s=nan"),
    (dict(delta_t=-1.0), r"delta_t=-1.0"),
    (dict(memory_tau_min=10.0, memory_tau_max=10.0), r"memory_tau_min=10.0 .*below memory_tau_max=10.0"),
    (dict(memory_tau_min=50.0, memory_tau_max=10.0), r"memory_tau_min=50.0"),
    (dict(w_s_value=-0.5), r"w_s_value=-0.5 .*>= 0"),
    (dict(mlp_activation="tanh"), r"mlp_activation='tanh' .*\('relu', 'silu'\)"),
    (dict(variant="elm3"), r"variant='elm3' .*\('elm', 'branch_elm'\)"),
    (dict(routing="grid"), r"routing='grid' .*\('none', 'random', 'neuronio'\)"),
    (dict(num_branch=2, num_synapse_per_branch=2), r"routing='none'.*4.*must equal num_input \(6\)"),
    (dict(num_branch=2, num_synapse_per_branch=2, routing="random"), r"4 synapses cannot cover 6 inputs"),
    (dict(num_input=7, num_branch=2, num_synapse_per_branch=5, routing="neuronio"), r"even num_input"),
    (dict(num_branch=3, num_synapse_per_branch=1, routing="neuronio"), r"stride.*=2 exceeds num_synapse_per_branch=1"),
    (dict(routing_table=(0, 1, 2)), r"routing_table=.*6 entries"),
    (dict(routing_table=(0, 1, 2, 3, 4, 9)), r"routing_table=.*entry 9.*\[0, 6\)"),
    (dict(learn_memory_tau="yes"), r"learn_memory_tau='yes'"),
])
def test_invalid_config_names_field_and_allowed_values(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        ELMConfig(**{**BASE, **changes})


def test_config_round_trips_and_is_hashable():
    config = ELMConfig(num_input=12, num_output=2, num_memory=3, num_branch=4,
                       num_synapse_per_branch=5, routing="neuronio",
                       routing_table=tuple(range(12)) + (-1,) * 8)
    assert ELMConfig.from_dict(config.to_dict()) == config
    assert hash(config) == hash(ELMConfig.from_dict(config.to_dict()))
    assert config.mlp_hidden_size == 6 and config.num_synapse == 20
    with pytest.raises(ValueError, match="no field"):
        ELMConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_presets_and_reference_config():
    with pytest.raises(ValueError, match="unknown ELMConfig preset 'nope'.*neuronio_best"):
        ELMConfig.preset("nope")
    best = ELMConfig.preset("neuronio_best")
    assert best.mlp_activation == "silu" and best.num_memory == 100
    ref = ELMConfig.from_reference({"num_input": 1278, "num_output": 2, "num_memory": 15,
                                    "num_branch": 45, "num_synapse_per_branch": 100,
                                    "input_to_synapse_routing": "neuronio_routing",
                                    "memory_tau_min": 1.0, "memory_tau_max": 150.0,
                                    "learn_memory_tau": False})
    assert ref == ELMConfig.preset("neuronio_branch_dm15")
    with pytest.raises(ValueError, match="input_to_synapse_routing='grid_routing'"):
        ELMConfig.from_reference({"num_input": 4, "num_output": 1,
                                  "input_to_synapse_routing": "grid_routing"})


def test_reference_config_variant_follows_the_code_version():
    base = {"num_input": 4, "num_output": 1, "num_memory": 3}
    assert ELMConfig.from_reference(base).variant == "elm"
    assert ELMConfig.from_reference({**base, "tau_s_value": 5.0}).variant == "elm"
    v2 = ELMConfig.from_reference({**base, "tau_b_value": 7.0})
    assert v2.variant == "branch_elm" and v2.tau_s == 7.0
    with pytest.raises(ValueError, match="variant='elm' contradicts.*tau_b_value.*v2"):
        ELMConfig.from_reference({**base, "tau_b_value": 7.0}, variant="elm")
    with pytest.raises(ValueError, match="both tau_s_value.*and tau_b_value"):
        ELMConfig.from_reference({**base, "tau_s_value": 5.0, "tau_b_value": 7.0})


@pytest.mark.parametrize("dm,count", [(1, 4601), (15, 6827), (100, 54002)])
def test_count_params_matches_reference(dm, count):
    assert elm_jax.count_params(ELMConfig.preset(f"neuronio_branch_dm{dm}")) == count


def test_count_params_includes_learned_tau():
    config = ELMConfig(**BASE)
    assert elm_jax.count_params(config.replace(learn_memory_tau=True)) == \
        elm_jax.count_params(config) + 3


def _setup():
    config = ELMConfig(**BASE)
    return config, elm_jax.init_params(jax.random.key(0), config)


@pytest.mark.parametrize("shape,pattern", [
    ((4, 6), r"x: expected shape \(batch, time, num_input\) with num_input=6, got \(4, 6\)"),
    ((2, 4, 5), r"num_input=6, got \(2, 4, 5\)"),
    ((1, 2, 3, 6), r"got \(1, 2, 3, 6\)"),
])
def test_apply_rejects_wrong_shapes(shape, pattern):
    config, params = _setup()
    with pytest.raises(ValueError, match=pattern):
        elm_jax.apply(params, jnp.zeros(shape), config)


def test_apply_rejects_wrong_dtypes_and_options():
    config, params = _setup()
    with pytest.raises(ValueError, match="x: expected a real float, integer or bool dtype, got complex64"):
        elm_jax.apply(params, jnp.zeros((1, 2, 6), jnp.complex64), config)
    with pytest.raises(ValueError, match="remat='all' is invalid"):
        elm_jax.apply(params, jnp.zeros((1, 2, 6)), config, remat="all")
    with pytest.raises(ValueError, match="unroll=0 is invalid"):
        elm_jax.apply(params, jnp.zeros((1, 2, 6)), config, unroll=0)
    with pytest.raises(ValueError, match=r"x_t: expected shape \(\.\.\., num_input\)"):
        elm_jax.step(params, elm_jax.initial_state(config, (1,)), jnp.zeros((1, 5)), config)
    bad_state = elm_jax.ELMState(jnp.zeros((2, 6)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"initial.memory: expected shape \(2, 3\), got \(2, 4\)"):
        elm_jax.apply(params, jnp.zeros((2, 5, 6)), config, initial=bad_state)


def test_apply_rejects_params_of_another_config():
    config, params = _setup()
    other = config.replace(num_memory=4)
    with pytest.raises(ValueError, match=r"params\['mlp'\]\[0\]\['kernel'\]: expected shape \(10, 6\) for this config, got \(9, 6\)"):
        elm_jax.apply(params, jnp.zeros((1, 2, 6)), other)
    deeper = config.replace(mlp_num_layers=2)
    with pytest.raises(ValueError, match=r"params\['mlp'\]: expected 3 layers"):
        elm_jax.apply(params, jnp.zeros((1, 2, 6)), deeper)
    broken = dict(params, w_s_raw=params["w_s_raw"].astype(jnp.int32))
    with pytest.raises(ValueError, match=r"params\['w_s_raw'\]: expected a floating dtype"):
        elm_jax.apply(broken, jnp.zeros((1, 2, 6)), config)


def test_init_matches_reference_initialisation():
    config = ELMConfig(num_input=40, num_output=3, num_memory=12, mlp_hidden_size=20,
                       memory_tau_min=1.0, memory_tau_max=300.0)
    params = elm_jax.init_params(jax.random.key(1), config)
    assert np.all(params["w_s_raw"] == 0.5)
    from elm_jax.core import memory_tau
    tau = np.asarray(memory_tau(params, config), np.float64)
    want = np.logspace(np.log10(1 + 1e-6), np.log10(300 - 1e-6), 12)
    np.testing.assert_allclose(tau, want, rtol=2e-5)
    first = params["mlp"][0]["kernel"]
    bound = 1 / np.sqrt(52)
    assert first.shape == (52, 20) and np.abs(first).max() <= bound
    assert np.abs(first).max() > 0.9 * bound  # uniform over the whole range


def test_routing_table_entries_must_be_integers():
    base = dict(num_input=4, num_output=1, num_memory=2, num_branch=2,
                num_synapse_per_branch=2, routing="random")
    with pytest.raises(ValueError, match=r"routing_table='<entry 2: -0.5>'.*integer"):
        ELMConfig(**base, routing_table=[0, 1, -0.5, 2])
    with pytest.raises(ValueError, match="routing_table.*integer"):
        ELMConfig(**base, routing_table=[0, 1, "a", 2])
    # integral floats and NumPy integers are the same table, and survive a round trip
    config = ELMConfig(**base, routing_table=np.array([0, 1, -1, 3]))
    assert config.routing_table == (0, 1, -1, 3)
    assert ELMConfig(**base, routing_table=[0.0, 1.0, -1.0, 3.0]) == config
    assert ELMConfig.from_dict(config.to_dict()) == config


def test_memory_tau_max_that_would_overflow_the_parameters_is_refused():
    with pytest.raises(ValueError, match=r"memory_tau_max=1000000000000.0 .*at most 1e\+10"):
        ELMConfig(num_input=3, num_output=1, num_memory=6, memory_tau_max=1e12)
    config = ELMConfig(num_input=3, num_output=1, num_memory=6, memory_tau_max=1e10)
    params = elm_jax.init_params(jax.random.key(0), config)
    assert np.isfinite(np.asarray(params["tau_m_raw"])).all()


@pytest.mark.parametrize("backend", ["scan", "hoisted", "associative", "deer"])
@pytest.mark.parametrize("shape", [(2, 0), (0, 5)])
def test_empty_inputs_are_refused_the_same_on_every_backend(backend, shape):
    config = ELMConfig(num_input=3, num_output=1, num_memory=4)
    params = elm_jax.init_params(jax.random.key(0), config)
    with pytest.raises(ValueError, match="at least one sequence and one time step"):
        elm_jax.apply(params, jnp.zeros((*shape, 3)), config, backend=backend)


def test_numpy_scalars_are_accepted_and_normalised():
    import numpy as np

    config = elm_jax.ELMConfig(num_input=np.int64(4), num_output=np.int32(2),
                               num_memory=np.int64(3), lambda_value=np.float32(2.0),
                               memory_feedback=np.bool_(True))
    plain = elm_jax.ELMConfig(num_input=4, num_output=2, num_memory=3, lambda_value=2.0)
    assert config == plain and hash(config) == hash(plain)
    assert type(config.num_input) is int and type(config.lambda_value) is float


def test_a_list_input_and_a_mismatched_step_state_are_named():
    import jax
    import jax.numpy as jnp

    config = elm_jax.ELMConfig(num_input=3, num_output=1, num_memory=2)
    params = elm_jax.init_params(jax.random.key(0), config)
    with pytest.raises(ValueError, match=r"x: expected an array of shape \(batch, time, "
                                         r"num_input\), got a list"):
        elm_jax.apply(params, [[[0.0, 1.0, 0.0]]], config)
    x_t = jnp.ones((4, 3))
    for batch in ((1,), (3,)):  # a batch-1 state must not broadcast silently
        with pytest.raises(ValueError, match=r"state.branch_traces: expected shape "
                                             r"\(4, 3\)"):
            elm_jax.step(params, elm_jax.initial_state(config, batch), x_t, config)
    state, y = elm_jax.step(params, elm_jax.initial_state(config, (4,)), x_t, config)
    assert y.shape == (4, 1)
