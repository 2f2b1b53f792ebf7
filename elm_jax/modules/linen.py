"""Flax linen shells: `ELMCell` (an `nn.RNNCellBase` for `nn.RNN`) and `ELMSequence`.

Both keep the whole `elm_jax` parameter dict under one linen parameter named ``"elm"``,
so ``variables = {"params": {"elm": params}}`` with ``params`` from
`elm_jax.init_params` or `elm_jax.load_torch_checkpoint` gives exactly the same outputs
as the pure functions.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..apply import apply
from ..config import ELMConfig
from ..core import ELMState, initial_state, step
from ..params import init_params


def _elm_param(module: nn.Module, config: ELMConfig, dtype) -> dict:
    return module.param("elm", lambda key: init_params(key, config, dtype))


class ELMCell(nn.RNNCellBase):
    """One ELM time step as a linen RNN cell: ``nn.RNN(ELMCell(config))(x)``.

    Attributes:
      config: the `ELMConfig`.
      param_dtype: dtype of the parameters and the carry.

    ``__call__(carry, x_t)`` with carry an `ELMState` (branch_traces (..., num_branch),
    memory (..., num_memory)) and x_t (..., num_input) returns ``(carry, y_t)`` with
    y_t (..., num_output).

    Each call is `elm_jax.step` (`prepare` then `step_prepared`).  Inside `nn.RNN`
    (one `lax.scan`) XLA hoists the parameter-only work of `prepare` out of the
    forward loop, and keeping it in the step makes the backward loop accumulate the
    cotangent of the raw synapse weights rather than of the dense routing matrix,
    which benchmarks/cell_step.py measured faster than a step on constants prepared
    before the loop (docs/backends.md).  For a hand-written loop over steps outside
    one jit, use `elm_jax.prepare` once and `elm_jax.step_prepared` per step.
    """

    config: ELMConfig
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry: ELMState, inputs: jax.Array) -> tuple[ELMState, jax.Array]:
        params = _elm_param(self, self.config, self.param_dtype)
        return step(params, carry, inputs, self.config)

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> ELMState:
        """Zero carry for inputs of shape (*batch, num_input) (rng is unused)."""
        del rng
        return initial_state(self.config, tuple(input_shape[:-1]), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class ELMSequence(nn.Module):
    """A whole ELM sequence pass (`elm_jax.apply`) as a linen module.

    Attributes:
      config: the `ELMConfig`.
      param_dtype: dtype of the parameters.
      backend: forwarded to `elm_jax.apply`.
      options: the backend's options object (`elm_jax.backends.ScanOptions`, ...), or
        None.
      unroll, remat, chunk_size, compute_dtype: legacy keywords forwarded to
        `elm_jax.apply` when not None (the backend must use them).

    ``__call__(x, return_states=False)``: x (batch, time, num_input) -> y (batch, time,
    num_output) (and the states dict of `elm_jax.apply` when asked).
    """

    config: ELMConfig
    param_dtype: Any = jnp.float32
    backend: str = "auto"
    options: Any = None
    unroll: int | None = None
    remat: str | None = None
    chunk_size: int | None = None
    compute_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, return_states: bool = False):
        params = _elm_param(self, self.config, self.param_dtype)
        return apply(params, x, self.config, backend=self.backend, options=self.options,
                     unroll=self.unroll, remat=self.remat, chunk_size=self.chunk_size,
                     compute_dtype=self.compute_dtype, return_states=return_states)
