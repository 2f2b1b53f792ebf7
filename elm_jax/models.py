"""Model kinds: one entry point for every model the trainer can run.

The trainer, the model directories and the tasks' evaluations call these functions
instead of the ELM's own, so that the ELM (`elm_jax.ELMConfig`, the default) and the
LSTM baseline (`elm_jax.modules.lstm.LSTMConfig`, ``--set model.kind=lstm``) train on
the same data, budget and code path.  The kind is read off the config's class.

=============  ===============================  ===================================
function       ELM                              LSTM
=============  ===============================  ===================================
init_model     `elm_jax.init_params`            `modules.lstm.init_lstm`
apply_model    `elm_jax.apply` (all options)    `modules.lstm.apply_lstm`
count          `elm_jax.count_params`           4h(in+h+1) + h*out + out
=============  ===============================  ===================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from .apply import apply
from .config import ELMConfig
from .modules.lstm import KIND as LSTM_KIND
from .modules.lstm import (
    LSTMConfig,
    apply_lstm,
    check_lstm_params,
    count_lstm_params,
    init_lstm,
)
from .params import check_params, count_params, init_params, trainable_mask

#: Model kinds (``--set model.kind=...``).
MODEL_KINDS = ("elm", LSTM_KIND)
ModelConfig = ELMConfig | LSTMConfig


def model_kind(config: Any) -> str:
    """``"elm"`` or ``"lstm"`` for a model config (TypeError for anything else)."""
    if isinstance(config, ELMConfig):
        return "elm"
    if isinstance(config, LSTMConfig):
        return LSTM_KIND
    raise TypeError(f"expected an ELMConfig or LSTMConfig, got {type(config).__name__}")


def init_model(key: jax.Array, config: ModelConfig) -> Any:
    """Initial parameters of the model `config` describes."""
    return init_lstm(key, config) if model_kind(config) == LSTM_KIND else \
        init_params(key, config)


def apply_model(params: Any, x: Any, config: ModelConfig, **options: Any) -> jax.Array:
    """Outputs (batch, time, num_output) for x (batch, time, num_input) or SpikeEvents.

    ``options`` are `elm_jax.apply`'s keywords; the LSTM uses ``compute_dtype`` only.
    """
    if model_kind(config) == LSTM_KIND:
        return apply_lstm(params, x, config, **options)
    return apply(params, x, config, **options)


def count_model_params(config: ModelConfig) -> int:
    """Number of trained parameters."""
    return count_lstm_params(config) if model_kind(config) == LSTM_KIND else \
        count_params(config)


def check_model_params(params: Any, config: ModelConfig) -> None:
    """ValueError naming the first parameter leaf that does not fit `config`."""
    if model_kind(config) == LSTM_KIND:
        check_lstm_params(params, config)
    else:
        check_params(params, config)


def trainable_model_mask(config: ModelConfig, params: Any) -> Any:
    """Pytree of bools over `params`, True for trained leaves (all of the LSTM's)."""
    if model_kind(config) == LSTM_KIND:
        return jax.tree_util.tree_map(lambda _: True, params)
    return trainable_mask(config)


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Inverse of ``config.to_dict()`` for either kind (no ``"kind"`` key: the ELM)."""
    kind = data.get("kind", "elm")
    if kind == LSTM_KIND:
        return LSTMConfig.from_dict(data)
    if kind != "elm":
        raise ValueError(f"model kind {kind!r} is invalid: expected one of {MODEL_KINDS}")
    return ELMConfig.from_dict({k: v for k, v in data.items() if k != "kind"})


def describe_model(config: ModelConfig) -> str:
    """One line, e.g. ``ELM branch_elm, d_m=15`` or ``LSTM h=250, chrono 1-2000``."""
    if model_kind(config) == LSTM_KIND:
        chrono = ("" if config.chrono_range is None else
                  f", chrono {config.chrono_range[0]:g}-{config.chrono_range[1]:g}")
        return f"LSTM h={config.hidden}{chrono}"
    return f"ELM {config.variant}, d_m={config.num_memory}"


__all__ = ["MODEL_KINDS", "LSTMConfig", "ModelConfig", "apply_model", "check_model_params",
           "count_model_params", "describe_model", "init_model", "model_config_from_dict",
           "model_kind", "trainable_model_mask"]
