"""Experimental ``backend="deer"``: the exact ELM memory recurrence solved in parallel
over time by Newton's method (DEER; Lim et al., ICLR 2024, arXiv 2309.12252).

Equations
---------
The branch traces ``b_t`` do not depend on the memory and are computed first with an
associative scan (`elm_jax.backends.linear`).  The memory trajectory ``M = (m_0 ..
m_{T-1})`` is the root of the residual

    r_t(M) = m_t - f(m_{t-1}, b_t),      m_{-1} = initial memory,

where ``f`` is `elm_jax.core.memory_update` (so the solution is exactly what
``backend="scan"`` computes).  Newton iteration ``k`` linearises ``f`` around the
current guess ``M^k`` (``p_t = m^k_{t-1}``, ``J_t = df/dm (p_t, b_t)``, a d_m x d_m
matrix) and solves the *linear time-varying* recurrence

    m^{k+1}_t = J_t m^{k+1}_{t-1} + (f(p_t, b_t) - J_t p_t)

with `jax.lax.associative_scan` over the affine maps ``h -> J_t h + c_t`` (combine:
``(A1, c1) then (A2, c2) = (A2 A1, A2 c1 + c2)``), O(log T) depth.  The Jacobians come
from the chain rule through the MLP (`_jacobian_t`; one GEMM per layer over all
steps), ``f`` itself from `elm_jax.core.memory_update`.  The first guess is the
initial memory repeated over time.  Without damping, iteration ``k`` makes the first
``k`` steps exact (the system is lower block-bidiagonal), so Newton needs at most ``T``
iterations in exact arithmetic and usually far fewer (quadratic convergence near the
solution).

Projection (``DeerOptions.project``, default on): every true trajectory stays in the
box ``|m_t| <= max(|m_{-1}|, u * 1.7159 / (1 - kappa_m))`` (per unit; `invariant_bound`),
so each iterate is clipped into it.  That never moves the solution nor the steps that
are already exact, so the at-most-T guarantee stands; it stops the iterates from
overflowing when the linearisation around a poor guess is expansive.  Measured: with
MLP weights 3x the default init, d_m = 32, T = 4000, float32, the first unprojected
Newton step overflowed to inf; projected, it converged in 123 iterations.

Stopping rule: the iteration stops as soon as the fixed-point residual
``max |m_t - f(m_{t-1}, b_t)|`` (over time, batch and units) is at most
``tol * max(1, max |m_t|)`` -- absolute while the memory is below 1 in magnitude,
relative above (a float32 residual cannot go below a few ulps of the memory's size:
about 3e-6 at |m| ~ 6).  The returned trajectory is the one whose residual was
measured; `DeerInfo` reports that residual, the threshold it was compared with and
the number of Newton iterations taken.

Damping (``DeerOptions.damping = d`` in [0, 1)) is a *convex step damping*: the new
iterate is ``M^k + (1 - d) (M_newton - M^k)`` (then projected).  It can tame iterates
that overshoot when the linearisation is poor, but any ``d > 0`` gives up both the "at
most T iterations" guarantee and quadratic convergence (the error contracts at best by
``d`` per iteration), and it does nothing against an overflowing Newton step (the
projection does).  It is not the Levenberg-Marquardt / Kalman-smoother damping of
ELK, which this module does not implement.

``jacobian="diagonal"`` keeps only ``diag(J_t)`` (quasi-DEER, Gonzalez et al., NeurIPS
2024): elementwise scans, but on ELM's slow leaks it converges badly (hundreds of
iterations or none; see the project's performance notes).  Here the diagonal is cut
out of the full Jacobian, so it saves scan work, not Jacobian work.

Gradients (implicit / adjoint method, no differentiation through the iterations): at
the converged trajectory, with external cotangents ``g_t = dL/dm_t``, the adjoint

    a_t = g_t + J_{t+1}^T a_{t+1},     a_{T-1} = g_{T-1}

is a linear recurrence run backwards in time, again as an associative scan (full
Jacobians at the solution, whatever ``jacobian`` the forward used, so the gradient is
the exact gradient of the computed trajectory).  Then one `jax.vjp` of the per-step
function over all steps at once with cotangents ``a`` gives the parameter cotangents,
the trace cotangents ``(df/db_t)^T a_t`` and the initial-memory cotangent ``J_0^T a_0``.
Reverse mode only: `jax.jvp` / `jax.jacfwd` through this backend are not supported.

Cost and where it can win (be honest)
-------------------------------------
* Memory: O(T d_m^2) per sequence.  The Jacobians alone are ``T * batch * d_m^2``
  numbers (plus about 3x that in associative-scan temporaries, and ``T * batch * d_m
  * h`` for building them): 16k steps x d_m = 32 is 67 MB per sequence in float32,
  d_m = 100 is 655 MB.  The sequential scan stores ``T * batch * d_m``.
* Work: O(T d_m^3) per iteration (matrix products in the scan; the Jacobians add
  O(T d_m^2 h)), times the number of iterations, against O(T d_m h) once for the
  scan.  Iterations grow with T, with the MLP's gain and with slow leaks (tau_m up
  to 1000): 4-6 at the default init (d_m 8-32, T 1k-4k), 10 / 14 in float64 with
  weights sqrt(3)x the init (d_m = 32, T = 1k / 4k; the performance notes measured
  17 / 24 / 68 at T = 1k / 4k / 16k for a similar draw), 17-27 with 3x weights, and
  100+ for T = 4k, 3x, d_m = 32 in float32.
* Accuracy: the solution matches the scan to about the tolerance (float64 ~1e-13 with
  the default tol).  In float32 the residual floor is a few ulps of |m| (~1e-6), and
  with expansive Jacobians the float32 linear solves lose more: 3x weights, d_m = 32,
  T = 1000 stalled at a residual of 6.5e-4 (converges in 27 iterations in float64).
* Where it can win: where the sequential loop is latency-bound rather than
  work-bound -- accelerators (GPU: ~8 us per `lax.scan` iteration), very long T,
  small d_m (<= ~16) and small batch, well-conditioned (contractive) dynamics.
* Where it loses: on CPU always (a `lax.scan` step costs nanoseconds and the extra
  d_m^2-fold work has no idle cores to use), for large d_m (cubic work, quadratic
  memory), and on slow leaks / strong recurrent weights that need many iterations.
  Measured on the 2-core CPU (float32, batch 4, forward, after compilation; scan vs
  deer): d_m = 8: 2.0 vs 5.6 ms (T = 1k), 9.0 vs 27 ms (T = 4k), 4 iterations;
  d_m = 32: 2.5 vs 135 ms (T = 1k, 5 it.), 11 vs 680 ms (T = 4k, 6 it.).  With 3x
  weights: d_m = 8: 11x slower (17-18 it.); d_m = 32: 1000x (T = 4k, 123 it.).

Public API: `DeerOptions`, `DeerInfo`, `DeerNotConvergedError`, `deer_memory` (memory
and info from prepared constants and traces), `deer_apply` (outputs and info from
parameters and inputs), `deer_backend` (what `elm_jax.apply` calls),
`matrix_recurrence` and `invariant_bound`.

Failure handling (``DeerOptions.on_failure``): ``"raise"`` (default) raises
`DeerNotConvergedError` (a `RuntimeError`) naming the iteration count and the residual.
Called eagerly (e.g. `deer_memory` outside `jax.jit`) the check is a plain Python
check and the exception is `DeerNotConvergedError` itself.  Under `jax.jit` (which
includes `elm_jax.apply`) the values are traced, so the check runs in a
`jax.debug.callback` on the host after the solve; the exception then reaches the
caller as a ``jax.errors.JaxRuntimeError`` (also a `RuntimeError`) whose message
contains the ``DeerNotConvergedError: DEER did not converge ...`` text, and JAX also
logs the callback's traceback.  ``"nan"`` returns NaN for the memory of every sequence
whose own residual exceeds ``tol``; ``"ignore"`` returns the last iterate as is (check
`DeerInfo` yourself via `deer_memory` / `deer_apply`).  A non-finite residual (a
diverged iterate) stops the iteration early and counts as not converged.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..config import ELMConfig
from ..core import TANH_SCALE, Dynamics, ELMState, _activation, memory_update, scaled_tanh
from .linear import linear_recurrence

JACOBIANS = ("full", "diagonal")
ON_FAILURE = ("raise", "nan", "ignore")


class DeerNotConvergedError(RuntimeError):
    """Raised when the DEER Newton iteration stops above its tolerance."""


@dataclasses.dataclass(frozen=True)
class DeerOptions:
    """Options of the ``"deer"`` backend (frozen and hashable: a jit static argument).

    Attributes:
      max_iter: most Newton iterations (>= 1).  Undamped Newton needs at most ``T``.
      tol: stop when ``max |m_t - f(m_{t-1}, b_t)| <= tol * max(1, max |m_t|)``.
        ``None``: 1e-10 for float64 memory, 1e-5 for float32, 1e-2 for 16-bit floats.
      damping: convex step damping ``d`` in [0, 1): ``M <- M + (1 - d)(M_newton - M)``.
        0 (default) is plain Newton.
      jacobian: ``"full"`` (DEER, default) or ``"diagonal"`` (quasi-DEER).
      on_failure: ``"raise"`` (default), ``"nan"`` or ``"ignore"`` when the iteration
        stops above ``tol`` (see the module docstring for how "raise" surfaces).
      project: clip every iterate into the box that holds every true trajectory
        (`invariant_bound`; default True).  It never moves the solution and keeps the
        at-most-T guarantee, and it stops float32 iterates from overflowing when the
        linearisation around a poor guess is expansive (otherwise they hit inf).
    """

    max_iter: int = 100
    tol: float | None = None
    damping: float = 0.0
    jacobian: str = "full"
    on_failure: str = "raise"
    project: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)) \
                or self.max_iter < 1:
            raise ValueError(f"DeerOptions.max_iter={self.max_iter!r} is invalid: "
                             "expected an integer >= 1")
        if self.tol is not None and not (isinstance(self.tol, (int, float))
                                         and not isinstance(self.tol, bool)
                                         and np.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"DeerOptions.tol={self.tol!r} is invalid: expected None or "
                             "a finite number > 0")
        if isinstance(self.damping, bool) or not isinstance(self.damping, (int, float)) \
                or not 0.0 <= self.damping < 1.0:
            raise ValueError(f"DeerOptions.damping={self.damping!r} is invalid: expected "
                             "a number in [0, 1)")
        if self.jacobian not in JACOBIANS:
            raise ValueError(f"DeerOptions.jacobian={self.jacobian!r} is invalid: "
                             f"expected one of {JACOBIANS}")
        if not isinstance(self.project, bool):
            raise ValueError(f"DeerOptions.project={self.project!r} is invalid: expected "
                             "a bool")
        if self.on_failure not in ON_FAILURE:
            raise ValueError(f"DeerOptions.on_failure={self.on_failure!r} is invalid: "
                             f"expected one of {ON_FAILURE}")

    def tolerance(self, dtype) -> float:
        """`tol`, or the default for memory of `dtype`."""
        if self.tol is not None:
            return float(self.tol)
        bits = jnp.finfo(dtype).bits
        return 1e-10 if bits >= 64 else 1e-5 if bits >= 32 else 1e-2


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

class _Weights(NamedTuple):
    """The differentiable constants of the memory update."""

    mlp: tuple
    memory_decay: jax.Array
    update_scale: jax.Array


def _weights(dyn: Dynamics) -> _Weights:
    return _Weights(tuple(dyn.mlp), dyn.memory_decay, dyn.update_scale)


def _step(w: _Weights, prev: jax.Array, traces: jax.Array, config: ELMConfig) -> jax.Array:
    """f(m_{t-1}, b_t) for any leading shape: `elm_jax.core.memory_update` itself."""
    dyn = Dynamics(None, None, w.memory_decay, w.update_scale, list(w.mlp), None)
    return memory_update(dyn, prev, traces, config)


def _shift(memory: jax.Array, m0: jax.Array) -> jax.Array:
    """(m_{-1}, m_0, ..., m_{T-2}): the memory each step starts from."""
    return jnp.concatenate([m0[None], memory[:-1]], axis=0)


def _derivative(fn, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fn(z), fn'(z)) of an elementwise function."""
    return jax.jvp(fn, (z,), (jnp.ones_like(z),))


