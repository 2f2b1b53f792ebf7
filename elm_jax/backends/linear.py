"""Diagonal linear recurrences ``h_t = a * h_{t-1} + u_t``, sequential or parallel.

Both ELM traces (``b_t = kappa_s b_{t-1} + x_t R``) and, in the parallel ELM variant, the
memory (``m_t = kappa_m m_{t-1} + u dm_t``) are such recurrences with a decay that does
not change over time.  `linear_recurrence` evaluates them with

* ``"sequential"``: `jax.lax.scan`, O(T) depth, the cheapest on CPU;
* ``"associative"``: `jax.lax.associative_scan` on the affine maps ``h -> a h + u``,
  O(log T) depth, the way past the per-step loop cost on GPU/TPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LINEAR_METHODS = ("sequential", "associative")


def _compose(earlier, later):
    # (a1, u1) then (a2, u2): h -> a2 * (a1 * h + u1) + u2
    a1, u1 = earlier
    a2, u2 = later
    return a2 * a1, a2 * u1 + u2


def linear_recurrence(decay: jax.Array, inputs: jax.Array, initial: jax.Array | None = None,
                      *, method: str = "sequential", time_axis: int = 0) -> jax.Array:
    """All states of ``h_t = decay * h_{t-1} + inputs_t`` with ``h_{-1} = initial``.

    Args:
      decay: broadcastable to one time slice of `inputs` (e.g. () or (features,)).
      inputs: (..., time, ...) with time at `time_axis`.
      initial: one time slice (`inputs` without the time axis), zeros if None.
      method: ``"sequential"`` or ``"associative"``.
      time_axis: the time axis of `inputs` (0 for time-major (time, batch, features),
        1 for (batch, time, features)).
    Returns: the states, same shape as `inputs`.
    """
    if method not in LINEAR_METHODS:
        raise ValueError(f"method={method!r} is invalid: expected one of {LINEAR_METHODS}")
    u = jnp.moveaxis(inputs, time_axis, 0)
    decay = jnp.asarray(decay, u.dtype)
    if initial is not None:
        u = u.at[0].add(decay * initial)
    if method == "sequential":
        def body(h, u_t):
            h = decay * h + u_t
            return h, h

        _, h = jax.lax.scan(body, jnp.zeros_like(u[0]), u)
    else:
        a = jnp.broadcast_to(decay, u.shape)
        _, h = jax.lax.associative_scan(_compose, (a, u), axis=0)
    return jnp.moveaxis(h, 0, time_axis)
