"""Run the ELM over whole sequences; one `backend=` switch picks the implementation.

Backends (all compute the same function; tests check outputs and gradients agree):

* ``"scan"`` -- the plain sequential step in one `lax.scan` (traces and memory in the
  loop).  Routing and readout are single matmuls outside the loop either way.
  ``remat`` controls what its backward pass stores.
* ``"hoisted"`` -- everything that does not depend on the memory leaves the loop: the
  branch traces (a diagonal linear recurrence, here a sequential scan), the trace half
  of the first MLP layer (one matmul per chunk of steps), the readout; only
  ``kappa_m m_{t-1} -> m_t`` stays sequential, with a custom backward
  (`elm_jax.backends.hoisted`).  For the parallel ELM (``memory_feedback=False``) the
  MLP runs position-wise over all tokens and the memory is a linear recurrence.
* ``"associative"`` -- as ``"hoisted"`` but the linear recurrences use
  `lax.associative_scan` (O(log T) depth): for GPU/TPU.  With ``memory_feedback=False``
  the whole model is parallel over time.
* ``"deer"`` -- experimental: the exact nonlinear memory recurrence solved by Newton
  iterations whose linearised recurrences run as associative scans
  (`elm_jax.backends.deer`).
* ``"auto"`` -- `resolve_backend`: ``"hoisted"`` on CPU (the benchmark suite measured it
  faster than ``"scan"`` for training in 17 of 18 cells, 1.06-2.17x, and as fast or
  faster forward), ``"associative"`` on GPU/TPU.

Remat modes (``"scan"`` backend): ``"none"`` stores every step's residuals, ``"step"``
checkpoints each step (stores the carry only), ``"chunk"`` checkpoints chunks of
``chunk_size`` steps (nested scan; memory ~ T/K + K steps), ``"auto"`` uses ``"chunk"``
from 2,048 steps on and ``"none"`` below.  The hoisted backends' custom backward
stores only the memory trajectory and recomputes the MLP activations, unless
``remat="none"`` (or ``"auto"`` for a large MLP whose activations fit in 256 MiB,
`elm_jax.backends.hoisted.should_store_activations`) has the forward loop store them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from .backends.hoisted import (chunk_floats_per_token, core_weights, memory_core,
                               should_store_activations)
from .backends.linear import linear_recurrence
from .config import ELMConfig
from .core import (Dynamics, ELMState, check_input, initial_state, matmul, memory_update,
                   prepare, readout, scaled_tanh, synapse_weights, varying_like, _activation)
from .events import branch_drive, check_events, is_events
from .params import Params
from .routing import route_to_synapses

BACKENDS = ("auto", "scan", "hoisted", "associative", "deer")
REMAT_MODES = ("auto", "none", "step", "chunk")
AUTO_REMAT_MIN_STEPS = 2048


def resolve_backend(backend: str, config: ELMConfig, platform: str | None = None) -> str:
    """The concrete backend for `backend` (``"auto"`` resolved by platform and model)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid: expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda", "rocm", "tpu"):
        return "associative"
    return "hoisted"


def default_chunk_size(steps: int) -> int:
    """Power of two near sqrt(steps), clipped to [8, 256] (memory ~ T/K + K)."""
    return int(min(256, max(8, 2 ** round(math.log2(max(1.0, math.sqrt(steps)))))))


HOISTED_CHUNK_FLOATS = 1 << 21  # 8 MiB of float32 temporaries per chunk


def hoisted_chunk_size(steps: int, batch: int, config: ELMConfig) -> int:
    """Default chunk of the hoisted memory core: as long as the chunk's temporaries fit.

    The custom backward recomputes a chunk's MLP activations at once, holding about
    ``2 * sum(hidden sizes) + 3 * num_memory + num_branch`` floats per token (plus
    ``num_memory**2`` when its reverse loop uses per-token Jacobians, see
    `elm_jax.backends.hoisted.chunk_floats_per_token`).  Longer
    chunks mean fewer, larger matmuls and fewer loop launches (at T = 500, batch 8 one
    chunk of 500 steps trains the NeuronIO model 1.35x faster than chunks of 16), so
    the chunk is the whole sequence when that fits in `HOISTED_CHUNK_FLOATS` (8 MiB),
    else the largest power of two that does (at least 8 steps).
    """
    fit = HOISTED_CHUNK_FLOATS // max(1, batch * chunk_floats_per_token(config))
    if fit >= steps:
        return int(steps)
    return int(max(8, 2 ** int(math.floor(math.log2(max(1, fit))))))