def _jacobian_t(w: _Weights, prev: jax.Array, traces: jax.Array, config: ELMConfig
                ) -> jax.Array:
    """The transposed Jacobians ``J_t^T``, ``J_t = df/dm (m_{t-1}, b_t)``:
    (T, ..., d_in, d_out), the layout the chain rule below produces without a copy.

    Chain rule through the MLP with the memory tangents stacked as rows:
    ``D_1 = diag(kappa_m) W_1m`` (the same for every step), ``D_{l+1} = (D_l *
    act'(z_l)) W_{l+1}``, ``J^T = D_L * (u g'(z_L)) + diag(kappa_m)``: one GEMM of
    (steps*batch*d_m, h) x (h, h') per hidden layer, O(d_m^2 h) per step.  (Cheaper than
    d_m forward-mode passes, which would also redo the constant first layer.)

    This mirrors the structure of `elm_jax.core.memory_update`: change both together
    (a wrong Jacobian still converges to the right values, more slowly, but gives
    wrong gradients -- the gradient tests against ``backend="scan"`` catch it).
    """
    first = w.mlp[0]
    nb = config.num_branch
    act = _activation(config)
    decay = w.memory_decay
    z = traces @ first["kernel"][:nb] + first["bias"] + (decay * prev) @ first["kernel"][nb:]
    rows = decay[:, None] * first["kernel"][nb:]  # (d_in, h1): dz_1 / dm
    for layer in w.mlp[1:]:
        a, da = _derivative(act, z)
        rows = (rows * da[..., None, :]) @ layer["kernel"]  # (T, ..., d_in, h_next)
        z = a @ layer["kernel"] + layer["bias"]
    _, dg = _derivative(scaled_tanh, z)
    jac_t = rows * (w.update_scale * dg)[..., None, :] + jnp.diag(decay)  # [.., in, out]
    return jnp.broadcast_to(jac_t, z.shape[:-1] + jac_t.shape[-2:])


