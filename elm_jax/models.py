"""Model kinds: one entry point for every model the trainer can run.

The trainer, the model directories and the tasks' evaluations call these functions
instead of the ELM's own, so that the ELM (`elm_jax.ELMConfig`, the default) and the
LSTM baseline (`elm_jax.modules.lstm.LSTMConfig`, ``--set model.kind=lstm``) train on
the same data, budget and code path.  The kind is read off the config's class.

A third kind, the two-tower pair classifier of LRA Retrieval
(`elm_jax.modules.two_tower.TwoTowerConfig`), wraps either of them: both documents of a
pair run through the one encoder in a single call (the pair folded into the batch
axis) and a small MLP classifies the two summaries.  `predict` is the entry point that
serves every kind and head: outputs at every step, at each sequence's last real step,
or the logits of a pair.

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
import jax.numpy as jnp
import numpy as np

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
from .modules.two_tower import KIND as TWO_TOWER_KIND
from .modules.two_tower import (
    TwoTowerConfig,
    apply_pair_head,
    count_head_params,
    head_param_shapes,
    init_pair_head,
)
from .params import check_params, count_params, init_params, trainable_mask

#: Model kinds of a sequence encoder (``--set model.kind=...``).
MODEL_KINDS = ("elm", LSTM_KIND)
ModelConfig = ELMConfig | LSTMConfig | TwoTowerConfig
HEADS = ("per_step", "last_step")


def model_kind(config: Any) -> str:
    """``"elm"``, ``"lstm"`` or ``"two_tower"`` for a model config (TypeError for
    anything else)."""
    if isinstance(config, ELMConfig):
        return "elm"
    if isinstance(config, LSTMConfig):
        return LSTM_KIND
    if isinstance(config, TwoTowerConfig):
        return TWO_TOWER_KIND
    raise TypeError(f"expected an ELMConfig, LSTMConfig or TwoTowerConfig, got "
                    f"{type(config).__name__}")


def sequence_model(config: ModelConfig) -> ELMConfig | LSTMConfig:
    """The config of the sequence model that runs the steps (a two-tower's encoder)."""
    return config.encoder if model_kind(config) == TWO_TOWER_KIND else config


def init_model(key: jax.Array, config: ModelConfig) -> Any:
    """Initial parameters of the model `config` describes."""
    kind = model_kind(config)
    if kind == TWO_TOWER_KIND:
        k_encoder, k_head = jax.random.split(key)
        return {"encoder": init_model(k_encoder, config.encoder),
                "head": init_pair_head(k_head, config)}
    return init_lstm(key, config) if kind == LSTM_KIND else init_params(key, config)


def last_outputs(y: jax.Array, length: jax.Array | None = None) -> jax.Array:
    """Outputs at each sequence's last real step: y (batch, time, out) -> (batch, out),
    at ``length - 1`` for length (batch,), else at the last step."""
    if length is None:
        return y[:, -1]
    index = jnp.clip(jnp.asarray(length).astype(jnp.int32) - 1, 0, y.shape[1] - 1)
    return jnp.take_along_axis(y, index[:, None, None], axis=1)[:, 0]


def apply_model(params: Any, x: Any, config: ModelConfig, *,
                length: jax.Array | None = None, **options: Any) -> jax.Array:
    """Run a model.

    ELM / LSTM: outputs (batch, time, num_output) for x (batch, time, num_input) or
    `SpikeEvents` (`length` is not used).  Two-tower: logits (batch, num_output) of
    document pairs x (batch, 2, time, num_input) with valid lengths `length` (batch, 2)
    (None: every step is real); both towers run in one encoder call over 2 * batch
    sequences.

    ``options`` are `elm_jax.apply`'s keywords; the LSTM uses ``compute_dtype`` only.
    """
    kind = model_kind(config)
    if kind == TWO_TOWER_KIND:
        return _apply_two_tower(params, x, config, length, options)
    if kind == LSTM_KIND:
        return apply_lstm(params, x, config, **options)
    return apply(params, x, config, **options)


def _apply_two_tower(params: Any, x: Any, config: TwoTowerConfig, length: Any,
                     options: dict[str, Any]) -> jax.Array:
    if not hasattr(x, "ndim") or x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"x: expected document pairs (batch, 2, time, {config.num_input}) "
                         f"for a two-tower model, got "
                         f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")
    batch, _, steps, channels = x.shape
    y = apply_model(params["encoder"], jnp.reshape(x, (2 * batch, steps, channels)),
                    config.encoder, **options)
    if length is not None:
        length = jnp.reshape(jnp.asarray(length), (2 * batch,))
    summary = jnp.reshape(last_outputs(y, length), (batch, 2, config.latent))
    return apply_pair_head(params["head"], summary[:, 0], summary[:, 1])


def predict(params: Any, x: Any, config: ModelConfig, head: str = "last_step",
            length: jax.Array | None = None, **options: Any) -> jax.Array:
    """A task head's predictions.

    Args:
      head: ``"per_step"`` (outputs (batch, time, num_output)) or ``"last_step"``
        ((batch, num_output) at each sequence's last real step; a two-tower model's
        pair logits).
      length: (batch,) valid steps of each sequence ((batch, 2) for pairs), or None.
    """
    if head not in HEADS:
        raise ValueError(f"head={head!r} is invalid: expected one of {HEADS}")
    if model_kind(config) == TWO_TOWER_KIND:
        if head != "last_step":
            raise ValueError("a two-tower model predicts one class per pair: it needs a "
                             "'last_step' head")
        return apply_model(params, x, config, length=length, **options)
    y = apply_model(params, x, config, **options)
    return y if head == "per_step" else last_outputs(y, length)


def count_model_params(config: ModelConfig) -> int:
    """Number of trained parameters."""
    kind = model_kind(config)
    if kind == TWO_TOWER_KIND:
        return count_model_params(config.encoder) + count_head_params(config)
    return count_lstm_params(config) if kind == LSTM_KIND else count_params(config)


def check_model_params(params: Any, config: ModelConfig) -> None:
    """ValueError naming the first parameter leaf that does not fit `config`."""
    kind = model_kind(config)
    if kind == TWO_TOWER_KIND:
        keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        if keys != ["encoder", "head"]:
            raise ValueError(f"params: a two-tower model expects the keys ['encoder', "
                             f"'head'], got {keys}")
        check_model_params(params["encoder"], config.encoder)
        for name, shapes in head_param_shapes(config).items():
            layer = params["head"].get(name) if isinstance(params["head"], Mapping) else None
            for leaf, shape in shapes.items():
                got = np.shape(layer[leaf]) if isinstance(layer, Mapping) and leaf in layer \
                    else None
                if got != shape:
                    raise ValueError(f"params['head']['{name}']['{leaf}']: expected shape "
                                     f"{shape} for this TwoTowerConfig, got {got}")
    elif kind == LSTM_KIND:
        check_lstm_params(params, config)
    else:
        check_params(params, config)


def trainable_model_mask(config: ModelConfig, params: Any) -> Any:
    """Pytree of bools over `params`, True for trained leaves (all of the LSTM's and of
    a two-tower head's)."""
    kind = model_kind(config)
    if kind == TWO_TOWER_KIND:
        return {"encoder": trainable_model_mask(config.encoder, params["encoder"]),
                "head": jax.tree_util.tree_map(lambda _: True, params["head"])}
    if kind == LSTM_KIND:
        return jax.tree_util.tree_map(lambda _: True, params)
    return trainable_mask(config)


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Inverse of ``config.to_dict()`` for every kind (no ``"kind"`` key: the ELM)."""
    kind = data.get("kind", "elm")
    if kind == TWO_TOWER_KIND:
        rest = {k: v for k, v in data.items() if k != "kind"}
        unknown = sorted(set(rest) - {"encoder", "num_output", "hidden"})
        if unknown or "encoder" not in rest:
            raise ValueError(f"a two-tower model config needs 'encoder' and takes "
                             f"'num_output', 'hidden'; got {sorted(rest)}")
        return TwoTowerConfig(encoder=model_config_from_dict(rest.pop("encoder")), **rest)
    if kind == LSTM_KIND:
        return LSTMConfig.from_dict(data)
    if kind != "elm":
        raise ValueError(f"model kind {kind!r} is invalid: expected one of "
                         f"{MODEL_KINDS + (TWO_TOWER_KIND,)}")
    return ELMConfig.from_dict({k: v for k, v in data.items() if k != "kind"})


def describe_model(config: ModelConfig) -> str:
    """One line, e.g. ``ELM branch_elm, d_m=15`` or ``LSTM h=250, chrono 1-2000``."""
    kind = model_kind(config)
    if kind == TWO_TOWER_KIND:
        return (f"two-tower over {describe_model(config.encoder)} (latent "
                f"{config.latent}, head {config.hidden})")
    if kind == LSTM_KIND:
        chrono = ("" if config.chrono_range is None else
                  f", chrono {config.chrono_range[0]:g}-{config.chrono_range[1]:g}")
        return f"LSTM h={config.hidden}{chrono}"
    return f"ELM {config.variant}, d_m={config.num_memory}"


__all__ = ["HEADS", "MODEL_KINDS", "LSTMConfig", "ModelConfig", "TwoTowerConfig",
           "apply_model", "check_model_params", "count_model_params", "describe_model",
           "init_model", "last_outputs", "model_config_from_dict", "model_kind", "predict",
           "sequence_model", "trainable_model_mask"]
