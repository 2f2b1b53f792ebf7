"""Flax NNX shell: `NNXELM` holds the parameters as `nnx.Param`s and calls `elm_jax.apply`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..apply import apply
from ..config import ELMConfig
from ..core import Dynamics, ELMState, check_input, prepare, step_prepared
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
      backend, options: forwarded to `elm_jax.apply` (options: the backend's options
        object, e.g. `elm_jax.backends.HoistedOptions`).
      unroll, remat, chunk_size, compute_dtype: legacy keywords forwarded to
        `elm_jax.apply` when not None (the backend must use them).
    """

    def __init__(self, config: ELMConfig, *, rngs: nnx.Rngs | None = None,
                 param_dtype: Any = jnp.float32, params: Params | None = None,
                 backend: str = "auto", options: Any = None, unroll: int | None = None,
                 remat: str | None = None, chunk_size: int | None = None,
                 compute_dtype: Any = None):
        if params is None:
            if rngs is None:
                raise ValueError("NNXELM: pass rngs=nnx.Rngs(seed) or params=...")
            params = init_params(rngs.params(), config, param_dtype)
        self.config = config
        legacy = dict(unroll=unroll, remat=remat, chunk_size=chunk_size,
                      compute_dtype=compute_dtype)
        self.apply_options = dict(backend=backend, options=options,
                                  **{k: v for k, v in legacy.items() if v is not None})
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

    def prepare(self) -> Dynamics:
        """The per-sequence constants (`elm_jax.prepare`) of the current parameters:
        compute them once and pass them to every `step` of a sequence."""
        return prepare(self.elm_params(), self.config)

    def step(self, state: ELMState, x_t: jax.Array, dynamics: Dynamics | None = None
             ) -> tuple[ELMState, jax.Array]:
        """One time step: x_t (..., num_input) -> (state, y_t (..., num_output)).

        `dynamics`: `prepare()` of this module, computed once per sequence; None
        prepares them for this step only (the old per-step behaviour).
        """
        check_input(x_t, self.config, "x_t", "(..., num_input)", None)
        if dynamics is None:
            dynamics = self.prepare()
        return step_prepared(dynamics, state, x_t, self.config)


class FrozenParam(nnx.Variable):
    """A fixed parameter (kept in checkpoints, not trained)."""
