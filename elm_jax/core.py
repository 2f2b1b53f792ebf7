"""The ELM neuron step, as plain functions.

Per time step (paper Eq. 1; Spieler et al., ICLR 2024), with ``x_t: (..., num_input)``::

    b_t  = kappa_s * b_{t-1} + x_t @ R                  branch traces (R: routing x w_s)
    dm_t = 1.7159 * tanh(2/3 * MLP([b_t, kappa_m * m_{t-1}]))   (MLP(b_t) without
                                                       memory_feedback: parallel ELM)
    m_t  = kappa_m * m_{t-1} + u * dm_t                 memory update
    y_t  = m_t @ W_y + b_y                              readout

with ``kappa_s = exp(-dt / tau_s)``, ``kappa_m = exp(-dt / tau_m)`` and the update scale
``u = lambda * (1 - kappa_m)`` for ``variant="elm"`` or ``u = 1 - exp(-dt * lambda /
tau_m)`` for ``variant="branch_elm"``.  Since the synaptic traces are linear with one
time constant, the branch trace ``b_t`` equals the per-branch sum of the per-synapse
traces ``s_t = kappa_s * s_{t-1} + w_s * x_routed`` of the reference's v1 code: the
model keeps one trace per branch for both variants (see `elm_jax.routing`).

`prepare` turns parameters into the per-call constants `Dynamics` (parameter checks,
the routing-matrix scatter, exp/sigmoid); `step_prepared` is one full time step on
them, `step` is `prepare` + `step_prepared`.  `memory_update` is the only part that
depends on the memory; its MLP is `elm_jax.backends.mlp` (shared by every backend).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .backends.mlp import TANH_SCALE, TANH_SLOPE, MemoryWeights, matmul, scaled_tanh
from .backends.mlp import memory_update as mlp_memory_update
from .config import ELMConfig
from .jax_compat import varying_axes
from .params import Params, check_params
from .routing import branch_input_matrix

__all__ = ["TANH_SCALE", "TANH_SLOPE", "Dynamics", "ELMState", "check_input", "check_state",
           "initial_state", "matmul", "memory_tau", "memory_update", "prepare", "readout",
           "scaled_tanh", "step", "step_prepared", "summed_like", "synapse_weights",
           "varying_like"]


class ELMState(NamedTuple):
    """Recurrent state of a batch of ELM neurons.

    Attributes:
      branch_traces: (..., num_branch) branch (summed synaptic) traces ``b``.
      memory: (..., num_memory) memory units ``m``.
    """

    branch_traces: jax.Array
    memory: jax.Array


class Dynamics(NamedTuple):
    """Constants of one forward call, derived from the parameters by `prepare`.

    Attributes:
      input_matrix: (num_input, num_branch) ``R``, routing and w_s folded together.
      trace_decay: () ``kappa_s``.
      memory_decay: (num_memory,) ``kappa_m``.
      update_scale: (num_memory,) ``u`` (variant-dependent, see module docstring).
      mlp: list of {"kernel": (in, out), "bias": (out,)}.
      readout: {"kernel": (num_memory, num_output), "bias": (num_output,)}.
    """

    input_matrix: jax.Array
    trace_decay: jax.Array
    memory_decay: jax.Array
    update_scale: jax.Array
    mlp: list
    readout: dict

    @property
    def weights(self) -> MemoryWeights:
        """What the memory update depends on (`elm_jax.backends.mlp.MemoryWeights`)."""
        return MemoryWeights(tuple(self.mlp), self.memory_decay, self.update_scale)


def memory_tau(params: Params, config: ELMConfig) -> jax.Array:
    """tau_m (num_memory,) in ms: the scaled sigmoid of ``tau_m_raw`` (frozen unless learned)."""
    raw = params["tau_m_raw"]
    if not config.learn_memory_tau:
        raw = jax.lax.stop_gradient(raw)
    lo, hi = config.memory_tau_min, config.memory_tau_max
    return (hi - lo) * jax.nn.sigmoid(raw) + lo


def synapse_weights(params: Params) -> jax.Array:
    """w_s (num_synapse,) = relu(w_s_raw), kept non-negative."""
    return jax.nn.relu(params["w_s_raw"])


def prepare(params: Params, config: ELMConfig) -> Dynamics:
    """Derive the per-call constants of the dynamics from `params` (validated)."""
    check_params(params, config)
    dtype = params["w_s_raw"].dtype
    tau_m = jnp.maximum(memory_tau(params, config), 1e-6)
    memory_decay = jnp.exp(-config.delta_t / tau_m)
    if config.variant == "elm":
        update_scale = config.lambda_value * (1.0 - memory_decay)
    else:
        update_scale = 1.0 - jnp.exp(-config.delta_t * config.lambda_value / tau_m)
    trace_decay = jnp.exp(jnp.asarray(-config.delta_t / max(config.tau_s, 1e-6), dtype))
    return Dynamics(
        input_matrix=branch_input_matrix(synapse_weights(params), config),
        trace_decay=trace_decay,
        memory_decay=memory_decay,
        update_scale=update_scale,
        mlp=list(params["mlp"]),
        readout=params["readout"],
    )


def memory_update(dyn: Dynamics, memory: jax.Array, branch_traces: jax.Array,
                  config: ELMConfig, compute_dtype=None) -> jax.Array:
    """New memory ``m_t`` from ``m_{t-1}`` and the current branch traces ``b_t``
    (`elm_jax.backends.mlp.memory_update` on ``dyn.weights``).

    Args:
      dyn: constants from `prepare`.
      memory: (..., num_memory) ``m_{t-1}``.
      branch_traces: (..., num_branch) ``b_t``.
      compute_dtype: optional matmul operand dtype (see `matmul`); the state and the
        accumulation stay in the parameter dtype.
    Returns: (..., num_memory) ``m_t``.
    """
    return mlp_memory_update(dyn.weights, memory, branch_traces, config, compute_dtype)


def readout(dyn: Dynamics, memory: jax.Array, compute_dtype=None) -> jax.Array:
    """Linear readout ``y = m @ W_y + b_y``: (..., num_memory) -> (..., num_output)."""
    return matmul(memory, dyn.readout["kernel"], compute_dtype) + dyn.readout["bias"]


def initial_state(config: ELMConfig, batch_shape: tuple[int, ...] = (),
                  dtype=jnp.float32) -> ELMState:
    """All-zero state (the reference's s_0 = 0, m_0 = 0) for a batch of `batch_shape`."""
    return ELMState(jnp.zeros((*batch_shape, config.num_branch), dtype),
                    jnp.zeros((*batch_shape, config.num_memory), dtype))


def varying_like(tree, like: jax.Array):
    """`tree` cast to vary over the same manual mesh axes as `like` (inside
    `jax.shard_map`; a no-op elsewhere).

    Zero initial states and zero gradient accumulators are created unvarying; a loop
    carry that meets per-shard data must vary like it, or `lax.scan` rejects the carry.
    """
    vma = varying_axes(like)
    if not vma:
        return tree

    def cast(a):
        missing = tuple(sorted(vma - varying_axes(a)))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return jax.tree_util.tree_map(cast, tree)


def summed_like(cotangents, primals):
    """Cotangents summed over the manual mesh axes their primals do not vary over (a
    custom VJP's gradient of a replicated parameter inside `jax.shard_map`); a no-op
    elsewhere."""
    def reduce(ct, primal):
        extra = tuple(sorted(varying_axes(ct) - varying_axes(primal)))
        return jax.lax.psum(ct, extra) if extra else ct

    return jax.tree_util.tree_map(reduce, cotangents, primals)


def check_input(x: jax.Array, config: ELMConfig, name: str, layout: str,
                ndim: int | None) -> None:
    """Raise ValueError if `x` is not an array, or has the wrong rank, feature size or
    dtype."""
    if not hasattr(x, "shape"):
        raise ValueError(f"{name}: expected an array of shape {layout}, got a "
                         f"{type(x).__name__} (convert it with jnp.asarray)")
    shape = tuple(x.shape)
    if (ndim is not None and len(shape) != ndim) or not shape or \
            shape[-1] != config.num_input:
        raise ValueError(f"{name}: expected shape {layout} with num_input="
                         f"{config.num_input}, got {shape}")
    dtype = getattr(x, "dtype", None)
    if dtype is None or not (jnp.issubdtype(dtype, jnp.floating)
                             or jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
        raise ValueError(f"{name}: expected a real float, integer or bool dtype, got {dtype}")


def check_state(state, config: ELMConfig, batch: int | tuple[int, ...],
                name: str = "initial") -> None:
    """Raise ValueError unless `state` is an `ELMState` for a batch of shape `batch` (an
    int: one batch axis; a tuple: the leading shape, e.g. ``x_t.shape[:-1]``)."""
    if not isinstance(state, ELMState):
        raise ValueError(f"{name}: expected an ELMState, got {type(state).__name__}")
    lead = (batch,) if isinstance(batch, int) else tuple(batch)
    for field, size in (("branch_traces", config.num_branch), ("memory", config.num_memory)):
        shape = tuple(getattr(getattr(state, field), "shape", ()))
        if shape != (*lead, size):
            raise ValueError(f"{name}.{field}: expected shape {(*lead, size)}, got "
                             f"{shape} (the input's leading shape + ({size},))")


def step_prepared(dyn: Dynamics, state: ELMState, x_t: jax.Array, config: ELMConfig
                  ) -> tuple[ELMState, jax.Array]:
    """One ELM time step on constants from `prepare` (no checks, nothing re-derived).

    Args:
      dyn: `prepare(params, config)`, computed once per sequence (or per parameter
        update) by the caller.
      state: `ELMState` with branch_traces (..., num_branch), memory (..., num_memory).
      x_t: (..., num_input) input at this step (cast to the parameter dtype).
      config: the model configuration.
    Returns: ``(new_state, y_t)`` with y_t (..., num_output).
    """
    x_t = jnp.asarray(x_t, dyn.input_matrix.dtype)
    traces = dyn.trace_decay * state.branch_traces + x_t @ dyn.input_matrix
    memory = memory_update(dyn, state.memory, traces, config)
    return ELMState(traces, memory), readout(dyn, memory)


def step(params: Params, state: ELMState, x_t: jax.Array, config: ELMConfig
         ) -> tuple[ELMState, jax.Array]:
    """One ELM time step: `prepare` (with checks) then `step_prepared`.

    Args:
      params: parameter dict (`elm_jax.init_params`).
      state: `ELMState` with branch_traces (..., num_branch), memory (..., num_memory),
        the same leading shape as `x_t` (checked: a mismatched or broadcasting state
        is a ValueError).
      x_t: (..., num_input) input at this step (float, int or bool; cast to the
        parameter dtype).
      config: the model configuration.
    Returns: ``(new_state, y_t)`` with y_t (..., num_output).

    For many steps with the same parameters outside one jit, call `prepare` once and
    `step_prepared` per step.
    """
    check_input(x_t, config, "x_t", "(..., num_input)", None)
    check_state(state, config, tuple(x_t.shape[:-1]), "state")
    return step_prepared(prepare(params, config), state, x_t, config)
