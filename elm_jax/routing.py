"""Input-to-synapse routing: which input channel feeds each synapse slot.

A routing table is an integer vector of length ``num_synapse = num_branch *
num_synapse_per_branch``; entry ``j`` is the input index feeding synapse ``j`` or ``-1``
for an empty slot.  Synapse ``j`` belongs to branch ``j // num_synapse_per_branch``.

Because the synaptic traces are linear and share one time constant, the per-branch sum
of per-synapse traces equals a trace of the per-branch sum of weighted inputs, so the
model keeps one trace per branch.  The per-branch input ``x_t @ R`` is computed either
with the dense ``(num_input, num_branch)`` matrix ``R`` (`branch_input_matrix`) or by
the table's structure (`route`: a scale for identity routing, a gather and a
per-branch sum for sparse tables); `elm_jax.input_paths` picks one.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from .config import ELMConfig


def interleave_exc_inh(num_input: int) -> np.ndarray:
    """Order ``[e0, i0, e1, i1, ...]`` for inputs laid out as ``[e0..e_{n/2-1}, i0..]``.

    Returns: (num_input,) int64 input indices.
    """
    position = np.arange(num_input)
    return (position % 2) * (num_input // 2) + position // 2


def overlapping_windows(num_input: int, num_windows: int, window: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``window`` consecutive positions, ``ceil(num_input/num_windows)`` apart.

    Returns: positions (num_windows * window,) int64, clipped to ``num_input - 1``, and
    valid (num_windows * window,) bool, False where a window runs past the end.
    """
    stride = math.ceil(num_input / num_windows)
    positions = np.arange(num_windows)[:, None] * stride + np.arange(window)[None, :]
    valid = positions < num_input
    return np.minimum(positions, num_input - 1).reshape(-1), valid.reshape(-1)


@functools.lru_cache(maxsize=64)
def routing_table(config: ELMConfig) -> np.ndarray:
    """The input index of every synapse slot for `config` (``-1`` = empty slot).

    ``config.routing_table`` wins when set (e.g. a table read from a checkpoint);
    otherwise the table is generated as the reference implementation builds it:
    identity for ``"none"``, uniform draws with replacement for ``"random"`` (NumPy
    generator seeded with ``config.routing_seed``; the reference used torch's RNG, so
    draws differ but follow the same distribution), interleaved overlapping windows for
    ``"neuronio"``.

    Returns: (num_synapse,) int32, read-only (cached per config).
    """
    table = _build_routing_table(config)
    table.setflags(write=False)
    return table


def _build_routing_table(config: ELMConfig) -> np.ndarray:
    if config.routing_table is not None:
        return np.asarray(config.routing_table, dtype=np.int32)
    if config.routing == "none":
        return np.arange(config.num_input, dtype=np.int32)
    if config.routing == "random":
        rng = np.random.default_rng(config.routing_seed)
        return rng.integers(0, config.num_input, size=config.num_synapse).astype(np.int32)
    positions, valid = overlapping_windows(config.num_input, config.num_branch,
                                           config.num_synapse_per_branch)
    table = interleave_exc_inh(config.num_input)[positions]
    return np.where(valid, table, -1).astype(np.int32)


@functools.lru_cache(maxsize=64)
def routing_arrays(config: ELMConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The routing table as three (num_synapse,) arrays: the input index of each synapse
    (0 for empty slots), its branch, and whether it is fed (``table >= 0``)."""
    table = routing_table(config)
    valid = table >= 0
    branches = np.arange(config.num_synapse) // config.num_synapse_per_branch
    arrays = (np.where(valid, table, 0).astype(np.int32), branches.astype(np.int32), valid)
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=64)
def is_identity_routing(config: ELMConfig) -> bool:
    """True when synapse ``i`` is input ``i`` and the only synapse of branch ``i``
    (``routing="none"``): then ``x_t @ R`` is the elementwise ``x_t * w_s``."""
    return (config.num_synapse_per_branch == 1 and config.num_branch == config.num_input
            and np.array_equal(routing_table(config), np.arange(config.num_input)))


def num_routed_synapses(config: ELMConfig) -> int:
    """Synapse slots fed by an input (non-empty table entries)."""
    return int(routing_arrays(config)[2].sum())


def branch_input_matrix(w_s: jnp.ndarray, config: ELMConfig) -> jnp.ndarray:
    """Dense matrix ``R`` with ``x_t @ R`` = per-branch sum of ``w_s * routed inputs``.

    ``R[i, b] = sum of w_s[j] over synapses j of branch b fed by input i``.  Built by a
    scatter-add, differentiable in `w_s`.

    Args:
      w_s: (num_synapse,) non-negative synapse weights.
    Returns: (num_input, num_branch) matrix in the dtype of `w_s`.
    """
    inputs, branches, valid = routing_arrays(config)
    weights = jnp.where(jnp.asarray(valid), w_s, jnp.zeros_like(w_s))
    matrix = jnp.zeros((config.num_input, config.num_branch), dtype=w_s.dtype)
    return matrix.at[inputs, branches].add(weights)


def route(x: jnp.ndarray, w_s: jnp.ndarray, config: ELMConfig) -> jnp.ndarray:
    """``x @ R`` by the table's structure, without the dense matrix.

    Identity routing is the elementwise ``x * w_s``; any other table gathers the input
    of every synapse slot, weights it and sums each branch's slots (``num_synapse``
    multiply-adds per token instead of ``num_input * num_branch``, but gathers are slow
    on XLA:CPU: see `elm_jax.input_paths.DENSE_GATHER_COST`).

    Args:
      x: (..., num_input).
      w_s: (num_synapse,) synapse weights.
    Returns: (..., num_branch) in the dtype of `w_s`.
    """
    x = x.astype(w_s.dtype)
    if is_identity_routing(config):
        return x * w_s
    weighted = route_to_synapses(x, config) * w_s  # empty slots are zero
    return weighted.reshape(*x.shape[:-1], config.num_branch,
                            config.num_synapse_per_branch).sum(-1)


def route_to_synapses(x: jnp.ndarray, config: ELMConfig) -> jnp.ndarray:
    """Gather the input of every synapse slot (zero for empty slots).

    Used to report per-synapse traces and by `route`.

    Args:
      x: (..., num_input).
    Returns: (..., num_synapse).
    """
    inputs, _, valid = routing_arrays(config)
    gathered = jnp.take(x, jnp.asarray(inputs), axis=-1)
    return jnp.where(jnp.asarray(valid), gathered, jnp.zeros_like(gathered))
