"""Converted published PyTorch checkpoints reproduce the reference implementation's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import elm_jax
from helpers import require_shared
from elm_jax.checkpoints.model_dir import load_model, save_model
from elm_jax.cli import main as cli_main
from elm_jax.routing import routing_table

MODELS = {
    "num_memory_15": "neuronio_best_model_state.pt",
    "best_elm_neuron": "neuronio_best_model_state.pt",
    "elm_v1_random_routing": "state.pt",
}


def _paths(name):
    folder = require_shared("reference", name)
    return folder / MODELS[name], folder / "model_config.json", folder / "reference_io.npz"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_converted_checkpoint_reproduces_reference_outputs(name):
    pt, config_json, io_path = _paths(name)
    config, params = elm_jax.load_torch_checkpoint(pt, config_json)
    io = np.load(io_path)
    y, states = elm_jax.apply(params, io["x"], config, return_states=True)
    np.testing.assert_allclose(np.asarray(y), io["y"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(states["memory"]), io["memory"], rtol=0, atol=1e-4)
    if "trace" in io:
        np.testing.assert_allclose(np.asarray(states["synapse_traces"]), io["trace"],
                                   rtol=0, atol=1e-4)
    if "routing" in io:
        np.testing.assert_array_equal(routing_table(config), io["routing"])


@pytest.mark.parametrize("name", ["num_memory_15", "best_elm_neuron"])
def test_published_models_routing_and_parameter_count(name):
    pt, config_json, _ = _paths(name)
    config, _ = elm_jax.load_torch_checkpoint(pt, config_json)
    generated = config.replace(routing_table=None)
    np.testing.assert_array_equal(routing_table(config), routing_table(generated))
    stats = json.loads((pt.parent / "model_stats.json").read_text())
    assert elm_jax.count_params(config) == stats["model_param_count"]


def test_checkpoint_of_another_config_is_rejected():
    pt, _, _ = _paths("num_memory_15")
    _, best_config, _ = _paths("best_elm_neuron")
    with pytest.raises(ValueError, match=r"does not match the config: .*shape \(30, 60\), "
                                         r"the config expects \(200, 145\)"):
        elm_jax.load_torch_checkpoint(pt, best_config)
    tiny = elm_jax.ELMConfig.preset("neuronio_branch_dm15", tau_s=7.0)
    with pytest.raises(ValueError, match=r"tau_s holds values \[5\.\].*tau_s=7\.0"):
        elm_jax.load_torch_checkpoint(pt, tiny)
    with pytest.raises(ValueError, match="2 linear layers, the config .* expects 3"):
        elm_jax.load_torch_checkpoint(pt, elm_jax.ELMConfig.preset(
            "neuronio_branch_dm15", mlp_num_layers=2))


def test_cli_convert_then_predict(tmp_path, capsys):
    pt, config_json, io_path = _paths("elm_v1_random_routing")
    io = np.load(io_path)
    model_dir = tmp_path / "model"
    assert cli_main(["convert", "--torch-checkpoint", str(pt), "--config", str(config_json),
                     "--out", str(model_dir)]) == 0
    assert cli_main(["convert", "--torch-checkpoint", str(pt), "--config", str(config_json),
                     "--out", str(model_dir)]) == 2
    assert "exists" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", io["x"])
    assert cli_main(["predict", "--checkpoint", str(model_dir), "--input",
                     str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
                     "--batch-size", "1"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), io["y"], rtol=0, atol=1e-4)
    np.save(tmp_path / "bad.npy", io["x"][0])
    assert cli_main(["predict", "--checkpoint", str(model_dir), "--input",
                     str(tmp_path / "bad.npy"), "--output", str(tmp_path / "y2.npy")]) == 2
    assert "expected shape (batch, time, num_input=40)" in capsys.readouterr().err


def test_model_dir_round_trip_and_errors(tmp_path):
    pt, config_json, _ = _paths("num_memory_15")
    config, params = elm_jax.load_torch_checkpoint(pt, config_json)
    save_model(tmp_path / "m", config, params)
    loaded_config, loaded = load_model(tmp_path / "m")
    assert loaded_config == config
    for a, b in zip(__import__("jax").tree_util.tree_leaves(params),
                    __import__("jax").tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="saved with another config: num_memory: stored 15"):
        load_model(tmp_path / "m", config.replace(num_memory=20, routing_table=None))
    with pytest.raises(FileExistsError):
        save_model(tmp_path / "m", config, params)
    save_model(tmp_path / "m", config, params, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging left behind
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_model(tmp_path / "m")
    with pytest.raises(ValueError, match="not an elm_jax model directory"):
        load_model(tmp_path / "nothing")
