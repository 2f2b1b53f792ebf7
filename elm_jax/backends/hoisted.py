"""The sequential memory core with everything else hoisted out, and its custom backward.

Only ``m_{t-1} -> m_t`` is inherently sequential.  `memory_core` receives the branch
traces of the whole sequence (computed outside, see `elm_jax.backends.linear`) and runs
the recurrence in chunks of ``chunk`` steps: per chunk, the trace half of the first MLP
layer is one ``(chunk*batch, num_branch) @ (num_branch, hidden)`` matmul, and only the
memory half stays inside the inner `lax.scan`.

The backward pass (`_core_bwd`, attached through `elm_jax.backends.forward_mode`, which
also gives forward mode) stores nothing but the memory trajectory (which
is the output anyway).  Per chunk, in reverse, it recomputes the chunk's MLP
activations in parallel from the stored memory (big matmuls), runs the reverse
recurrence carrying only the memory cotangent ``g`` (d_m floats per sequence), and then
forms the weight gradients of the chunk as matmuls over all ``chunk*batch`` tokens,
instead of accumulating a rank-``batch`` update into every weight at every step as
JAX's transpose of `lax.scan` does.  Memory is O(T * batch * d_m) for the trajectory
plus O(chunk * batch * hidden) temporaries.  With ``store_activations`` the forward loop
also stores every step's MLP pre-activations and tanh outputs (O(T * batch * (hidden +
d_m)) more) and the backward skips the recompute.  The reverse loop itself runs in one
of three modes chosen by model size (`reverse_mode`): per-token Jacobians (small
models), carry-only with the per-step products redone over all tokens, or storing them.

This module owns the backend's rules and their constants: the chunk length
(`hoisted_chunk_size`, `HOISTED_CHUNK_FLOATS`), whether activations are stored
(`should_store_activations`, `STORE_MAX_BYTES`) and the reverse loop's mode
(`reverse_mode`, `RECOMPUTE_MAX_MACS`, `JACOBIAN_MAX_MEMORY`).  `hoisted_backend` is
what `elm_jax.apply` calls for ``"hoisted"`` and ``"associative"``.

Reverse recurrence (G_t = g_t + external cotangent of m_t):

    dz_L   = G_t * u * dtanh(z_L)                 output layer pre-activation
    dz_l   = (dz_{l+1} @ W_{l+1}^T) * act'(z_l)     hidden layers, l = L-1 .. 1
    ddec_t = G_t + dz_1 @ W_1m^T                  cotangent of kappa_m * m_{t-1}
    g_{t-1} = kappa_m * ddec_t
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..core import Dynamics, ELMState, summed_like, varying_like
from .chunks import pad_chunks, unchunk
from .forward_mode import tangent_by_transposed_vjp
from .linear import linear_recurrence
from .mlp import (TANH_SCALE, TANH_SLOPE, activation, matmul, mlp_all_tokens, mlp_forward,
                  split_first_layer, tanh_unit_grad)
from .options import REMAT_TO_STORE, HoistedOptions


class CoreWeights(NamedTuple):
    """Differentiable inputs of the memory core.

    Attributes:
      w_branch: (num_branch, h1) trace half of the first MLP layer, or None when it is
        folded into the input projection (the traces are then (..., h1) and enter the
        first layer as they are; `elm_jax.input_paths`).
      w_memory: (num_memory, h1) memory half of the first MLP layer.
      bias: (h1,) first-layer bias.
      layers: tuple of (kernel (h_in, h_out), bias (h_out,)) for the later layers.
      decay: (num_memory,) kappa_m.
      scale: (num_memory,) update scale u.
    """

    w_branch: jax.Array
    w_memory: jax.Array
    bias: jax.Array
    layers: tuple
    decay: jax.Array
    scale: jax.Array


def core_weights(dyn, config) -> CoreWeights:
    """Split `elm_jax.core.Dynamics` into `CoreWeights` (memory-feedback models only)."""
    w_branch, w_memory, bias = split_first_layer(dyn.mlp[0], config.num_branch)
    return CoreWeights(w_branch, w_memory, bias,
                       tuple((layer["kernel"], layer["bias"]) for layer in dyn.mlp[1:]),
                       dyn.memory_decay, dyn.update_scale)


# How the reverse loop runs (`reverse_mode`):
# * "jacobian" (at most one hidden layer, num_memory <= JACOBIAN_MAX_MEMORY): the
#   reverse recurrence is linear in g, g_{t-1} = (g_t + G^ext_t) @ P_t with the
#   per-token (d_m, d_m) Jacobian P_t = diag(k) + diag(d_out_t) W_2^T diag(d_act_t)
#   W_m^T diag(k), k = kappa_m.  All P_t come from one matmul over the chunk's tokens
#   (d_act (tokens, h) @ C (h, d_m^2), C[h, i, j] = W_2[h, i] W_m[j, h] k_j), so the
#   loop body is one multiply-reduce instead of two dots and their glue: for NeuronIO's
#   d_m = 15 the reverse loop runs ~2x faster;
# * "recompute" (MLP multiply-adds per token <= RECOMPUTE_MAX_MACS): the loop keeps
#   only the carry per step and the products are redone after it, over all tokens;
# * "store": the loop also stores its per-step products (large MLPs, where redoing
#   them would cost more than storing).
RECOMPUTE_MAX_MACS = 8192
JACOBIAN_MAX_MEMORY = 32


def reverse_mode(num_memory: int, num_hidden_layers: int, mlp_macs: int) -> str:
    """``"jacobian"``, ``"recompute"`` or ``"store"`` (see the comment above)."""
    if num_hidden_layers <= 1 and num_memory <= JACOBIAN_MAX_MEMORY:
        return "jacobian"
    return "recompute" if mlp_macs <= RECOMPUTE_MAX_MACS else "store"


def config_reverse_mode(config) -> str:
    """`reverse_mode` of the memory core of `config` (an `elm_jax.ELMConfig`)."""
    from ..params import mlp_layer_sizes

    macs = sum(fan_in * fan_out for fan_in, fan_out in mlp_layer_sizes(config))
    return reverse_mode(config.num_memory, config.mlp_num_layers, macs)


STORE_MAX_BYTES = 256 << 20


def should_store_activations(store: Any, config, steps: int, batch: int,
                             itemsize: int = 4) -> bool:
    """Whether the custom backward gets the forward's activations stored (faster for
    large MLPs: no recompute) or recomputes them (less memory).

    `store` is `HoistedOptions.store_activations` (True, False or ``"auto"``) or a
    legacy ``remat`` value (``"none"``: True; ``"step"``/``"chunk"``: False).
    ``"auto"``: store when
    the MLP is large enough for the reverse loop's ``"store"`` mode (see
    `reverse_mode`; small MLPs recompute faster than their loop stores) and the stored
    ``T * batch * (sum(hidden) + d_m)`` values fit in `STORE_MAX_BYTES` (256 MiB).
    """
    if isinstance(store, str):
        store = REMAT_TO_STORE[store]
    if store != "auto":
        return bool(store)
    if config_reverse_mode(config) != "store":
        return False
    per_token = config.mlp_hidden_size * config.mlp_num_layers + config.num_memory
    return steps * batch * per_token * itemsize <= STORE_MAX_BYTES


def chunk_floats_per_token(config) -> int:
    """Floats per token that the custom backward holds for one chunk (an estimate:
    activations and their derivatives, plus the Jacobians in ``"jacobian"`` mode)."""
    hidden = config.mlp_hidden_size * config.mlp_num_layers
    floats = 2 * hidden + 3 * config.num_memory + config.num_branch
    if config_reverse_mode(config) == "jacobian":
        floats += config.num_memory ** 2
    return floats


HOISTED_CHUNK_FLOATS = 1 << 21  # 8 MiB of float32 temporaries per chunk


def hoisted_chunk_size(steps: int, batch: int, config) -> int:
    """Default chunk of the memory core: as long as the chunk's temporaries fit.

    The custom backward recomputes a chunk's MLP activations at once, holding
    `chunk_floats_per_token` floats per token.  Longer chunks mean fewer, larger
    matmuls and fewer loop launches, so the chunk is the whole sequence when that fits
    in `HOISTED_CHUNK_FLOATS` (8 MiB), else the largest power of two that does (at
    least 8 steps).
    """
    fit = HOISTED_CHUNK_FLOATS // max(1, batch * chunk_floats_per_token(config))
    if fit >= steps:
        return int(steps)
    return int(max(8, 2 ** int(math.floor(math.log2(max(1, fit))))))


def _jacobians(w: "CoreWeights", d_out: jax.Array, d_hidden: list) -> jax.Array:
    """P_t (chunk, batch, d_m, d_m) of the "jacobian" reverse mode."""
    decay_cols = w.w_memory.T * w.decay  # (h1, d_m): W_m^T diag(k)
    num_memory = w.decay.shape[0]
    if not w.layers:  # linear integration: P = diag(k) + diag(d_out) W_m^T diag(k)
        products = jnp.broadcast_to(decay_cols, d_out.shape + (num_memory,))
    else:
        kernel = w.layers[0][0]  # (h, d_m)
        coupling = kernel[:, :, None] * decay_cols[:, None, :]  # (h, d_m, d_m)
        d_act = d_hidden[0]
        products = (d_act.reshape(-1, d_act.shape[-1])
                    @ coupling.reshape(coupling.shape[0], -1)).reshape(
                        d_out.shape + (num_memory,))
    return d_out[..., :, None] * products + jnp.diag(w.decay)


def _trace_pre(traces: jax.Array, w_branch: jax.Array | None, compute_dtype: Any) -> jax.Array:
    """The traces' part of the first-layer pre-activation (as they are when folded)."""
    return traces if w_branch is None else matmul(traces, w_branch, compute_dtype)


