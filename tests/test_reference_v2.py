"""A checkpoint of the reference's v2 code (per-branch `tau_b`, kappa_lambda update) loads as
``variant="branch_elm"`` and reproduces that code's outputs; configs that contradict the
checkpoint are refused instead of running the wrong update silently.

The output parity itself is in tests/test_reference_parity.py (``branch_elm_v2_neuronio``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import elm_jax
from elm_jax.checkpoints.convert import checkpoint_variant
from elm_jax.checkpoints.model_dir import load_model
from helpers import REPO, require_shared

# Measured max abs error of the converted v2 model (float32, XLA:CPU): y 2.5e-7,
# memory 9.5e-7, branch traces 7.2e-7; see PARITY_ATOL in test_reference_parity.py.
ATOL = 5e-6


def _v2():
    folder = require_shared("reference", "branch_elm_v2_neuronio")
    return folder / "state.pt", folder / "model_config.json", folder / "reference_io.npz"


def _max_error(params, config, io):
    with jax.default_matmul_precision("float32"):
        y, states = elm_jax.apply(params, io["x"], config, return_states=True)
    return (float(np.abs(np.asarray(y) - io["y"]).max()),
            float(np.abs(np.asarray(states["memory"]) - io["memory"]).max()))


def test_v2_checkpoint_loads_as_branch_elm():
    pt, config_json, io_path = _v2()
    config, params = elm_jax.load_torch_checkpoint(pt, config_json)
    assert config.variant == "branch_elm"
    assert config.tau_s == 7.0  # the v2 config's tau_b_value
    assert (config.num_branch, config.num_synapse_per_branch) == (45, 100)
    assert config.learn_memory_tau and config.memory_tau_max == 150.0
    io = np.load(io_path)
    y_error, memory_error = _max_error(params, config, io)
    assert y_error < ATOL and memory_error < ATOL
    # The data tells the updates apart: the same parameters with the v1 update are far off
    # (this is what loading it as "elm" gave, without any error).
    y_error, memory_error = _max_error(params, config.replace(variant="elm"), io)
    assert y_error > 0.3 and memory_error > 1.0


def test_v2_checkpoint_from_a_dict_config_and_without_the_trace_key():
    pt, config_json, _ = _v2()
    reference = json.loads(config_json.read_text())
    config, _ = elm_jax.load_torch_checkpoint(pt, reference)
    assert config.variant == "branch_elm" and config.tau_s == 7.0
    # without a trace-constant key the checkpoint decides (tau_b defaults to 5.0 in v2:
    # refused because the checkpoint holds 7.0)
    without = {k: v for k, v in reference.items() if k != "tau_b_value"}
    with pytest.raises(ValueError, match=r"tau_b holds values \[7\.\].*tau_s=5\.0"):
        elm_jax.load_torch_checkpoint(pt, without)
    config, _ = elm_jax.load_torch_checkpoint(pt, dict(without, tau_b_value=7))
    assert config.variant == "branch_elm"


def test_configs_contradicting_the_checkpoint_are_refused():
    pt, config_json, _ = _v2()
    v2_config, _ = elm_jax.load_torch_checkpoint(pt, config_json)
    # an ELMConfig with the v1 update for the v2 checkpoint
    with pytest.raises(ValueError, match=r"v2 .*variant='branch_elm', but the config has "
                                         r"variant='elm'"):
        elm_jax.load_torch_checkpoint(pt, v2_config.replace(variant="elm"))
    # a v1 model_config (tau_s_value) for the v2 checkpoint
    reference = json.loads(config_json.read_text())
    v1_style = {k: v for k, v in reference.items() if k != "tau_b_value"}
    v1_style["tau_s_value"] = 7.0
    with pytest.raises(ValueError, match=r"names 'tau_s_value' \(reference v1 .*written by "
                                         r"the v2"):
        elm_jax.load_torch_checkpoint(pt, v1_style)
    with pytest.raises(ValueError, match="names both"):
        elm_jax.load_torch_checkpoint(pt, dict(reference, tau_s_value=7.0))
    # and the other way round: a v1 checkpoint with a branch_elm config or a v2 model_config
    v1 = require_shared("reference", "num_memory_15")
    v1_pt = v1 / "neuronio_best_model_state.pt"
    with pytest.raises(ValueError, match=r"v1 .*variant='elm', but the config has "
                                         r"variant='branch_elm'"):
        elm_jax.load_torch_checkpoint(v1_pt, elm_jax.ELMConfig.preset(
            "neuronio_branch_dm15", variant="branch_elm"))
    v1_reference = json.loads((v1 / "model_config.json").read_text())
    with pytest.raises(ValueError, match=r"names 'tau_b_value' \(reference v2 .*written by "
                                         r"the v1"):
        elm_jax.load_torch_checkpoint(v1_pt, dict(v1_reference, tau_b_value=5.0))


def test_checkpoint_variant_needs_exactly_one_trace_key():
    assert checkpoint_variant({"tau_s": 0, "_proto_w_s": 0}) == "elm"
    assert checkpoint_variant({"tau_b": 0, "_proto_w_s": 0}) == "branch_elm"
    for state in ({"_proto_w_s": 0}, {"tau_s": 0, "tau_b": 0}):
        with pytest.raises(ValueError, match="exactly one of 'tau_s' .* or 'tau_b'"):
            checkpoint_variant(state, "x.pt")


def test_cli_convert_v2_checkpoint(tmp_path):
    pt, config_json, io_path = _v2()
    out = tmp_path / "v2_model"
    done = subprocess.run([sys.executable, "-m", "elm_jax.cli", "convert",
                           "--torch-checkpoint", str(pt), "--config", str(config_json),
                           "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "variant=branch_elm" in done.stdout
    config, params = load_model(out)
    assert config.variant == "branch_elm" and config.tau_s == 7.0
    y_error, memory_error = _max_error(params, config, np.load(io_path))
    assert y_error < ATOL and memory_error < ATOL
    # a contradicting config is an error exit naming the mismatch, and writes nothing
    v1_style = {k: v for k, v in json.loads(config_json.read_text()).items()
                if k != "tau_b_value"}
    (tmp_path / "v1_style.json").write_text(json.dumps(dict(v1_style, tau_s_value=7.0)))
    done = subprocess.run([sys.executable, "-m", "elm_jax.cli", "convert",
                           "--torch-checkpoint", str(pt),
                           "--config", str(tmp_path / "v1_style.json"),
                           "--out", str(tmp_path / "refused")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2
    assert "elm-jax convert: error:" in done.stderr and "tau_s_value" in done.stderr
    assert not (tmp_path / "refused").exists()
