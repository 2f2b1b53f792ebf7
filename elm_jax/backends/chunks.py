"""Splitting a time-major sequence into chunks of steps and back."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pad_chunks(x: jax.Array, chunk: int) -> jax.Array:
    """(T, ...) -> (ceil(T/chunk), chunk, ...), zero-padded at the end."""
    steps = x.shape[0]
    n = -(-steps // chunk)
    pad = n * chunk - steps
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    return x.reshape(n, chunk, *x.shape[1:])


def unchunk(x: jax.Array, steps: int) -> jax.Array:
    """(n, chunk, ...) -> (steps, ...): the inverse of `pad_chunks`."""
    return x.reshape(-1, *x.shape[2:])[:steps]