def _mlp_macs(w: CoreWeights) -> int:
    rows = w.w_memory.shape[0] + (0 if w.w_branch is None else w.w_branch.shape[0])
    macs = rows * w.w_memory.shape[1]
    return macs + sum(int(k.shape[0]) * int(k.shape[1]) for k, _ in w.layers)


def _forward(w: CoreWeights, traces: jax.Array, m0: jax.Array, activation: str,
             chunk: int, unroll: int, compute_dtype: Any, store: bool = False):
    """Memory trajectory (time, batch, d_m); with `store` also the per-step MLP
    pre-activations (one (time, batch, h) array per hidden layer) and tanh outputs
    (time, batch, d_m) for the backward."""
    steps = traces.shape[0]
    # fold constants into the weights once, so the loop body is dot, fusion, dot, fusion
    w_memory = w.decay[:, None] * w.w_memory  # (kappa_m m) @ W_m == m @ (kappa_m W_m)
    scale = w.scale * TANH_SCALE

    def chunk_body(m, traces_c):
        pre = _trace_pre(traces_c, w.w_branch, compute_dtype) + w.bias

        def step(m, pre_t):
            z, zs = mlp_forward(pre_t + matmul(m, w_memory, compute_dtype), w.layers,
                                activation, compute_dtype)
            th = jnp.tanh(TANH_SLOPE * z)
            m = w.decay * m + scale * th
            return m, ((m, tuple(zs), th) if store else m)

        return jax.lax.scan(step, m, pre, unroll=unroll)

    _, out = jax.lax.scan(chunk_body, m0, pad_chunks(traces, chunk))
    return jax.tree_util.tree_map(lambda a: unchunk(a, steps), out)


