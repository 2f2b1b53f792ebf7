"""The LSTM baseline the paper compares against: ``flax.linen.RNN`` over
``OptimizedLSTMCell`` and a linear readout at every step, with optional chrono
initialisation of the gate biases (Tallec & Ollivier 2018; the paper's "Chrono-LSTM").

`LSTMConfig` is the LSTM's counterpart of `elm_jax.ELMConfig` (frozen, hashable, a
jit static argument); `init_lstm` / `apply_lstm` are the pure functions the trainer
calls through `elm_jax.models`; `LSTMNetwork` is the Flax module behind them.

Parameters (``params`` of `init_lstm`, a plain dict)::

    {"cell": {"ii"|"if"|"ig"|"io": {"kernel": (num_input, hidden)},
              "hi"|"hf"|"hg"|"ho": {"kernel": (hidden, hidden), "bias": (hidden,)}},
     "readout": {"kernel": (hidden, num_output), "bias": (num_output,)}}

Chrono initialisation (``chrono_range=(t_min, t_max)``): for each hidden unit draw
``T ~ U(t_min, t_max)`` and set the forget-gate bias to ``log(T)`` and the input-gate
bias to ``-log(T)``, so the unit's memory initially decays over about T steps (the
paper's Table S3 gives the range per task, e.g. 1-2e4 on Path-X).  Without it the
biases start at zero (Flax's default).  The LSTM's hidden and cell states start at
zero for every sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..events import is_events

KIND = "lstm"


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """Hyperparameters of the LSTM baseline (immutable, hashable).

    Attributes:
      num_input: input features (last axis of ``x``).
      num_output: readout outputs per step.
      hidden: LSTM hidden size (the paper: 250 on SHD, 150 on LRA).
      chrono_range: ``(t_min, t_max)`` of the chrono initialisation, or None for
        Flax's default (zero) gate biases.
    """

    num_input: int
    num_output: int
    hidden: int = 250
    chrono_range: tuple[float, float] | None = None

    kind = KIND  # class attribute (not a field): which model family this configures

    def __post_init__(self) -> None:
        for name in ("num_input", "num_output", "hidden"):
            value = getattr(self, name)
            if isinstance(value, np.integer):
                object.__setattr__(self, name, int(value))
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LSTMConfig.{name}={value!r} is invalid: expected an "
                                 f"integer >= 1")
        if self.chrono_range is not None:
            rng = tuple(float(v) for v in self.chrono_range)
            if len(rng) != 2 or not (1.0 <= rng[0] < rng[1]) or not np.isfinite(rng[1]):
                raise ValueError(f"LSTMConfig.chrono_range={self.chrono_range!r} is invalid: "
                                 f"expected (t_min, t_max) with 1 <= t_min < t_max")
            object.__setattr__(self, "chrono_range", rng)

    def replace(self, **changes: Any) -> LSTMConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with ``"kind": "lstm"`` (`from_dict` inverts it)."""
        out = {"kind": KIND, **dataclasses.asdict(self)}
        if out["chrono_range"] is not None:
            out["chrono_range"] = list(out["chrono_range"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LSTMConfig:
        """Build from a dict written by `to_dict`; unknown keys raise ValueError."""
        data = dict(data)
        if data.pop("kind", KIND) != KIND:
            raise ValueError(f"LSTMConfig.from_dict: kind={data.get('kind')!r}, expected "
                             f"{KIND!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"LSTMConfig has no field(s) {unknown}; valid fields: "
                             f"{sorted(names)}")
        if data.get("chrono_range") is not None:
            data["chrono_range"] = tuple(data["chrono_range"])
        return cls(**data)


class LSTMNetwork(nn.Module):
    """``nn.RNN(OptimizedLSTMCell(hidden))`` then ``Dense(num_output)`` at every step.

    ``__call__(x)``: x (batch, time, num_input) -> (batch, time, num_output).
    """

    config: LSTMConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        cell = nn.OptimizedLSTMCell(cfg.hidden, dtype=self.dtype, param_dtype=jnp.float32,
                                    name="cell")
        h = nn.RNN(cell, name="rnn")(x)
        return nn.Dense(cfg.num_output, dtype=self.dtype, param_dtype=jnp.float32,
                        name="readout")(h).astype(jnp.float32)


def chrono_biases(key: jax.Array, hidden: int, chrono_range: tuple[float, float]
                  ) -> tuple[jax.Array, jax.Array]:
    """(forget bias, input bias), each (hidden,): ``log(T)`` and ``-log(T)`` with
    ``T ~ U(t_min, t_max)`` per unit."""
    t = jax.random.uniform(key, (hidden,), minval=chrono_range[0], maxval=chrono_range[1])
    return jnp.log(t), -jnp.log(t)


def init_lstm(key: jax.Array, config: LSTMConfig) -> dict[str, Any]:
    """Parameters of `LSTMNetwork` for `config` (module docstring: the layout)."""
    init_key, chrono_key = jax.random.split(key)
    x = jnp.zeros((1, 1, config.num_input), jnp.float32)
    # tree_map rebuilds every container, so editing the biases below touches no
    # structure Flax holds
    params = jax.tree_util.tree_map(jnp.asarray,
                                    dict(LSTMNetwork(config).init(init_key, x)["params"]))
    if config.chrono_range is not None:
        forget, input_ = chrono_biases(chrono_key, config.hidden, config.chrono_range)
        cell = params["cell"]
        cell["hf"] = {**cell["hf"], "bias": forget}
        cell["hi"] = {**cell["hi"], "bias": input_}
    return params


def apply_lstm(params: Mapping[str, Any], x: Any, config: LSTMConfig, *,
               compute_dtype: Any = None, **ignored: Any) -> jax.Array:
    """Run the LSTM over a batch.

    Args:
      params: from `init_lstm`.
      x: (batch, time, num_input) float array, or `elm_jax.SpikeEvents` (densified).
      config: the `LSTMConfig`.
      compute_dtype: e.g. ``jnp.bfloat16`` for bfloat16 matmuls (parameters stay float32).
      ignored: ELM execution options (backend, input_path, ...), which do not apply.
    Returns: (batch, time, num_output) float32 readout at every step.
    """
    if is_events(x):
        x = x.to_dense()
    x = jnp.asarray(x)
    if x.ndim != 3 or x.shape[-1] != config.num_input:
        raise ValueError(f"x: expected shape (batch, time, {config.num_input}) for this "
                         f"LSTMConfig, got {tuple(x.shape)}")
    return LSTMNetwork(config, dtype=compute_dtype).apply({"params": params}, x)


def lstm_param_shapes(config: LSTMConfig) -> dict[str, Any]:
    """Shapes of every parameter leaf (same nesting as `init_lstm`)."""
    return jax.tree_util.tree_map(
        lambda a: tuple(a.shape), jax.eval_shape(lambda: init_lstm(jax.random.key(0), config)))


def count_lstm_params(config: LSTMConfig) -> int:
    """Trained parameters: ``4 h (num_input + h + 1) + h num_output + num_output``."""
    h = config.hidden
    return 4 * h * (config.num_input + h + 1) + h * config.num_output + config.num_output


def check_lstm_params(params: Any, config: LSTMConfig) -> None:
    """Raise ValueError naming the first leaf whose structure or shape is wrong."""
    expected = lstm_param_shapes(config)
    flat = jax.tree_util.tree_flatten_with_path(
        expected, is_leaf=lambda t: isinstance(t, tuple))[0]
    for path, shape in flat:
        leaf: Any = params
        for entry in path:
            try:
                leaf = leaf[entry.key]
            except (KeyError, TypeError):
                raise ValueError(f"params{jax.tree_util.keystr(path)}: missing (expected "
                                 f"shape {shape} for this LSTMConfig)") from None
        if tuple(np.shape(leaf)) != shape:
            raise ValueError(f"params{jax.tree_util.keystr(path)}: expected shape {shape} "
                             f"for this LSTMConfig, got {tuple(np.shape(leaf))}")
    got = len(jax.tree_util.tree_leaves(params))
    if got != len(flat):
        raise ValueError(f"params: expected {len(flat)} LSTM leaves, got {got}")


__all__ = ["KIND", "LSTMConfig", "LSTMNetwork", "apply_lstm", "check_lstm_params",
           "chrono_biases", "count_lstm_params", "init_lstm", "lstm_param_shapes"]
