"""``backend="scan"``: the plain sequential step in one `lax.scan`, and its remat rules.

The branch traces and the memory are both in the loop; `ScanOptions.remat` decides
what the backward pass stores (`resolve_remat`, `default_chunk_size`).
"""

from __future__ import annotations

import math

import jax

from ..core import Dynamics, ELMState, memory_update
from .chunks import pad_chunks, unchunk
from .options import REMAT_MODES, ScanOptions

AUTO_REMAT_MIN_STEPS = 2048


def default_chunk_size(steps: int) -> int:
    """Power of two near sqrt(steps), clipped to [8, 256] (memory ~ T/K + K)."""
    return int(min(256, max(8, 2 ** round(math.log2(max(1.0, math.sqrt(steps)))))))


def resolve_remat(remat: str, steps: int) -> str:
    """The concrete remat mode for `remat` at sequence length `steps`: ``"auto"`` is
    ``"chunk"`` from `AUTO_REMAT_MIN_STEPS` steps on, ``"none"`` below."""
    if remat not in REMAT_MODES:
        raise ValueError(f"remat={remat!r} is invalid: expected one of {REMAT_MODES}")
    if remat == "auto":
        return "chunk" if steps >= AUTO_REMAT_MIN_STEPS else "none"
    return remat


def scan_backend(dyn: Dynamics, drive: jax.Array, state: ELMState, config,
                 options: ScanOptions) -> tuple:
    """(final `ELMState`, traces, memory) (time-major) from the routed input `drive`
    (time, batch, num_branch)."""
    steps = drive.shape[0]
    remat = resolve_remat(options.remat, steps)
    unroll, compute_dtype = options.unroll, options.compute_dtype

    def body(carry: ELMState, drive_t: jax.Array):
        traces = dyn.trace_decay * carry.branch_traces + drive_t
        memory = memory_update(dyn, carry.memory, traces, config, compute_dtype)
        return ELMState(traces, memory), (traces, memory)

    if remat == "step":
        body = jax.checkpoint(body)
    if remat != "chunk":
        final, (traces, memory) = jax.lax.scan(body, state, drive, unroll=unroll)
        return final, traces, memory

    chunk = options.chunk_size or default_chunk_size(steps)

    @jax.checkpoint
    def chunk_body(carry, drive_c):
        return jax.lax.scan(body, carry, drive_c, unroll=unroll)

    _, (traces, memory) = jax.lax.scan(chunk_body, state, pad_chunks(drive, chunk))
    traces, memory = unchunk(traces, steps), unchunk(memory, steps)
    return ELMState(traces[-1], memory[-1]), traces, memory
