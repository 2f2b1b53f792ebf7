"""The two-tower pair classifier (LRA Retrieval): equal to running each document alone
through its encoder plus a float64 NumPy head, padding-invariant, gradients against
finite differences, parameters, configs and model directories."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from elm_jax.checkpoints.model_dir import load_model, save_model
from elm_jax.config import ELMConfig
from elm_jax.models import (
    LSTMConfig,
    TwoTowerConfig,
    apply_model,
    check_model_params,
    count_model_params,
    describe_model,
    init_model,
    model_config_from_dict,
    predict,
    trainable_model_mask,
)
from elm_jax.tasks.run_config import build_model_config

ENCODERS = {
    "elm": ELMConfig(num_input=5, num_output=3, num_memory=4, mlp_hidden_size=6,
                     routing="none", num_synapse_per_branch=1, lambda_value=5.0,
                     memory_tau_min=1.0, memory_tau_max=30.0),
    "lstm": LSTMConfig(num_input=5, num_output=3, hidden=6, chrono_range=(1.0, 20.0)),
}


def _pairs(seed, batch=2, steps=9, channels=5):
    rng = np.random.default_rng(seed)
    # one pair without padding, the others padded (few distinct lengths: few compilations)
    lengths = np.tile(np.array([[steps, steps], [steps - 4, steps - 6]], np.int32),
                      (batch, 1))[:batch]
    ids = rng.integers(0, channels, (batch, 2, steps))
    ids[np.arange(steps) >= lengths[..., None]] = -1  # padding feeds nothing
    x = (ids[..., None] == np.arange(channels)).astype(np.float32)
    return x, lengths, rng.integers(0, 2, batch)


def _numpy_head(head, u, v):
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), head)
    feats = np.concatenate([u, v, u * v, u - v], axis=-1)
    h = np.maximum(feats @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0.0)
    return h @ p["output"]["kernel"] + p["output"]["bias"]


@pytest.mark.parametrize("encoder", [
    "elm", pytest.param("lstm", marks=pytest.mark.slow)])  # CI: the ELM encoder
def test_two_tower_equals_each_document_alone_and_a_numpy_head(encoder):
    config = TwoTowerConfig(encoder=ENCODERS[encoder], num_output=2, hidden=7)
    params = init_model(jax.random.key(0), config)
    x, lengths, _ = _pairs(1)
    run_pairs = jax.jit(lambda p, xb, n: predict(p, xb, config, "last_step", n))
    run_one = jax.jit(lambda p, doc: apply_model(p, doc, config.encoder))
    logits = np.asarray(run_pairs(params, x, lengths))
    assert logits.shape == (2, 2)
    expected = []
    for b in range(2):
        summaries = []
        for d in range(2):  # the document alone, truncated to its length
            doc = x[b:b + 1, d, :lengths[b, d]]
            y = run_one(params["encoder"], doc)
            summaries.append(np.asarray(y[0, -1], np.float64))
        expected.append(_numpy_head(params["head"], *[s[None] for s in summaries])[0])
    np.testing.assert_allclose(logits, np.stack(expected), rtol=2e-5, atol=2e-5)
    # padding after each document's last real token changes nothing
    longer = np.concatenate([x, np.ones_like(x[:, :, :4])], axis=2)
    np.testing.assert_allclose(np.asarray(run_pairs(params, longer, lengths)), logits,
                               atol=1e-6)
    # swapping the documents swaps u and v (the head is not symmetric)
    swapped = np.asarray(run_pairs(params, x[:, ::-1], lengths[:, ::-1]))
    assert not np.allclose(swapped, logits)


def test_two_tower_gradients_match_finite_differences(x64):
    encoder = ENCODERS["elm"]
    config = TwoTowerConfig(encoder=encoder, num_output=2, hidden=4)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                    init_model(jax.random.key(2), config))
    x, lengths, labels = _pairs(3, steps=7)

    def loss(p):
        logits = predict(p, jnp.asarray(x, jnp.float64), config, "last_step", lengths)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

    trained = {"encoder": {k: v for k, v in params["encoder"].items()
                           if k in ("mlp", "readout", "w_s_raw")}, "head": params["head"]}

    @jax.jit
    def partial(sub):
        return loss({"encoder": {**params["encoder"], **sub["encoder"]}, "head": sub["head"]})

    check_grads(partial, (trained,), order=1, modes=("rev",), eps=1e-6, atol=1e-7,
                rtol=1e-7)


def test_two_tower_parameters_configs_and_model_directory(tmp_path):
    config = TwoTowerConfig(encoder=ENCODERS["lstm"], num_output=2, hidden=7)
    params = init_model(jax.random.key(4), config)
    # the LSTM trains every leaf: the count is the leaf total
    assert count_model_params(config) == sum(a.size for a in jax.tree_util.tree_leaves(params))
    assert count_model_params(config) == count_model_params(config.encoder) + 4 * 3 * 7 + 7 + 7 * 2 + 2
    mask = trainable_model_mask(config, params)
    assert all(jax.tree_util.tree_leaves(mask))
    assert model_config_from_dict(config.to_dict()) == config
    assert "two-tower over LSTM h=6" in describe_model(config)
    save_model(tmp_path / "m", config, params)
    loaded_config, loaded = load_model(tmp_path / "m")
    assert loaded_config == config
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match=r"params\['head'\]\['hidden'\]\['kernel'\]: "
                                         r"expected shape \(12, 8\)"):
        check_model_params(params, config.replace(hidden=8))
    with pytest.raises(ValueError, match=r"x: expected document pairs \(batch, 2, time, 5\)"):
        apply_model(params, np.zeros((3, 9, 5), np.float32), config)
    with pytest.raises(ValueError, match="needs a 'last_step' head"):
        predict(params, np.zeros((3, 2, 9, 5), np.float32), config, "per_step")
    with pytest.raises(ValueError, match="TwoTowerConfig.hidden"):
        TwoTowerConfig(encoder=ENCODERS["elm"], hidden=0)


def test_build_model_config_wraps_either_encoder_in_a_two_tower():
    preset = dict(num_memory=4, mlp_hidden_size=8, tower_latent=5, tower_hidden=9,
                  lstm_hidden=6)
    elm = build_model_config(preset, {}, num_input=7, num_output=2)
    assert isinstance(elm, TwoTowerConfig) and elm.hidden == 9 and elm.num_output == 2
    assert isinstance(elm.encoder, ELMConfig)
    assert (elm.encoder.num_input, elm.encoder.num_output, elm.num_input) == (7, 5, 7)
    lstm = build_model_config(preset, {"kind": "lstm"}, num_input=7, num_output=2)
    assert lstm.encoder == LSTMConfig(num_input=7, num_output=5, hidden=6)
    plain = build_model_config({"num_memory": 4}, {}, num_input=7, num_output=2)
    assert isinstance(plain, ELMConfig) and plain.num_output == 2
    with pytest.raises(ValueError, match="model.tower_hidden applies to two-tower"):
        build_model_config({"num_memory": 4}, {"tower_hidden": 3}, num_input=7, num_output=2)
