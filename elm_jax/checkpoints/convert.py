"""Load the published PyTorch ELM checkpoints into `elm_jax` parameters (no torch needed)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from ..config import ELMConfig
from ..params import Params, check_params, mlp_layer_sizes
from .torch_pickle import read_torch_state_dict

_MLP_KEY = re.compile(r"^mlp\.network\.(\d+)\.(weight|bias)$")


def _load_reference_config(config: str | os.PathLike | Mapping[str, Any] | ELMConfig
                           ) -> ELMConfig:
    if isinstance(config, ELMConfig):
        return config
    if isinstance(config, Mapping):
        return ELMConfig.from_reference(config)
    path = Path(config)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"model config {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"model config {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"model config {path}: expected a JSON object of constructor "
                         f"arguments, got {type(data).__name__}")
    return ELMConfig.from_reference(data)


def _mismatch(path: Path, what: str) -> ValueError:
    return ValueError(f"checkpoint {path} does not match the config: {what}")


def load_torch_checkpoint(pt_path: str | os.PathLike,
                          config: str | os.PathLike | Mapping[str, Any] | ELMConfig,
                          dtype=jnp.float32) -> tuple[ELMConfig, Params]:
    """Convert a reference PyTorch ELM state dict into `(ELMConfig, params)`.

    Reads the torch zip-pickle without torch (CUDA tensors are mapped to the CPU).  The
    routing table is taken from the checkpoint (``input_to_synapse_indices`` where
    ``valid_indices_mask`` is set) and stored in the returned config's
    ``routing_table``.  The per-synapse ``tau_s`` buffer must be one value equal to the
    config's ``tau_s`` (the reference always builds it that way).

    Args:
      pt_path: the ``.pt`` file written by ``torch.save(model.state_dict(), ...)``.
      config: the reference ``model_config.json`` (path or dict of constructor
        arguments), or an `ELMConfig`.  Published checkpoints are the v1 code path, so
        a reference config gives ``variant="elm"``.
      dtype: float dtype of the returned parameters.
    Returns: (config with the checkpoint's routing table, parameter dict).
    Raises: ValueError naming the mismatch when the checkpoint does not fit the config.
    """
    path = Path(pt_path)
    cfg = _load_reference_config(config)
    state = read_torch_state_dict(path)

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

    trace_key = "tau_s" if "tau_s" in state else "tau_b"
    trace_size = cfg.num_synapse if trace_key == "tau_s" else cfg.num_branch
    tau_trace = take(trace_key, (trace_size,))
    if not np.allclose(tau_trace, cfg.tau_s, rtol=1e-6, atol=0):
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
