"""The two-tower pair classifier of LRA Retrieval: both documents of a pair go through
the same sequence encoder (an ELM or the LSTM baseline), each is summarised by the
encoder's output at its last real token (u, v: ``(batch, latent)``), and an MLP
classifies ``[u, v, u * v, u - v]`` (the LRA dual-encoder combination; the paper says
"two-tower setup, the latent-dimension was 75" and not how the towers are combined).

This module holds the config and the head, as pure functions; `elm_jax.models` runs
the encoder (``init_model`` / ``apply_model`` / ``predict`` dispatch on the config):
the pair is folded into the batch axis, so both towers run in one encoder call.

Parameters (a plain dict)::

    {"encoder": <the encoder's parameters; its num_output is the latent size>,
     "head": {"hidden": {"kernel": (4 * latent, hidden), "bias": (hidden,)},
              "output": {"kernel": (hidden, num_output), "bias": (num_output,)}}}

The head's hidden layer uses ReLU; its kernels start LeCun-normal and its biases at
zero (Flax ``nn.Dense``'s defaults).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KIND = "two_tower"


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig:
    """A pair classifier over a shared encoder (immutable, hashable).

    Attributes:
      encoder: the tower's config (`elm_jax.ELMConfig` or `LSTMConfig`); its
        ``num_output`` is the latent size (the paper: 75).
      num_output: classes of the pair (2 for Retrieval).
      hidden: width of the head's hidden layer.
    """

    encoder: Any
    num_output: int = 2
    hidden: int = 150

    kind = KIND  # class attribute (not a field)

    def __post_init__(self) -> None:
        for name in ("num_output", "hidden"):
            value = getattr(self, name)
            if isinstance(value, np.integer):
                object.__setattr__(self, name, int(value))
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TwoTowerConfig.{name}={value!r} is invalid: expected an "
                                 f"integer >= 1")
        if getattr(self.encoder, "kind", "elm") == KIND or not hasattr(self.encoder,
                                                                          "num_output"):
            raise ValueError(f"TwoTowerConfig.encoder={self.encoder!r} is invalid: expected "
                             f"an ELMConfig or LSTMConfig")

    @property
    def num_input(self) -> int:
        """Input channels of each document (the encoder's)."""
        return self.encoder.num_input

    @property
    def latent(self) -> int:
        """Size of each document's summary (the encoder's num_output)."""
        return self.encoder.num_output

    def replace(self, **changes: Any) -> TwoTowerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with ``"kind": "two_tower"`` and the encoder's dict."""
        return {"kind": KIND, "num_output": self.num_output, "hidden": self.hidden,
                "encoder": self.encoder.to_dict()}


def init_pair_head(key: jax.Array, config: TwoTowerConfig) -> dict[str, Any]:
    """The head's parameters (module docstring: the layout)."""
    k1, k2 = jax.random.split(key)
    init = jax.nn.initializers.lecun_normal()
    features = 4 * config.latent
    return {"hidden": {"kernel": init(k1, (features, config.hidden), jnp.float32),
                       "bias": jnp.zeros((config.hidden,), jnp.float32)},
            "output": {"kernel": init(k2, (config.hidden, config.num_output), jnp.float32),
                       "bias": jnp.zeros((config.num_output,), jnp.float32)}}


def pair_features(u: jax.Array, v: jax.Array) -> jax.Array:
    """``[u, v, u * v, u - v]``: u, v (batch, latent) -> (batch, 4 * latent)."""
    return jnp.concatenate([u, v, u * v, u - v], axis=-1)


def apply_pair_head(params: Mapping[str, Any], u: jax.Array, v: jax.Array) -> jax.Array:
    """Logits (batch, num_output) of a pair from its summaries u, v (batch, latent)."""
    dtype = jnp.promote_types(u.dtype, jnp.float32)  # bfloat16 towers: a float32 head
    feats = pair_features(u.astype(dtype), v.astype(dtype))
    h = jax.nn.relu(feats @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["output"]["kernel"] + params["output"]["bias"]


def head_param_shapes(config: TwoTowerConfig) -> dict[str, Any]:
    """Shapes of the head's leaves (same nesting as `init_pair_head`)."""
    return {"hidden": {"kernel": (4 * config.latent, config.hidden),
                       "bias": (config.hidden,)},
            "output": {"kernel": (config.hidden, config.num_output),
                       "bias": (config.num_output,)}}


def count_head_params(config: TwoTowerConfig) -> int:
    """``4 latent hidden + hidden + hidden num_output + num_output``."""
    return (4 * config.latent + 1) * config.hidden + (config.hidden + 1) * config.num_output


__all__ = ["KIND", "TwoTowerConfig", "apply_pair_head", "count_head_params",
           "head_param_shapes", "init_pair_head", "pair_features"]
