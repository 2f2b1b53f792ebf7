"""Run the ELM over whole sequences; one `backend=` switch picks the implementation.

Backends (all compute the same function; tests check outputs and gradients agree),
each with its own options object (`elm_jax.backends.options`; docs/backends.md):

* ``"scan"`` (`ScanOptions`) -- the plain sequential step in one `lax.scan`
  (`elm_jax.backends.scan`).
* ``"hoisted"`` (`HoistedOptions`) -- everything that does not depend on the memory
  leaves the loop; only ``kappa_m m_{t-1} -> m_t`` stays sequential, with a custom
  backward (`elm_jax.backends.hoisted`, which also owns its chunk and storage rules).
  For the parallel ELM (``memory_feedback=False``) the MLP runs over all tokens and the
  memory is a linear recurrence.
* ``"associative"`` (`HoistedOptions`) -- as ``"hoisted"`` but the linear recurrences
  use `lax.associative_scan` (O(log T) depth): for GPU/TPU.
* ``"deer"`` (`DeerOptions`) -- experimental: the exact nonlinear memory recurrence
  solved by Newton iterations (`elm_jax.backends.deer`).
* ``"auto"`` -- `resolve_backend`: ``"hoisted"`` on CPU; on GPU/TPU ``"associative"``
  for the parallel ELM (``memory_feedback=False``) and ``"scan"`` for the exact ELM
  (measured on an H200, docs/performance.md: the exact ELM's step loop is faster under
  ``"scan"`` there, while the parallel ELM's associative scans are ~100x faster).

This module only validates, routes the input, dispatches and reads out.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .backends.deer import deer_backend
from .backends.hoisted import HOISTED_CHUNK_FLOATS, hoisted_backend, hoisted_chunk_size
from .backends.linear import linear_recurrence
from .backends.options import resolve_options
from .backends.scan import (AUTO_REMAT_MIN_STEPS, REMAT_MODES, default_chunk_size,
                            resolve_remat, scan_backend)
from .config import ELMConfig
from .core import (ELMState, check_input, check_state, initial_state, matmul, prepare,
                   readout, synapse_weights, varying_like)
from .events import check_events, is_events
from .input_paths import (INPUT_PATHS, final_branch_traces, fold, matrix_drive,
                          resolve_input, structured_drive)
from .params import Params
from .routing import route_to_synapses

BACKENDS = ("auto", "scan", "hoisted", "associative", "deer")

# re-exported for callers of the earlier layout (the rules live in elm_jax.backends)
__all__ = ["AUTO_REMAT_MIN_STEPS", "BACKENDS", "HOISTED_CHUNK_FLOATS", "INPUT_PATHS",
           "REMAT_MODES",
           "apply", "default_chunk_size", "hoisted_chunk_size", "resolve_backend",
           "resolve_remat"]


def resolve_backend(backend: str, config: ELMConfig, platform: str | None = None) -> str:
    """The concrete backend for `backend` (``"auto"`` resolved by platform)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid: expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda", "rocm", "tpu"):
        return "scan" if config.memory_feedback else "associative"
    return "hoisted"


def _run_backend(backend, dyn, drive, initial, config, options) -> tuple:
    if backend == "scan":
        return scan_backend(dyn, drive, initial, config, options)
    if backend in ("hoisted", "associative"):
        method = "sequential" if backend == "hoisted" else "associative"
        return hoisted_backend(dyn, drive, initial, config, options, method)
    return deer_backend(dyn, drive, initial, config, options)


@functools.partial(jax.jit, static_argnames=(
    "config", "backend", "input_path", "options", "return_states", "return_final_state",
    "unroll", "remat", "chunk_size", "compute_dtype", "custom_backward", "deer_options"))
