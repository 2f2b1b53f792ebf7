"""Experimental ``backend="deer"``: the exact ELM memory recurrence solved in parallel
over time by Newton's method (DEER; Lim et al., ICLR 2024, arXiv 2309.12252).

Method.  The branch traces are computed first (an associative scan,
`elm_jax.backends.linear`).  The memory trajectory ``M = (m_0 .. m_{T-1})`` is the root
of ``r_t(M) = m_t - f(m_{t-1}, b_t)`` with ``f`` = `elm_jax.backends.mlp.memory_update`
(the function every backend iterates, so the solution is what ``backend="scan"``
computes, with the same ``compute_dtype``).  Newton iteration ``k`` linearises ``f``
around the current guess (``J_t = df/dm`` at ``m^k_{t-1}``, from the chain rule
through the MLP's pre-activations, `_jacobian_t`) and solves the linear time-varying
recurrence ``m_t = J_t m_{t-1} + (f(p_t) - J_t p_t)`` with `jax.lax.associative_scan`
(O(log T) depth, O(T d_m^3) work).  The first guess repeats the initial memory.

Guarantees.  Undamped, iteration ``k`` makes the first ``k`` steps exact, so Newton
needs at most ``T`` iterations in exact arithmetic (usually far fewer).  With
``DeerOptions.project`` (default) every iterate is clipped into the box that holds
every true trajectory (`invariant_bound`), which never moves the solution and stops
iterates from overflowing.  The iteration stops when ``max |m_t - f(m_{t-1}, b_t)| <=
tol * max(1, max |m_t|)``; `DeerInfo` reports the residual, the threshold and the
iteration count.  ``damping = d > 0`` (convex step damping) gives up both the at-most-T
bound and quadratic convergence.  ``jacobian="diagonal"`` is quasi-DEER (elementwise
scans; it converges badly on ELM's slow leaks).

Gradients: implicit (adjoint) method at the converged trajectory, ``a_t = g_t +
J_{t+1}^T a_{t+1}`` as a reverse associative scan with full Jacobians, then one VJP of
``f`` over all steps.  Forward mode (`jax.jvp`, `jax.jacfwd`) is the transpose of that
adjoint (`elm_jax.backends.forward_mode`).

Failure (``DeerOptions.on_failure``): ``"raise"`` raises `DeerNotConvergedError`
(eagerly) or, under jit, a ``JaxRuntimeError`` from a host callback carrying its
message; ``"nan"`` gives NaN memory for every sequence above ``tol``; ``"ignore"``
returns the last iterate.  A non-finite residual stops the iteration (not converged).

Cost: O(T d_m^2) memory and O(T d_m^3) work per iteration against O(T d_m h) once for
the scan; it can only win where the sequential loop is latency-bound (accelerators,
long T, small d_m, contractive dynamics).  Measurements: docs/backends.md.

Public API: `DeerOptions` (from `elm_jax.backends.options`), `DeerInfo`,
`DeerNotConvergedError`, `deer_memory`, `deer_apply`, `deer_backend` (what
`elm_jax.apply` calls), `matrix_recurrence`, `invariant_bound`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..config import ELMConfig
from ..core import (Dynamics, ELMState, check_input, check_state, initial_state, matmul,
                    prepare, readout, varying_like)
from .forward_mode import tangent_by_transposed_vjp
from .hoisted import hoisted_backend
from .linear import linear_recurrence
from .mlp import (TANH_SCALE, MemoryWeights, activation, memory_update, scaled_tanh_grad,
                  split_first_layer)
from .options import JACOBIANS, ON_FAILURE, DeerOptions, HoistedOptions

__all__ = ["DeerInfo", "DeerNotConvergedError", "DeerOptions", "JACOBIANS", "ON_FAILURE",
           "deer_apply", "deer_backend", "deer_memory", "invariant_bound",
           "matrix_recurrence"]


class DeerNotConvergedError(RuntimeError):
    """Raised when the DEER Newton iteration stops above its tolerance."""


class DeerInfo(NamedTuple):
    """What the Newton solve did.

    Attributes:
      iterations: () int32, Newton iterations taken (0 if the first guess was good).
      residual: () final ``max |m_t - f(m_{t-1}, b_t)|`` over time, batch and units.
      threshold: () what it was compared with: ``tol * max(1, max |m_t|)``.
      converged: () bool, ``residual <= threshold`` (False if non-finite).
    """

    iterations: jax.Array
    residual: jax.Array
    threshold: jax.Array
    converged: jax.Array


def _check_options(options: Any) -> DeerOptions:
    if options is None:
        return DeerOptions()
    if not isinstance(options, DeerOptions):
        raise ValueError(f"deer_options: expected an elm_jax.backends.deer.DeerOptions "
                         f"or None, got {type(options).__name__}")
    return options


# ----------------------------------------------------------------------- the step

def _shift(memory: jax.Array, m0: jax.Array) -> jax.Array:
    """(m_{-1}, m_0, ..., m_{T-2}): the memory each step starts from."""
    return jnp.concatenate([m0[None], memory[:-1]], axis=0)


def _jacobian_t(w: MemoryWeights, z_out: jax.Array, hidden: list, config: ELMConfig
                ) -> jax.Array:
    """The transposed Jacobians ``J_t^T``, ``J_t = df/dm (m_{t-1}, b_t)``:
    (T, ..., d_in, d_out), from the pre-activations of `memory_update` at the guess.

    Chain rule with the memory tangents stacked as rows: ``D_1 = diag(kappa_m) W_1m``,
    ``D_{l+1} = (D_l * act'(z_l)) W_{l+1}``, ``J^T = D_L * (u g'(z_L)) + diag(kappa_m)``:
    one GEMM per hidden layer over all steps (the derivatives come from
    `elm_jax.backends.mlp.ACTIVATIONS`, the same table the hoisted backward uses).
    """
    act_grad = activation(config.mlp_activation)[1]
    decay = w.memory_decay
    rows = decay[:, None] * split_first_layer(w.mlp[0], config.num_branch)[1]  # (d_in, h1)
    for layer, z in zip(w.mlp[1:], hidden):
        rows = (rows * act_grad(z)[..., None, :]) @ layer["kernel"]  # (T, ..., d_in, h')
    jac_t = rows * (w.update_scale * scaled_tanh_grad(z_out))[..., None, :] + jnp.diag(decay)
    return jnp.broadcast_to(jac_t, z_out.shape[:-1] + jac_t.shape[-2:])


def _linearize(w, memory, traces, m0, config, jacobian, compute_dtype=None):
    """f at the shifted guess and the *transposed* Jacobians J_t^T (T, ..., d, d)
    [full] or the diagonals (T, ..., d) [diagonal]."""
    prev = _shift(memory, m0)
    fval, (z_out, hidden) = memory_update(w, prev, traces, config, compute_dtype,
                                          return_pre=True)
    jac_t = _jacobian_t(w, z_out, hidden, config)
    if jacobian == "diagonal":
        jac_t = jnp.diagonal(jac_t, axis1=-2, axis2=-1)
    return prev, fval, jac_t


# ------------------------------------------------------------ linear recurrences

def _matvec(a: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.einsum("...ij,...j->...i", a, v)


def _vecmat(v: jax.Array, a: jax.Array) -> jax.Array:
    return jnp.einsum("...i,...ij->...j", v, a)


def _compose_full(earlier, later):
    # h -> A2 (A1 h + c1) + c2
    a1, c1 = earlier
    a2, c2 = later
    return a2 @ a1, _matvec(a2, c1) + c2


def _compose_rows(earlier, later):
    # row vectors: h -> (h B1 + c1) B2 + c2, i.e. A_t = B_t^T
    b1, c1 = earlier
    b2, c2 = later
    return b1 @ b2, _vecmat(c1, b2) + c2


def _compose_diag(earlier, later):
    a1, c1 = earlier
    a2, c2 = later
    return a2 * a1, a2 * c1 + c2


def matrix_recurrence(jac: jax.Array, inputs: jax.Array, *, reverse: bool = False,
                      transposed: bool = False) -> jax.Array:
    """All states of ``h_t = A_t h_{t-1} + c_t`` from ``h_{-1} = 0`` (time axis 0).

    Args:
      jac: (T, ..., d, d) matrices ``A_t`` (or (T, ..., d) for diagonal ``A_t``).
      inputs: (T, ..., d) offsets ``c_t``.
      reverse: run from the end: ``h_t = A_t h_{t+1} + c_t`` from ``h_T = 0``.
      transposed: `jac` holds ``A_t^T`` (saves transposing it).
    Returns: (T, ..., d), by `jax.lax.associative_scan` (O(log T) depth, O(T d^3) work
    for full matrices).
    """
    if jac.ndim == inputs.ndim:
        compose = _compose_diag
    else:
        compose = _compose_rows if transposed else _compose_full
    _, h = jax.lax.associative_scan(compose, (jac, inputs), reverse=reverse, axis=0)
    return h


# ------------------------------------------------------------------ the solver

def _residual(memory, fval, tol):
    """(max |m_t - f(m_{t-1})| per sequence (reducing time, axis 0, and units, the
    last axis), the threshold tol * max(1, max |m|) over the whole batch)."""
    def magnitude(a):  # |a| with NaN as inf (XLA's max reduction may drop NaNs)
        return jnp.where(jnp.isnan(a), jnp.inf, jnp.abs(a))

    res = jnp.max(magnitude(memory - fval), axis=(0, -1))
    return res, tol * jnp.maximum(1.0, jnp.max(magnitude(memory)))


def _converged(res, threshold):
    """res <= threshold with both finite (an overflowed iterate has threshold inf)."""
    return (res <= threshold) & jnp.isfinite(res) & jnp.isfinite(threshold)


def invariant_bound(memory_decay: jax.Array, update_scale: jax.Array,
                    initial_memory: jax.Array) -> jax.Array:
    """Per unit, a bound that no true memory trajectory leaves:
    ``|m_t| <= max(|m_{-1}|, |u| * 1.7159 / (1 - kappa_m))`` (induction on
    ``m_t = kappa_m m_{t-1} + u g`` with ``|g| <= 1.7159``), widened by 0.1 %."""
    steady = jnp.abs(update_scale) * TANH_SCALE / (1.0 - memory_decay)
    return jnp.maximum(jnp.abs(initial_memory), steady) * 1.001


@functools.partial(jax.jit, static_argnames=("config", "options"))
def _newton(w, traces, m0, config, options: DeerOptions):
    """The Newton loop (no gradients); jitted so that eager calls compile once per
    solver setting (`on_failure` is normalised away by the caller).
    Returns (memory, (per-sample residual, threshold), iterations)."""
    tol = options.tolerance(m0.dtype)
    step_size = 1.0 - float(options.damping)

    if options.project:
        bound = invariant_bound(w.memory_decay, w.update_scale, m0)

    def solve(memory, prev, fval, jac):
        # c_t = f(p_t) - J_t p_t, except c_0 = f(p_0): p_0 = m_{-1} is exact
        known = prev.at[0].set(0)
        offset = fval - (jac * known if jac.ndim == known.ndim else _vecmat(known, jac))
        new = matrix_recurrence(jac, offset, transposed=True)
        if step_size != 1.0:
            new = memory + step_size * (new - memory)
        if options.project:
            # clip into the box that holds every true trajectory (overflow -> the bound;
            # NaN, e.g. from inf - inf, -> the previous iterate)
            new = jnp.where(jnp.isnan(new), memory, jnp.clip(new, -bound, bound))
        return new

    def body(carry):
        # one evaluation of f and J per trip (so they appear once in the program); the
        # Newton solve is skipped on the trip that stops
        k, memory, _, _, _ = carry
        prev, fval, jac = _linearize(w, memory, traces, m0, config, options.jacobian,
                                     options.compute_dtype)
        res, threshold = _residual(memory, fval, tol)
        worst = jnp.max(res)
        finite = jnp.isfinite(worst) & jnp.isfinite(threshold)
        stop = _converged(worst, threshold) | ~finite | (k >= options.max_iter)
        memory = jax.lax.cond(stop, lambda *a: a[0], solve, memory, prev, fval, jac)
        return k + jnp.where(stop, 0, 1).astype(k.dtype), memory, res, threshold, stop

    memory0 = jnp.broadcast_to(m0, traces.shape[:-1] + m0.shape[-1:])
    res0 = jnp.full(memory0.shape[1:-1], jnp.inf, memory0.dtype)
    carry = (jnp.int32(0), memory0, res0, jnp.asarray(tol, memory0.dtype), jnp.bool_(False))
    carry = varying_like(carry, traces)  # inside shard_map the loop runs per shard
    k, memory, res, threshold, _ = jax.lax.while_loop(lambda c: ~c[-1], body, carry)
    return memory, (res, threshold), k


def _raise_not_converged(iterations, residual, threshold, tol, max_iter):
    raise DeerNotConvergedError(
        f"DEER did not converge: residual max|m_t - f(m_(t-1))| = "
        f"{float(np.max(residual)):.3e} > {float(np.min(threshold)):.3e} "
        f"(tol = {tol:.3e} x max(1, max|m|)) after {int(np.max(iterations))} Newton "
        f"iterations (max_iter={max_iter}). Raise DeerOptions.max_iter or tol, or use "
        f"backend='scan' (slow leaks and long sequences need many iterations).")


def _host_check(iterations, residual, threshold, converged, *, tol, max_iter):
    if not np.all(converged):
        _raise_not_converged(iterations, residual, threshold, tol, max_iter)


# ------------------------------------------------- implicit (adjoint) gradients

@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def _attach_gradient(w, traces, m0, memory, config, compute_dtype):
    """Identity on the converged `memory`, with the implicit-function derivatives (the
    adjoint VJP below; the JVP is its transpose, `elm_jax.backends.forward_mode`)."""
    return memory


@jax.custom_jvp
def _first_order_only(tree):
    """Identity; differentiating it (i.e. differentiating DEER's implicit gradient: a
    Hessian-vector product or any second derivative) raises a clear error.  The
    converged trajectory enters the adjoint without its own derivative, so second
    derivatives through it would be silently wrong."""
    return tree


@_first_order_only.defjvp
def _first_order_only_jvp(primals, tangents):
    raise NotImplementedError(
        "backend='deer' supports first derivatives only (jax.grad, jax.jvp, jax.jacfwd); "
        "for second derivatives such as Hessian-vector products use backend='scan', "
        "'hoisted' or 'associative', which compute the same function")


def _attach_bwd(config, compute_dtype, residuals, g):
    w, traces, m0, memory = _first_order_only(residuals)
    prev, _, jac_t = _linearize(w, memory, traces, m0, config, "full", compute_dtype)
    # a_t = g_t + J_{t+1}^T a_{t+1}: the matrix paired with a_t is J_{t+1}^T (0 at the end)
    paired = jnp.concatenate([jac_t[1:], jnp.zeros_like(jac_t[:1])], axis=0)
    adjoint = matrix_recurrence(paired, g, reverse=True)
    _, vjp = jax.vjp(lambda w_, p, b: memory_update(w_, p, b, config, compute_dtype),
                     w, prev, traces)
    w_bar, prev_bar, traces_bar = vjp(adjoint)
    return w_bar, traces_bar, prev_bar[0], jnp.zeros_like(memory)


@_attach_gradient.defjvp
def _attach_jvp(config, compute_dtype, primals, tangents):
    memory = primals[3]
    bwd = functools.partial(_attach_bwd, config, compute_dtype)
    return memory, tangent_by_transposed_vjp(bwd, tuple(primals), memory, tangents,
                                             remat=True)


# ------------------------------------------------------------------ public API

def deer_memory(dyn: Dynamics, traces: jax.Array, initial_memory: jax.Array,
                config: ELMConfig, options: DeerOptions | None = None
                ) -> tuple[jax.Array, DeerInfo]:
    """The exact memory trajectory of the ELM by DEER, and what the solve did.

    Args:
      dyn: constants from `elm_jax.core.prepare`.
      traces: (time, ..., num_branch) branch traces ``b_t`` (time-major), e.g.
        ``linear_recurrence(dyn.trace_decay, x_tm @ dyn.input_matrix, b0)``.
      initial_memory: (..., num_memory) memory before the first step.
      config: the model configuration (``memory_feedback=True``; without feedback the
        recurrence is linear and needs no Newton: use the other backends).
      options: `DeerOptions` (None: defaults).
    Returns: ``(memory (time, ..., num_memory), DeerInfo)``.  Differentiable (reverse
      mode) in `dyn`, `traces` and `initial_memory` by the implicit adjoint method.
    Raises: `DeerNotConvergedError` (eagerly) or a ``JaxRuntimeError`` carrying its
      message (under jit) when not converged and ``on_failure="raise"``.
    """
    options = _check_options(options)
    if not config.memory_feedback:
        raise ValueError("deer_memory: config.memory_feedback=False makes the memory "
                         "recurrence linear; use backend='associative' or 'hoisted'")
    if traces.ndim < 2 or traces.shape[0] < 1:
        raise ValueError(f"deer_memory: expected traces (time >= 1, ..., num_branch), "
                         f"got {traces.shape}")
    w = dyn.weights
    stopped = jax.tree_util.tree_map(jax.lax.stop_gradient, (w, traces, initial_memory))
    solver = dataclasses.replace(options, on_failure="ignore")  # handled below
    memory, (sample_res, threshold), iterations = _newton(*stopped, config=config,
                                                          options=solver)
    tol = options.tolerance(initial_memory.dtype)
    residual = jnp.max(sample_res)
    info = DeerInfo(iterations, residual, threshold, _converged(residual, threshold))
    if options.on_failure == "raise":
        if isinstance(residual, jax.core.Tracer):
            jax.debug.callback(functools.partial(_host_check, tol=tol,
                                                 max_iter=options.max_iter), *info)
        elif not bool(info.converged):
            _raise_not_converged(iterations, residual, threshold, tol, options.max_iter)
    memory = _attach_gradient(w, traces, initial_memory, memory, config,
                              options.compute_dtype)
    if options.on_failure == "nan":
        bad = ~_converged(sample_res, threshold)
        memory = jnp.where(bad[..., None], jnp.nan, memory)
    return memory, info


def _traces(dyn: Dynamics, drive: jax.Array, initial: ELMState) -> jax.Array:
    return linear_recurrence(dyn.trace_decay, drive, initial.branch_traces,
                             method="associative")


def deer_backend(dyn: Dynamics, drive: jax.Array, initial: ELMState, config: ELMConfig,
                 options: DeerOptions | None = None) -> tuple:
    """`elm_jax.apply`'s ``backend="deer"``: (final ELMState, traces, memory), time-major.

    `drive` is (time, batch, num_branch) ``x @ R``.  Without memory feedback the model
    is linear in the memory and this is the ``"associative"`` backend (with the same
    ``compute_dtype``).
    """
    options = _check_options(options)
    if not config.memory_feedback:
        return hoisted_backend(dyn, drive, initial, config,
                               HoistedOptions(compute_dtype=options.compute_dtype),
                               method="associative")
    traces = _traces(dyn, drive, initial)
    memory, _ = deer_memory(dyn, traces, initial.memory, config, options)
    return ELMState(traces[-1], memory[-1]), traces, memory


@functools.partial(jax.jit, static_argnames=("config", "options"))
def deer_apply(params, x: jax.Array, config: ELMConfig, options: DeerOptions | None = None,
               initial: ELMState | None = None) -> tuple[jax.Array, DeerInfo]:
    """Like ``elm_jax.apply(params, x, config, backend="deer")`` but also returns the
    `DeerInfo`: ``(y (batch, time, num_output), info)``.  ``memory_feedback=True`` only."""
    options = _check_options(options)
    check_input(x, config, "x", "(batch, time, num_input)", 3)
    dyn = prepare(params, config)
    x = jnp.asarray(x, dyn.input_matrix.dtype)
    if initial is None:
        initial = initial_state(config, (x.shape[0],), x.dtype)
    else:
        check_state(initial, config, x.shape[0])
    drive = matmul(jnp.swapaxes(x, 0, 1), dyn.input_matrix, options.compute_dtype)
    traces = _traces(dyn, drive, initial)
    memory, info = deer_memory(dyn, traces, initial.memory, config, options)
    return jnp.swapaxes(readout(dyn, memory, options.compute_dtype), 0, 1), info
