"""Load the published PyTorch ELM checkpoints into `elm_jax` parameters (no torch needed)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from ..config import REFERENCE_TRACE_KEYS, ELMConfig, reference_trace_key
from ..params import Params, check_params, mlp_layer_sizes
from .torch_pickle import read_torch_state_dict

_MLP_KEY = re.compile(r"^mlp\.network\.(\d+)\.(weight|bias)$")


#: The state-dict key of the trace time constants tells which reference code wrote a
#: checkpoint: ``tau_s`` (one per synapse) is the v1 ``ELM`` of
#: ``expressive_leaky_memory_neuron.py``, ``tau_b`` (one per branch) the v2 ``ELM`` of
#: ``expressive_leaky_memory_neuron_v2.py``.  Their memory updates differ, so the key
#: decides the variant.
TRACE_KEY_VARIANTS = {"tau_s": "elm", "tau_b": "branch_elm"}
_CODE_NAMES = {"elm": "v1 (expressive_leaky_memory_neuron.py, per-synapse tau_s)",
               "branch_elm": "v2 (expressive_leaky_memory_neuron_v2.py, per-branch tau_b)"}


def _read_reference_config(config: str | os.PathLike | Mapping[str, Any] | ELMConfig
                           ) -> ELMConfig | Mapping[str, Any]:
    """`config` as an `ELMConfig` or as the reference constructor's keyword arguments."""
    if isinstance(config, (ELMConfig, Mapping)):
        return config
    path = Path(config)
    _require_file(path, "model config", "model_config.json")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"model config {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"model config {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"model config {path}: expected a JSON object of constructor "
                         f"arguments, got {type(data).__name__}")
    return data


def _require_file(path: Path, what: str, pattern: str) -> None:
    """ValueError when `path` is a directory (naming the matching files in it)."""
    if path.is_dir():
        found = sorted(p.name for p in path.glob(pattern))
        raise ValueError(f"{what} {path} is a directory; give the file itself"
                         + (f" (it holds {', '.join(found[:5])})" if found else ""))


def checkpoint_variant(state: Mapping[str, Any], path: str | os.PathLike = "<state dict>"
                       ) -> str:
    """The variant of a reference state dict, from its trace key (see `TRACE_KEY_VARIANTS`).

    Raises: ValueError when the state dict has both keys or neither.
    """
    found = [key for key in TRACE_KEY_VARIANTS if key in state]
    if len(found) != 1:
        raise ValueError(
            f"checkpoint {path} is not a reference ELM state dict: it must hold exactly one "
            f"of 'tau_s' (v1 code) or 'tau_b' (v2 code), found "
            f"{found or 'neither'} (keys: {sorted(state)})")
    return TRACE_KEY_VARIANTS[found[0]]


def _config_for(config: ELMConfig | Mapping[str, Any], variant: str, path: Path
                ) -> ELMConfig:
    """The `ELMConfig` of a checkpoint of `variant`; ValueError if `config` says otherwise."""
    if isinstance(config, ELMConfig):
        if config.variant != variant:
            raise _mismatch(path, f"the checkpoint was written by the reference's "
                            f"{_CODE_NAMES[variant]} code, which runs as "
                            f"variant={variant!r}, but the config has "
                            f"variant={config.variant!r}")
        return config
    key = reference_trace_key(config)
    if key and REFERENCE_TRACE_KEYS[key] != variant:
        raise _mismatch(path, f"the model_config names {key!r} (reference "
                        f"{_CODE_NAMES[REFERENCE_TRACE_KEYS[key]]} code) but the "
                        f"checkpoint was written by the {_CODE_NAMES[variant]} code")
    return ELMConfig.from_reference(config, variant=variant)


def _mismatch(path: Path, what: str) -> ValueError:
    return ValueError(f"checkpoint {path} does not match the config: {what}")