def resolve_remat(remat: str, steps: int) -> str:
    """The concrete remat mode for `remat` at sequence length `steps`."""
    if remat not in REMAT_MODES:
        raise ValueError(f"remat={remat!r} is invalid: expected one of {REMAT_MODES}")
    if remat == "auto":
        return "chunk" if steps >= AUTO_REMAT_MIN_STEPS else "none"
    return remat


def _scan_backend(dyn: Dynamics, drive: jax.Array, state: ELMState, config: ELMConfig,
                  unroll: int, remat: str, chunk: int, compute_dtype) -> tuple:
    def body(carry: ELMState, drive_t: jax.Array):
        traces = dyn.trace_decay * carry.branch_traces + drive_t
        memory = memory_update(dyn, carry.memory, traces, config, compute_dtype)
        return ELMState(traces, memory), (traces, memory)

    if remat == "step":
        body = jax.checkpoint(body)
    if remat != "chunk":
        final, (traces, memory) = jax.lax.scan(body, state, drive, unroll=unroll)
        return final, traces, memory

    steps = drive.shape[0]
    n = -(-steps // chunk)
    padded = jnp.concatenate([drive, jnp.zeros((n * chunk - steps, *drive.shape[1:]),
                                               drive.dtype)]) if n * chunk > steps else drive

    @jax.checkpoint
    def chunk_body(carry, drive_c):
        return jax.lax.scan(body, carry, drive_c, unroll=unroll)

    _, (traces, memory) = jax.lax.scan(chunk_body, state,
                                       padded.reshape(n, chunk, *drive.shape[1:]))
    traces = traces.reshape(-1, *traces.shape[2:])[:steps]
    memory = memory.reshape(-1, *memory.shape[2:])[:steps]
    return ELMState(traces[-1], memory[-1]), traces, memory


def _mlp_all_tokens(dyn: Dynamics, traces: jax.Array, config: ELMConfig,
                    compute_dtype) -> jax.Array:
    """scaled_tanh(MLP(b)) for every token (parallel ELM: the MLP does not see m)."""
    act = _activation(config)
    h = matmul(traces, dyn.mlp[0]["kernel"], compute_dtype) + dyn.mlp[0]["bias"]
    for layer in dyn.mlp[1:]:
        h = matmul(act(h), layer["kernel"], compute_dtype) + layer["bias"]
    return scaled_tanh(h)


def _hoisted_backend(dyn: Dynamics, drive: jax.Array, state: ELMState, config: ELMConfig,
                     method: str, unroll: int, chunk: int, compute_dtype,
                     custom_backward: bool, store_activations: bool) -> tuple:
    traces = linear_recurrence(dyn.trace_decay, drive, state.branch_traces, method=method)
    if config.memory_feedback:
        memory = memory_core(core_weights(dyn, config), traces, state.memory,
                             activation=config.mlp_activation, chunk=chunk, unroll=unroll,
                             compute_dtype=compute_dtype, custom_backward=custom_backward,
                             store_activations=store_activations)
    else:
        delta = _mlp_all_tokens(dyn, traces, config, compute_dtype)
        memory = linear_recurrence(dyn.memory_decay, dyn.update_scale * delta, state.memory,
                                   method=method)
    return ELMState(traces[-1], memory[-1]), traces, memory


@functools.partial(jax.jit, static_argnames=(
    "config", "backend", "unroll", "remat", "chunk_size", "return_states",
    "return_final_state", "compute_dtype", "custom_backward", "deer_options"))
def apply(params: Params, x: jax.Array, config: ELMConfig, *, backend: str = "auto",
          unroll: int = 1, remat: str = "auto", chunk_size: int | None = None,
          initial: ELMState | None = None, return_states: bool = False,
          return_final_state: bool = False, compute_dtype: Any = None,
          custom_backward: bool = True, deer_options: Any = None) -> Any:
    """Run the ELM over a batch of sequences.

    Args:
      params: parameter dict (`elm_jax.init_params` or `elm_jax.load_torch_checkpoint`).
      x: (batch, time, num_input) inputs; float, integer (e.g. int8 spikes) or bool,
        cast to the parameter dtype; or the same input as an `elm_jax.SpikeEvents`
        (sparse spikes: the routing then costs per event, not per input entry).
      config: the model configuration.
      backend: ``"auto"``, ``"scan"``, ``"hoisted"``, ``"associative"`` or ``"deer"``
        (see the module docstring).
      unroll: `lax.scan` unroll factor of the sequential loops (an int >= 1).
      remat: ``"auto"``, ``"none"``, ``"step"`` or ``"chunk"`` (``"scan"`` backend;
        for the hoisted backends it decides whether the MLP activations are stored or
        recomputed, see the module docstring).
      chunk_size: steps per chunk for ``remat="chunk"`` (default `default_chunk_size`,
        about sqrt(time)) and for the hoisted memory core (default
        `hoisted_chunk_size`: the whole sequence when its temporaries fit in 8 MiB).
      initial: optional `ELMState` with arrays (batch, num_branch) and (batch,
        num_memory); zeros (the reference's s_0 = m_0 = 0) by default.
      return_states: also return a dict of state trajectories: ``"memory"`` (batch,
        time, num_memory), ``"branch_traces"`` (batch, time, num_branch) and, for
        ``variant="elm"``, ``"synapse_traces"`` (batch, time, num_synapse), the
        reference's per-synapse traces (from zero initial synapse traces; computed
        only when asked for).
      return_final_state: also return the final `ELMState` (to continue a sequence).
      compute_dtype: optional matmul operand dtype, e.g. ``jnp.bfloat16`` for mixed
        precision: parameters, the recurrent state and all accumulations stay in the
        parameter dtype (float32), only matmul operands are cast.
      custom_backward: hoisted backends: use the custom VJP of the memory core (True)
        or plain autodiff of the same loop (False, for benchmarking).
      deer_options: ``"deer"`` backend: an `elm_jax.backends.deer.DeerOptions`.
    Returns: y (batch, time, num_output), followed by the states dict and/or the final
      state when requested, as a tuple.

    `apply` is jit-compiled with `config` and the keyword options static; it also
    composes with an outer `jax.jit`, `jax.grad` and `jax.vmap`.
    """
    if is_events(x):
        check_events(x, config.num_input)
    else:
        check_input(x, config, "x", "(batch, time, num_input)", 3)
    steps = x.shape[1]
    backend = resolve_backend(backend, config)
    remat = resolve_remat(requested_remat := remat, steps)
    store_activations = backend in ("hoisted", "associative") and should_store_activations(
        requested_remat, config, steps, x.shape[0],
        jnp.dtype(params["w_s_raw"].dtype).itemsize)
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll={unroll!r} is invalid: expected an integer >= 1")
    if chunk_size is None:
        chunk_size = (default_chunk_size(steps) if backend in ("scan", "deer")
                      else hoisted_chunk_size(steps, x.shape[0], config))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid: expected an integer >= 1")
    dyn = prepare(params, config)
    dtype = dyn.input_matrix.dtype
    batch = x.shape[0]
    if initial is None:
        initial = initial_state(config, (batch,), dtype)
    else:
        _check_state(initial, config, batch)
    if is_events(x):
        drive = branch_drive(x, dyn.input_matrix)  # (T, B, nb)
    else:
        # route batch-major and transpose the (narrow) result, not the (wide) input
        x = jnp.asarray(x, dtype)
        drive = jnp.swapaxes(matmul(x, dyn.input_matrix, compute_dtype), 0, 1)
    initial = varying_like(initial, drive)  # inside shard_map: the carry varies like x
    if backend == "scan":
        final, traces, memory = _scan_backend(dyn, drive, initial, config, unroll, remat,
                                              chunk_size, compute_dtype)
    elif backend in ("hoisted", "associative"):
        method = "sequential" if backend == "hoisted" else "associative"
        final, traces, memory = _hoisted_backend(dyn, drive, initial, config, method, unroll,
                                                 chunk_size, compute_dtype, custom_backward,
                                                 store_activations)
    else:
        from .backends.deer import deer_backend

        final, traces, memory = deer_backend(dyn, drive, initial, config, deer_options)
    # read out time-major and transpose the (small) outputs, not the memory
    y = jnp.swapaxes(readout(dyn, memory, compute_dtype), 0, 1)
    outputs: list[Any] = [y]
    if return_states:
        states = {"memory": jnp.swapaxes(memory, 0, 1),
                  "branch_traces": jnp.swapaxes(traces, 0, 1)}
        if config.variant == "elm":
            dense = x.to_dense().astype(dtype) if is_events(x) else x
            weighted = route_to_synapses(dense, config) * synapse_weights(params)
            states["synapse_traces"] = linear_recurrence(dyn.trace_decay, weighted,
                                                         time_axis=1)
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
