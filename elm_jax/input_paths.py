"""How the input reaches the memory update: three exact input paths and the rule that picks one.

The branch traces are a linear recurrence with one shared decay ``kappa_s``::

    b_t = kappa_s b_{t-1} + x_t @ R          R: (num_input, num_branch), routing x w_s

and the memory update only sees them through the trace half of the first MLP layer,
``b_t @ W_b`` (W_b: (num_branch, h1)).  That product commutes with the recurrence, so
``p_t = b_t @ W_b`` obeys ``p_t = kappa_s p_{t-1} + x_t @ F`` with the *folded input
projection* ``F = R @ W_b`` (num_input, h1).  `apply` can therefore feed the input in
three ways, all computing the same function (the tests check outputs and gradients
in float64 to 1e-10):

* ``"matrix"``: ``x_t @ R`` with the dense routing matrix (num_input x num_branch
  multiply-adds per token), branch traces, then ``b_t @ W_b`` per token in the backend.
* ``"structured"``: the routing by its structure (`elm_jax.routing.route`): identity
  routing (``routing="none"``) is an elementwise scale by ``w_s``, sparse tables
  (NeuronIO, random) a gather of ``num_synapse`` inputs and a per-branch sum.  From
  `elm_jax.SpikeEvents`, identity routing scatters one scalar per event, sparse
  routings one row of ``R`` per event.
* ``"folded"``: ``x_t @ F`` (or one gathered row of ``F`` per event), the trace
  recurrence in the h1-wide hidden space, and no trace half in the first layer; the
  weight gradient of ``F`` is a matmul (dense input) or a scatter per event, and
  ``F``'s own gradient reaches ``w_s`` and ``W_b`` through its (cheap, per-synapse)
  construction `folded_matrix`.  Branch traces are computed only when asked for
  (``return_states``, ``return_final_state``).

``"auto"`` (`resolve_input`) picks the path with the lowest `input_path_costs`:
multiply-adds per token of the routing, the trace recurrence and the trace half of the
first layer, where a gathered or scattered element counts as a number of multiply-adds
of a dense product: `DENSE_GATHER_COST` for an element gathered from a dense input
(slow on XLA:CPU), `EVENT_GATHER_COST` for an element of a row gathered or scattered per
event.  Both constants come from CPU measurements (docs/performance.md); they are used
unchanged, untested, on GPU/TPU.  Event inputs count by their capacity per time step (an
upper bound); when a dense path plus one scatter per event is cheaper than every event
path, `apply` turns the events into a dense array first.  On CPU this gives
``"folded"`` for the published NeuronIO Branch-ELMs (dense: 1278 x h1 instead of
1278 x 45 + 45 x h1 per token; events: one h1-wide row each) and for the SHD ELM
(identity routing: 700 x 200 per token dense, and 200-wide instead of 700-wide traces).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .backends.mlp import FOLDED_KERNEL, matmul
from .config import ELMConfig
from .core import Dynamics
from .events import SpikeEvents, branch_drive, is_events
from .routing import is_identity_routing, num_routed_synapses, route, routing_arrays

INPUT_PATHS = ("auto", "matrix", "structured", "folded")

# cost of one gathered/scattered element in multiply-adds of a dense product (see the
# module docstring): from a dense input, and one element of a per-event row
DENSE_GATHER_COST = 200.0
EVENT_GATHER_COST = 64.0


def input_path_costs(config: ELMConfig, events_per_step: float | None = None
                     ) -> dict[str, float]:
    """Estimated forward cost per token (multiply-adds) of each concrete input path.

    Args:
      config: the model configuration.
      events_per_step: events per (sequence, time step) for `elm_jax.SpikeEvents`
        input; None for a dense input.
    Returns: ``{"matrix": ..., "structured": ..., "folded": ...}``.
    """
    ni, nb, h1 = config.num_input, config.num_branch, config.mlp_hidden_size
    identity = is_identity_routing(config)
    trace_half = nb * h1 + nb  # b_t @ W_b and the branch-trace recurrence
    if events_per_step is None:
        matrix = ni * nb
        structured = ni if identity else DENSE_GATHER_COST * num_routed_synapses(config)
        folded = ni * h1
    else:
        per_event = EVENT_GATHER_COST * events_per_step
        matrix = per_event * nb
        structured = per_event if identity else matrix
        folded = per_event * h1
    return {"matrix": matrix + trace_half, "structured": structured + trace_half,
            "folded": folded + h1}


def resolve_input_path(input_path: str, config: ELMConfig, x: Any = None) -> str:
    """The concrete input path for `input_path` (``"auto"``: the cheapest by
    `input_path_costs` for the input `x`, dense or `SpikeEvents`)."""
    return resolve_input(input_path, config, x)[0]


def resolve_input(input_path: str, config: ELMConfig, x: Any = None) -> tuple[str, bool]:
    """``(path, densify)``: the concrete input path, and for `SpikeEvents` input whether
    `apply` should turn the events into a dense array first (with ``"auto"``, when so
    many events per step come that a dense path plus one scatter per event is cheaper
    than every event path; an explicit `input_path` keeps the events)."""
    if input_path not in INPUT_PATHS:
        raise ValueError(f"input_path={input_path!r} is invalid: expected one of "
                         f"{INPUT_PATHS}")
    if input_path != "auto":
        return input_path, False
    dense = input_path_costs(config)
    best_dense = min(dense, key=dense.get)
    if not is_events(x):
        return best_dense, False
    events_per_step = x.capacity / x.num_steps
    costs = input_path_costs(config, events_per_step)
    best = min(costs, key=costs.get)
    if dense[best_dense] + EVENT_GATHER_COST * events_per_step < costs[best]:
        return best_dense, True
    return best, False


def folded_matrix(w_s: jax.Array, trace_kernel: jax.Array, config: ELMConfig) -> jax.Array:
    """``F = R @ W_b``, built per synapse (``F[input of j] += w_s[j] W_b[branch of j]``).

    Args:
      w_s: (num_synapse,) synapse weights.
      trace_kernel: (num_branch, h1) the trace half ``W_b`` of the first layer.
    Returns: (num_input, h1).
    """
    inputs, branches, valid = routing_arrays(config)
    rows = jnp.where(jnp.asarray(valid)[:, None], w_s[:, None] * trace_kernel[branches], 0.0)
    matrix = jnp.zeros((config.num_input, trace_kernel.shape[1]), rows.dtype)
    return matrix.at[inputs].add(rows)


def fold(dyn: Dynamics, w_s: jax.Array, config: ELMConfig) -> Dynamics:
    """`Dynamics` of the folded path: ``input_matrix`` is ``F`` (num_input, h1) and the
    first MLP layer keeps only its memory half (``{FOLDED_KERNEL: (rows, h1), "bias"}``,
    see `elm_jax.backends.mlp.first_layer`), so the "traces" the backends integrate are
    ``p_t = b_t @ W_b`` (..., h1)."""
    first = dyn.mlp[0]
    nb = config.num_branch
    folded_first = {FOLDED_KERNEL: first["kernel"][nb:], "bias": first["bias"]}
    return dyn._replace(input_matrix=folded_matrix(w_s, first["kernel"][:nb], config),
                        mlp=[folded_first, *dyn.mlp[1:]])


def structured_drive(x: Any, w_s: jax.Array, dyn: Dynamics, config: ELMConfig
                     ) -> jax.Array:
    """Time-major branch input ``x_t @ R`` by the routing's structure.

    Args:
      x: (batch, time, num_input) dense input (already in the parameter dtype) or
        `SpikeEvents`.
      w_s: (num_synapse,) synapse weights.
      dyn: the unfolded `Dynamics` (its ``input_matrix`` ``R`` is gathered per event
        for sparse routings).
    Returns: (time, batch, num_branch) in the parameter dtype (the routing is exact;
      a ``compute_dtype`` applies to the matmuls after it).
    """
    if is_events(x):
        if is_identity_routing(config):
            return _identity_event_drive(x, w_s)
        return branch_drive(x, dyn.input_matrix)
    return jnp.swapaxes(route(x, w_s, config), 0, 1)


def _identity_event_drive(events: SpikeEvents, w_s: jax.Array) -> jax.Array:
    """(time, batch, num_input) drive ``x_t * w_s`` from events: one scalar per event."""
    batch, steps, num_input = events.shape
    value = jnp.asarray(events.value).astype(w_s.dtype) * jnp.take(w_s, events.channel)
    drive = jnp.zeros((steps, batch, num_input), w_s.dtype)
    return drive.at[events.time, jnp.arange(batch)[:, None], events.channel].add(value)


def matrix_drive(x: Any, matrix: jax.Array, compute_dtype: Any = None) -> jax.Array:
    """Time-major ``x_t @ matrix`` (time, batch, width) from a dense (batch, time,
    num_input) `x` or `SpikeEvents` (one gathered row per event)."""
    if is_events(x):
        return branch_drive(x, matrix)
    # multiply batch-major and transpose the (narrow) result, not the (wide) input
    return jnp.swapaxes(matmul(x, matrix, compute_dtype), 0, 1)


def final_branch_traces(x: Any, w_s: jax.Array, initial: jax.Array, decay: jax.Array,
                        config: ELMConfig) -> jax.Array:
    """``b_T`` (batch, num_branch) without the trajectory: the routed, decay-weighted
    input sum ``(sum_t kappa_s^(T-1-t) x_t) @ R`` plus ``kappa_s^T b_0``.

    Args:
      x: (batch, time, num_input) dense input or `SpikeEvents`.
      w_s: (num_synapse,) synapse weights.
      initial: (batch, num_branch) ``b_0``.
      decay: () ``kappa_s``.
    """
    steps = x.shape[1]
    powers = decay ** jnp.arange(steps - 1, -1, -1, dtype=initial.dtype)  # kappa^(T-1-t)
    if is_events(x):
        batch = x.shape[0]
        value = jnp.asarray(x.value).astype(initial.dtype) * powers[x.time]
        summed = jnp.zeros((batch, x.num_input), initial.dtype)
        summed = summed.at[jnp.arange(batch)[:, None], x.channel].add(value)
    else:
        summed = jnp.einsum("btc,t->bc", x, powers)
    return route(summed, w_s, config) + decay ** steps * initial