def _core_fwd(w, traces, m0, activation, chunk, unroll, compute_dtype, store):
    if store:
        ms, zs, th = _forward(w, traces, m0, activation, chunk, unroll, compute_dtype, True)
        return ms, (w, traces, m0, ms, (zs, th))
    ms = _forward(w, traces, m0, activation, chunk, unroll, compute_dtype)
    return ms, (w, traces, m0, ms, None)


def _core_bwd(activation_name, chunk, unroll, compute_dtype, store, residuals, g_ms):
    w, traces, m0, ms, stored_acts = residuals
    mode = reverse_mode(w.decay.shape[0], len(w.layers), _mlp_macs(w))
    steps = traces.shape[0]
    ms_chunks = pad_chunks(ms, chunk)
    # memory before each chunk: m0, then the last step of every earlier chunk (the
    # per-step m_{t-1} is rebuilt inside the chunk, so no shifted copy of ms is made)
    before = jnp.concatenate([m0[None], ms_chunks[:-1, -1]])
    chunks = (pad_chunks(traces, chunk), ms_chunks, before, pad_chunks(g_ms, chunk),
              None if stored_acts is None
              else jax.tree_util.tree_map(lambda a: pad_chunks(a, chunk), stored_acts))
    mm = functools.partial(matmul, compute_dtype=compute_dtype)
    act, act_grad = activation(activation_name)
    tokens = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731  (K, B, f) -> (K*B, f)

    def chunk_body(carry, xs):
        g, grads = carry
        traces_c, ms_c, before_c, gext_c, acts_c = xs
        mprev_c = jnp.concatenate([before_c[None], ms_c[:-1]])
        dec = w.decay * mprev_c
        if acts_c is None:
            # recompute the chunk's activations in parallel from the stored memory
            first = _trace_pre(traces_c, w.w_branch, compute_dtype) + mm(dec, w.w_memory)
            z_out, zs = mlp_forward(first + w.bias,
                                    w.layers, activation_name, compute_dtype)
            th = jnp.tanh(TANH_SLOPE * z_out)
        else:  # stored by the forward loop
            zs, th = list(acts_c[0]), acts_c[1]
        acts = [act(z) for z in zs]
        dm = TANH_SCALE * th
        d_out = w.scale * tanh_unit_grad(th)
        d_hidden = [act_grad(z) for z in zs]

        def back_products(big_g, d_out, d_hidden):
            dz = big_g * d_out
            dzs = [dz]
            for (kernel, _), d_act in zip(reversed(w.layers), reversed(d_hidden)):
                dz = mm(dz, kernel.T) * d_act
                dzs.append(dz)
            return dzs[::-1]

        def step(g, xs_t):
            gext_t, d_out_t, d_hidden_t = xs_t
            big_g = g + gext_t
            dzs = back_products(big_g, d_out_t, d_hidden_t)
            ddec = big_g + mm(dzs[0], w.w_memory.T)
            # small MLPs: keep only the carry per step (each stored array is one more
            # loop operation) and redo the products below as matmuls over all tokens
            return w.decay * ddec, (g if mode == "recompute" else (g, tuple(dzs), ddec))

        def jacobian_step(g, xs_t):
            gext_t, jac_t = xs_t
            return ((g + gext_t)[:, :, None] * jac_t).sum(1), g

        if mode == "jacobian":
            g, stored = jax.lax.scan(jacobian_step, g, (gext_c, _jacobians(w, d_out, d_hidden)),
                                     reverse=True, unroll=unroll)
        else:
            g, stored = jax.lax.scan(step, g, (gext_c, d_out, tuple(d_hidden)), reverse=True,
                                     unroll=unroll)
        if mode == "store":
            big_g = stored[0] + gext_c
            dzs, ddec = list(stored[1]), stored[2]
        else:
            big_g = stored + gext_c
            dzs = back_products(big_g, d_out, d_hidden)
            ddec = big_g + mm(dzs[0], w.w_memory.T)
        dz1 = dzs[0]
        layer_grads = tuple(
            (tokens(a).T @ tokens(dz), dz.sum((0, 1)))
            for a, dz in zip(acts, dzs[1:]))
        new = CoreWeights(
            w_branch=None if w.w_branch is None else tokens(traces_c).T @ tokens(dz1),
            w_memory=tokens(dec).T @ tokens(dz1),
            bias=dz1.sum((0, 1)),
            layers=layer_grads,
            decay=(ddec * mprev_c).sum((0, 1)),
            scale=(big_g * dm).sum((0, 1)),
        )
        grads = jax.tree_util.tree_map(jnp.add, grads, new)
        d_traces = dz1 if w.w_branch is None else mm(dz1, w.w_branch.T)
        return (g, grads), d_traces

    # inside shard_map the accumulators meet per-shard data: make them vary like it
    zero_grads = varying_like(jax.tree_util.tree_map(jnp.zeros_like, w), g_ms)
    if ms_chunks.shape[0] > 1:
        # when JAX transposes this loop (forward mode, and the reverse mode built from
        # it, see `_core_jvp`) each chunk then recomputes its activations in its own
        # iteration instead of all chunks' being computed and stacked up front (a single
        # chunk's temporaries are small by `hoisted_chunk_size`, and remat costs time)
        chunk_body = jax.checkpoint(chunk_body)
    (g0, grads), d_traces = jax.lax.scan(chunk_body, (varying_like(jnp.zeros_like(m0), g_ms),
                                                      zero_grads),
                                         chunks, reverse=True)
    d_traces = unchunk(d_traces, steps)
    return (summed_like(grads, w), summed_like(d_traces, traces), summed_like(g0, m0))