def _linearize(w, memory, traces, m0, config, jacobian):
    """f at the shifted guess and the *transposed* Jacobians J_t^T (T, ..., d, d)
    [full] or the diagonals (T, ..., d) [diagonal]."""
    prev = _shift(memory, m0)
    fval = _step(w, prev, traces, config)  # exactly the function the scan iterates
    jac_t = _jacobian_t(w, prev, traces, config)
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
        prev, fval, jac = _linearize(w, memory, traces, m0, config, options.jacobian)
        res, threshold = _residual(memory, fval, tol)
        worst = jnp.max(res)
        finite = jnp.isfinite(worst) & jnp.isfinite(threshold)
        stop = _converged(worst, threshold) | ~finite | (k >= options.max_iter)
        memory = jax.lax.cond(stop, lambda *a: a[0], solve, memory, prev, fval, jac)
        return k + jnp.where(stop, 0, 1).astype(k.dtype), memory, res, threshold, stop

    memory0 = jnp.broadcast_to(m0, traces.shape[:-1] + m0.shape[-1:])
    res0 = jnp.full(memory0.shape[1:-1], jnp.inf, memory0.dtype)
    carry = (jnp.int32(0), memory0, res0, jnp.asarray(tol, memory0.dtype), jnp.bool_(False))
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