def load_torch_checkpoint(pt_path: str | os.PathLike,
                          config: str | os.PathLike | Mapping[str, Any] | ELMConfig,
                          dtype=jnp.float32) -> tuple[ELMConfig, Params]:
    """Convert a reference PyTorch ELM state dict into `(ELMConfig, params)`.

    Reads the torch zip-pickle without torch (CUDA tensors are mapped to the CPU).  The
    routing table is taken from the checkpoint (``input_to_synapse_indices`` where
    ``valid_indices_mask`` is set) and stored in the returned config's
    ``routing_table``.  The trace time constants must be one value equal to the
    config's ``tau_s`` (the reference always builds them that way).

    The checkpoint's keys decide the variant: a ``tau_s`` buffer (one per synapse) is
    the reference's v1 code, run as ``variant="elm"`` (the published NeuronIO models); a
    ``tau_b`` buffer (one per branch) is the v2 code, run as ``variant="branch_elm"``
    (``tau_b_value`` becomes ``tau_s``).  A config that says otherwise is refused.

    Args:
      pt_path: the ``.pt`` file written by ``torch.save(model.state_dict(), ...)``.
      config: the reference ``model_config.json`` (path or dict of constructor
        arguments), or an `ELMConfig` (whose ``variant`` must be the checkpoint's).
      dtype: float dtype of the returned parameters.
    Returns: (config with the checkpoint's routing table, parameter dict).
    Raises: ValueError naming the mismatch when the checkpoint does not fit the config
      (including a v1 checkpoint with a ``branch_elm`` config and vice versa).
    """
    path = Path(pt_path)
    _require_file(path, "torch checkpoint", "*.pt")
    reference_config = _read_reference_config(config)
    state = read_torch_state_dict(path)
    variant = checkpoint_variant(state, path)
    cfg = _config_for(reference_config, variant, path)

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise _mismatch(path, f"key {key!r} is missing (keys: {sorted(state)})")
        value = np.asarray(state[key])
        if value.shape != shape:
            raise _mismatch(path, f"{key} has shape {value.shape}, the config expects "
                            f"{shape}")
        return value

    sizes = mlp_layer_sizes(cfg)
    mlp_keys = sorted({int(m.group(1)) for k in state if (m := _MLP_KEY.match(k))})
    if len(mlp_keys) != len(sizes):
        raise _mismatch(path, f"the MLP has {len(mlp_keys)} linear layers, the config "
                        f"(mlp_num_layers={cfg.mlp_num_layers}) expects {len(sizes)}")
    mlp = []
    for index, (fan_in, fan_out) in zip(mlp_keys, sizes):
        weight = take(f"mlp.network.{index}.weight", (fan_out, fan_in))
        bias = take(f"mlp.network.{index}.bias", (fan_out,))
        mlp.append({"kernel": jnp.asarray(weight.T, dtype), "bias": jnp.asarray(bias, dtype)})

    if variant == "elm":
        tau_trace = take("tau_s", (cfg.num_synapse,))
    else:
        tau_trace = take("tau_b", (cfg.num_branch,))
    if not np.allclose(tau_trace, cfg.tau_s, rtol=1e-6, atol=0):
        trace_key = "tau_s" if variant == "elm" else "tau_b"
        raise _mismatch(path, f"{trace_key} holds values {np.unique(tau_trace)[:5]}, the "
                        f"config has tau_s={cfg.tau_s}")

    table = None
    if "input_to_synapse_indices" in state and state["input_to_synapse_indices"] is not None:
        indices = take("input_to_synapse_indices", (cfg.num_synapse,)).astype(np.int64)
        mask = np.asarray(state.get("valid_indices_mask", np.ones_like(indices)))
        if mask.shape != indices.shape:
            raise _mismatch(path, f"valid_indices_mask has shape {mask.shape}, expected "
                            f"{indices.shape}")
        table = np.where(mask.astype(bool), indices, -1)
        if table.max(initial=-1) >= cfg.num_input:
            raise _mismatch(path, f"routing uses input {table.max()} but num_input is "
                            f"{cfg.num_input}")
        cfg = cfg.replace(routing_table=tuple(int(i) for i in table))
    elif cfg.routing != "none":
        raise _mismatch(path, f"routing={cfg.routing!r} but the checkpoint has no "
                        f"input_to_synapse_indices")

    params = {
        "w_s_raw": jnp.asarray(take("_proto_w_s", (cfg.num_synapse,)), dtype),
        "tau_m_raw": jnp.asarray(take("_proto_tau_m", (cfg.num_memory,)), dtype),
        "mlp": mlp,
        "readout": {
            "kernel": jnp.asarray(take("w_y.weight", (cfg.num_output, cfg.num_memory)).T,
                                  dtype),
            "bias": jnp.asarray(take("w_y.bias", (cfg.num_output,)), dtype),
        },
    }
    check_params(params, cfg)
    return cfg, params