# The custom backward is attached as the transpose of a tangent map
# (`elm_jax.backends.forward_mode`): `jax.grad` runs `_core_bwd`'s own loops and
# matmuls, and `jax.jvp` / `jax.jacfwd` work too.
@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6, 7))
def _core(w, traces, m0, activation, chunk, unroll, compute_dtype, store):
    return _forward(w, traces, m0, activation, chunk, unroll, compute_dtype)


@_core.defjvp
def _core_jvp(activation, chunk, unroll, compute_dtype, store, primals, tangents):
    ms, residuals = _core_fwd(*primals, activation, chunk, unroll, compute_dtype, store)
    bwd = functools.partial(_core_bwd, activation, chunk, unroll, compute_dtype, store)
    return ms, tangent_by_transposed_vjp(bwd, residuals, ms, tangents)


def memory_core(w: CoreWeights, traces: jax.Array, m0: jax.Array, *, activation: str,
                chunk: int = 64, unroll: int = 1, compute_dtype: Any = None,
                custom_backward: bool = True, store_activations: bool = False) -> jax.Array:
    """Memory trajectory of the exact ELM given the branch traces.

    Args:
      w: `CoreWeights`.
      traces: (time, batch, num_branch) branch traces b_t (time-major).
      m0: (batch, num_memory) memory before the first step.
      activation: ``"relu"`` or ``"silu"``.
      chunk: steps per chunk (the granularity of the hoisted matmuls and of the
        backward's recomputation).
      unroll: `lax.scan` unroll of the inner loops.
      compute_dtype: optional matmul operand dtype (see `elm_jax.core.matmul`).
      custom_backward: use the custom VJP (True) or plain autodiff of the same loop.
      store_activations: custom VJP only: the forward loop also stores every step's
        MLP pre-activations and tanh outputs (``(sum(hidden) + d_m)`` floats per token)
        so the backward skips recomputing them (see `should_store_activations`).
    Returns: (time, batch, num_memory) memory m_t after each step.
    """
    if custom_backward:
        return _core(w, traces, m0, activation, chunk, unroll, compute_dtype,
                     bool(store_activations))
    return _forward(w, traces, m0, activation, chunk, unroll, compute_dtype)


