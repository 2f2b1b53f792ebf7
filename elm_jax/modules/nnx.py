"""Flax NNX shell: `NNXELM` holds the parameters as `nnx.Param`s and calls `elm_jax.apply`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..apply import apply
from ..config import ELMConfig
from ..core import ELMState, step
from ..params import Params, init_params, trainable_mask


class NNXELM(nnx.Module):
    """An ELM neuron as an NNX module.

    Every leaf of the `elm_jax` parameter dict is an `nnx.Param` (``tau_m_raw`` is an
    `nnx.Variable` of type `FrozenParam` unless ``config.learn_memory_tau``, so
    ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` does not touch it).

    Args:
      config: the `ELMConfig`.
      rngs: `nnx.Rngs` with a ``params`` stream.
      param_dtype: dtype of the parameters.
      params: optional existing parameter dict (e.g. from `load_torch_checkpoint`)
        instead of a fresh initialisation.
      backend, unroll, remat, chunk_size, compute_dtype: forwarded to `elm_jax.apply`.
    """

    def __init__(self, config: ELMConfig, *, rngs: nnx.Rngs | None = None,
                 param_dtype: Any = jnp.float32, params: Params | None = None,
                 backend: str = "auto", unroll: int = 1, remat: str = "auto",
                 chunk_size: int | None = None, compute_dtype: Any = None):
        if params is None:
            if rngs is None:
                raise ValueError("NNXELM: pass rngs=nnx.Rngs(seed) or params=...")
            params = init_params(rngs.params(), config, param_dtype)
        self.config = config
        self.apply_options = dict(backend=backend, unroll=unroll, remat=remat,
                                  chunk_size=chunk_size, compute_dtype=compute_dtype)
        mask = trainable_mask(config)
        self.w_s_raw = nnx.Param(params["w_s_raw"])
        tau_type = nnx.Param if mask["tau_m_raw"] else FrozenParam
        self.tau_m_raw = tau_type(params["tau_m_raw"])
        self.mlp_kernels = nnx.List([nnx.Param(layer["kernel"]) for layer in params["mlp"]])
        self.mlp_biases = nnx.List([nnx.Param(layer["bias"]) for layer in params["mlp"]])
        self.readout_kernel = nnx.Param(params["readout"]["kernel"])
        self.readout_bias = nnx.Param(params["readout"]["bias"])

    def elm_params(self) -> Params:
        """The current parameters as an `elm_jax` parameter dict."""
        return {
            "w_s_raw": self.w_s_raw[...],
            "tau_m_raw": self.tau_m_raw[...],
            "mlp": [{"kernel": k[...], "bias": b[...]}
                    for k, b in zip(self.mlp_kernels, self.mlp_biases)],
            "readout": {"kernel": self.readout_kernel[...], "bias": self.readout_bias[...]},
        }

    def __call__(self, x: jax.Array, return_states: bool = False):
        """x: (batch, time, num_input) -> y: (batch, time, num_output)."""
        return apply(self.elm_params(), x, self.config, return_states=return_states,
                     **self.apply_options)

    def step(self, state: ELMState, x_t: jax.Array) -> tuple[ELMState, jax.Array]:
        """One time step: x_t (..., num_input) -> (state, y_t (..., num_output))."""
        return step(self.elm_params(), state, x_t, self.config)


class FrozenParam(nnx.Variable):
    """A fixed parameter (kept in checkpoints, not trained)."""