def apply(params: Params, x: jax.Array, config: ELMConfig, *, backend: str = "auto",
          input_path: str = "auto", options: Any = None, initial: ELMState | None = None,
          return_states: bool = False, return_final_state: bool = False,
          unroll: int | None = None, remat: str | None = None,
          chunk_size: int | None = None, compute_dtype: Any = None,
          custom_backward: bool | None = None, deer_options: Any = None) -> Any:
    """Run the ELM over a batch of sequences.

    Args:
      params: parameter dict (`elm_jax.init_params` or `elm_jax.load_torch_checkpoint`).
      x: (batch, time, num_input) inputs; float, integer (e.g. int8 spikes) or bool,
        cast to the parameter dtype; or the same input as an `elm_jax.SpikeEvents`
        (sparse spikes: the routing then costs per event, not per input entry).
      config: the model configuration.
      backend: ``"auto"``, ``"scan"``, ``"hoisted"``, ``"associative"`` or ``"deer"``
        (see the module docstring); ``"auto"`` is resolved before the options are
        checked.
      input_path: how the input reaches the memory update (`elm_jax.input_paths`):
        ``"matrix"`` (dense routing matrix), ``"structured"`` (routing by its
        structure: a scale or a gather), ``"folded"`` (routing, w_s and the trace half
        of the first layer as one input projection, traces in the hidden space) or
        ``"auto"`` (default: the cheapest for `config` and the input by
        `elm_jax.input_paths.input_path_costs`).  All are exact; every backend takes
        every path.
      options: the backend's options object: `elm_jax.backends.ScanOptions`,
        `elm_jax.backends.HoistedOptions` (hoisted, associative) or
        `elm_jax.backends.DeerOptions`; None: the defaults (or the legacy keywords).
      initial: optional `ELMState` with arrays (batch, num_branch) and (batch,
        num_memory); zeros (the reference's s_0 = m_0 = 0) by default.
      return_states: also return a dict of state trajectories: ``"memory"`` (batch,
        time, num_memory), ``"branch_traces"`` (batch, time, num_branch) and, for
        ``variant="elm"``, ``"synapse_traces"`` (batch, time, num_synapse), the
        reference's per-synapse traces (from zero initial synapse traces; computed
        only when asked for).
      return_final_state: also return the final `ELMState` (to continue a sequence).
      unroll, remat, chunk_size, compute_dtype, custom_backward, deer_options: legacy
        flat keywords, converted into the resolved backend's options
        (`elm_jax.backends.options.resolve_options`): a keyword the backend does not
        use raises ValueError unless it has its old default value (``unroll=1``,
        ``remat="auto"``, ``custom_backward=True``); with ``options=`` any of them is
        an error.  ``remat`` on the hoisted backends sets ``store_activations``
        (``"none"``: True, ``"step"``/``"chunk"``: False, ``"auto"``: "auto").
    Returns: y (batch, time, num_output), followed by the states dict and/or the final
      state when requested, as a tuple.

    `apply` is jit-compiled with `config`, `backend` and the options static; it also
    composes with an outer `jax.jit`, `jax.grad`, `jax.vmap`, `jax.jvp` and
    `jax.shard_map` (the transformations each backend supports: docs/backends.md).
    An input without time steps or without sequences (T = 0 or batch = 0) is refused
    with a ValueError on every backend.
    """
    if is_events(x):
        check_events(x, config.num_input)
    else:
        check_input(x, config, "x", "(batch, time, num_input)", 3)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x: expected at least one sequence and one time step, got shape "
                         f"{tuple(x.shape)} (batch, time, num_input)")
    backend = resolve_backend(backend, config)
    options = resolve_options(backend, options, unroll=unroll, remat=remat,
                              chunk_size=chunk_size, compute_dtype=compute_dtype,
                              custom_backward=custom_backward, deer_options=deer_options)
    path, densify = resolve_input(input_path, config, x)
    if densify:
        x = x.to_dense()
    dyn = prepare(params, config)
    w_s = synapse_weights(params)
    dtype = dyn.input_matrix.dtype
    batch = x.shape[0]
    if initial is None:
        initial = initial_state(config, (batch,), dtype)
    else:
        check_state(initial, config, batch)
    if not is_events(x):
        x = jnp.asarray(x, dtype)
    run_dyn, run_initial = dyn, initial
    if path == "folded":  # traces in the first layer's hidden space: p_t = b_t @ W_b
        run_dyn = fold(dyn, w_s, config)
        drive = matrix_drive(x, run_dyn.input_matrix, options.compute_dtype)  # (T, B, h1)
        trace_kernel = dyn.mlp[0]["kernel"][:config.num_branch]
        run_initial = initial._replace(
            branch_traces=matmul(initial.branch_traces, trace_kernel, options.compute_dtype))
    elif path == "structured":
        drive = structured_drive(x, w_s, dyn, config)  # (T, B, nb)
    else:
        drive = matrix_drive(x, dyn.input_matrix, options.compute_dtype)  # (T, B, nb)
    run_initial = varying_like(run_initial, drive)  # inside shard_map: varies like x
    final, traces, memory = _run_backend(backend, run_dyn, drive, run_initial, config,
                                         options)
    if path == "folded" and return_states:  # the branch traces, only when asked for
        traces = linear_recurrence(dyn.trace_decay, structured_drive(x, w_s, dyn, config),
                                   varying_like(initial.branch_traces, drive))
    if path == "folded" and return_final_state:
        last = traces[-1] if return_states else final_branch_traces(
            x, w_s, initial.branch_traces, dyn.trace_decay, config)
        final = final._replace(branch_traces=last)
    # read out time-major and transpose the (small) outputs, not the memory
    y = jnp.swapaxes(readout(dyn, memory, options.compute_dtype), 0, 1)
    outputs: list[Any] = [y]
    if return_states:
        states = {"memory": jnp.swapaxes(memory, 0, 1),
                  "branch_traces": jnp.swapaxes(traces, 0, 1)}
        if config.variant == "elm":
            dense = x.to_dense().astype(dtype) if is_events(x) else x
            weighted = route_to_synapses(dense, config) * w_s
            states["synapse_traces"] = linear_recurrence(dyn.trace_decay, weighted,
                                                         time_axis=1)
        outputs.append(states)
    if return_final_state:
        outputs.append(final)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