def hoisted_backend(dyn: Dynamics, drive: jax.Array, state: ELMState, config,
                    options: HoistedOptions, method: str = "sequential") -> tuple:
    """`elm_jax.apply`'s ``"hoisted"`` (``method="sequential"``) and ``"associative"``
    backends: (final `ELMState`, traces, memory), time-major, from the routed input
    `drive` (time, batch, num_branch).  Applies this module's chunk and storage rules."""
    traces = linear_recurrence(dyn.trace_decay, drive, state.branch_traces, method=method)
    if not config.memory_feedback:  # the parallel ELM: the MLP runs over all tokens
        delta = mlp_all_tokens(dyn.weights, traces, config, options.compute_dtype)
        memory = linear_recurrence(dyn.memory_decay, dyn.update_scale * delta, state.memory,
                                   method=method)
        return ELMState(traces[-1], memory[-1]), traces, memory
    steps, batch = drive.shape[0], drive.shape[1]
    chunk = options.chunk_size or hoisted_chunk_size(steps, batch, config)
    store = options.custom_backward and should_store_activations(
        options.store_activations, config, steps, batch,
        jnp.dtype(dyn.input_matrix.dtype).itemsize)
    memory = memory_core(core_weights(dyn, config), traces, state.memory,
                         activation=config.mlp_activation, chunk=chunk,
                         unroll=options.unroll, compute_dtype=options.compute_dtype,
                         custom_backward=options.custom_backward, store_activations=store)
    return ELMState(traces[-1], memory[-1]), traces, memory
