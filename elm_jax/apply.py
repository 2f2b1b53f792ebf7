"""Run the ELM over whole sequences with `jax.lax.scan`.

`apply` is the sequence-level entry point.  Work that does not depend on the memory is
done outside the loop: the routing (one ``(batch*time, num_input) @ (num_input,
num_branch)`` matmul instead of a per-step gather over synapses) and the readout (one
matmul over all tokens).  The loop carries the branch traces and the memory.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .config import ELMConfig
from .core import (Dynamics, ELMState, check_input, initial_state, matmul, memory_update,
                   prepare, readout, synapse_weights)
from .params import Params
from .routing import route_to_synapses

REMAT_MODES = ("none", "step")


def _run_core(dyn: Dynamics, drive: jax.Array, state: ELMState, config: ELMConfig,
              unroll: int, remat: str, compute_dtype) -> tuple[ELMState, jax.Array, jax.Array]:
    """Sequential recurrence over time-major `drive` (T, B, num_branch).

    Returns: final state, branch traces (T, B, num_branch), memory (T, B, num_memory).
    """

    def body(carry: ELMState, drive_t: jax.Array):
        traces = dyn.trace_decay * carry.branch_traces + drive_t
        memory = memory_update(dyn, carry.memory, traces, config, compute_dtype)
        return ELMState(traces, memory), (traces, memory)

    if remat == "step":
        body = jax.checkpoint(body)
    final, (traces, memory) = jax.lax.scan(body, state, drive, unroll=unroll)
    return final, traces, memory


def linear_trace(decay: jax.Array, inputs: jax.Array) -> jax.Array:
    """Leaky trace ``s_t = decay * s_{t-1} + inputs_t`` from ``s_{-1} = 0``.

    Args:
      decay: scalar or broadcastable to (features,).
      inputs: (batch, time, features).
    Returns: (batch, time, features).
    """
    def body(s, u):
        s = decay * s + u
        return s, s

    _, out = jax.lax.scan(body, jnp.zeros_like(inputs[:, 0]), jnp.swapaxes(inputs, 0, 1))
    return jnp.swapaxes(out, 0, 1)


@functools.partial(jax.jit, static_argnames=("config", "unroll", "remat", "return_states",
                                             "return_final_state", "compute_dtype"))
def apply(params: Params, x: jax.Array, config: ELMConfig, *, unroll: int = 1,
          remat: str = "none", initial: ELMState | None = None,
          return_states: bool = False, return_final_state: bool = False,
          compute_dtype: Any = None) -> Any:
    """Run the ELM over a batch of sequences.

    Args:
      params: parameter dict (`elm_jax.init_params` or `elm_jax.load_torch_checkpoint`).
      x: (batch, time, num_input) inputs; float, integer (e.g. int8 spikes) or bool,
        cast to the parameter dtype.
      config: the model configuration.
      unroll: `lax.scan` unroll factor (an int >= 1).
      remat: ``"none"`` (store every step's residuals for the backward pass) or
        ``"step"`` (`jax.checkpoint` each step: only the carry is stored, the step is
        recomputed in the backward pass).
      initial: optional `ELMState` with arrays (batch, num_branch) and (batch,
        num_memory); zeros (the reference's s_0 = m_0 = 0) by default.
      return_states: also return a dict of state trajectories: ``"memory"`` (batch,
        time, num_memory), ``"branch_traces"`` (batch, time, num_branch) and, for
        ``variant="elm"``, ``"synapse_traces"`` (batch, time, num_synapse), the
        reference's per-synapse traces (computed only when asked for).
      return_final_state: also return the final `ELMState` (to continue a sequence).
      compute_dtype: optional matmul operand dtype, e.g. ``jnp.bfloat16`` for mixed
        precision: parameters, the recurrent state and all accumulations stay in the
        parameter dtype (float32), only matmul operands are cast.
    Returns: y (batch, time, num_output), followed by the states dict and/or the final
      state when requested, as a tuple.

    `apply` is jit-compiled with `config` and the keyword options static; it also
    composes with an outer `jax.jit`, `jax.grad` and `jax.vmap`.
    """
    check_input(x, config, "x", "(batch, time, num_input)", 3)
    if remat not in REMAT_MODES:
        raise ValueError(f"remat={remat!r} is invalid: expected one of {REMAT_MODES}")
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll={unroll!r} is invalid: expected an integer >= 1")
    dyn = prepare(params, config)
    dtype = dyn.input_matrix.dtype
    x = jnp.asarray(x, dtype)
    batch = x.shape[0]
    if initial is None:
        initial = initial_state(config, (batch,), dtype)
    else:
        _check_state(initial, config, batch)
    drive = matmul(jnp.swapaxes(x, 0, 1), dyn.input_matrix, compute_dtype)
    final, traces, memory = _run_core(dyn, drive, initial, config, unroll, remat,
                                      compute_dtype)
    memory = jnp.swapaxes(memory, 0, 1)
    y = readout(dyn, memory, compute_dtype)
    outputs: list[Any] = [y]
    if return_states:
        states = {"memory": memory, "branch_traces": jnp.swapaxes(traces, 0, 1)}
        if config.variant == "elm":
            weighted = route_to_synapses(x, config) * synapse_weights(params)
            states["synapse_traces"] = linear_trace(dyn.trace_decay, weighted)
        outputs.append(states)
    if return_final_state:
        outputs.append(final)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _check_state(state: Any, config: ELMConfig, batch: int) -> None:
    if not isinstance(state, ELMState):
        raise ValueError(f"initial: expected an ELMState, got {type(state).__name__}")
    for name, size in (("branch_traces", config.num_branch), ("memory", config.num_memory)):
        shape = tuple(getattr(getattr(state, name), "shape", ()))
        if shape != (batch, size):
            raise ValueError(f"initial.{name}: expected shape ({batch}, {size}), got {shape}")