@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attach_gradient(w, traces, m0, memory, config):
    """Identity on the converged `memory`, with the implicit-function VJP."""
    return memory


def _attach_fwd(w, traces, m0, memory, config):
    return memory, (w, traces, m0, memory)


def _attach_bwd(config, residuals, g):
    w, traces, m0, memory = residuals
    prev, _, jac_t = _linearize(w, memory, traces, m0, config, "full")
    # a_t = g_t + J_{t+1}^T a_{t+1}: the matrix paired with a_t is J_{t+1}^T (0 at the end)
    paired = jnp.concatenate([jac_t[1:], jnp.zeros_like(jac_t[:1])], axis=0)
    adjoint = matrix_recurrence(paired, g, reverse=True)
    _, vjp = jax.vjp(lambda w_, p, b: _step(w_, p, b, config), w, prev, traces)
    w_bar, prev_bar, traces_bar = vjp(adjoint)
    return w_bar, traces_bar, prev_bar[0], jnp.zeros_like(memory)


_attach_gradient.defvjp(_attach_fwd, _attach_bwd)


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
    w = _weights(dyn)
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
    memory = _attach_gradient(w, traces, initial_memory, memory, config)
    if options.on_failure == "nan":
        bad = ~_converged(sample_res, threshold)
        memory = jnp.where(bad[..., None], jnp.nan, memory)
    return memory, info


def _traces(dyn: Dynamics, drive: jax.Array, initial: ELMState) -> jax.Array:
    return linear_recurrence(dyn.trace_decay, drive, initial.branch_traces,
                             method="associative")


def deer_backend(dyn: Dynamics, drive: jax.Array, initial: ELMState, config: ELMConfig,
                 options: Any = None) -> tuple:
    """`elm_jax.apply`'s ``backend="deer"``: (final ELMState, traces, memory), time-major.

    `drive` is (time, batch, num_branch) ``x @ R``.  Without memory feedback the model
    is linear in the memory and this is the ``"associative"`` backend.
    """
    options = _check_options(options)
    if not config.memory_feedback:
        from ..apply import _hoisted_backend

        return _hoisted_backend(dyn, drive, initial, config, "associative", 1, 64, None,
                                True, False)
    traces = _traces(dyn, drive, initial)
    memory, _ = deer_memory(dyn, traces, initial.memory, config, options)
    return ELMState(traces[-1], memory[-1]), traces, memory


@functools.partial(jax.jit, static_argnames=("config", "options"))
def deer_apply(params, x: jax.Array, config: ELMConfig, options: DeerOptions | None = None,
               initial: ELMState | None = None) -> tuple[jax.Array, DeerInfo]:
    """Like ``elm_jax.apply(params, x, config, backend="deer")`` but also returns the
    `DeerInfo`: ``(y (batch, time, num_output), info)``.  ``memory_feedback=True`` only."""
    from ..apply import _check_state
    from ..core import check_input, initial_state, prepare, readout

    check_input(x, config, "x", "(batch, time, num_input)", 3)
    dyn = prepare(params, config)
    x = jnp.asarray(x, dyn.input_matrix.dtype)
    if initial is None:
        initial = initial_state(config, (x.shape[0],), x.dtype)
    else:
        _check_state(initial, config, x.shape[0])
    traces = _traces(dyn, jnp.swapaxes(x, 0, 1) @ dyn.input_matrix, initial)
    memory, info = deer_memory(dyn, traces, initial.memory, config, options)
    return jnp.swapaxes(readout(dyn, memory), 0, 1), info
