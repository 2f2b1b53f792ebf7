"""The memory update's MLP, written once for every backend.

``f(m_{t-1}, b_t) = kappa_m m_{t-1} + u * scaled_tanh(MLP([b_t, kappa_m m_{t-1}]))``
(`memory_update`).  `mlp_forward` runs the layers after the first from the first
layer's pre-activation and returns the hidden pre-activations as well, so the custom
backward passes (`elm_jax.backends.hoisted`, `elm_jax.backends.deer`) take derivatives
from the same values.  `ACTIVATIONS` maps each hidden activation to ``(function,
derivative)``; `scaled_tanh` and `scaled_tanh_grad` are the output nonlinearity and its
derivative.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp

TANH_SCALE = 1.7159
TANH_SLOPE = 2.0 / 3.0


def scaled_tanh(x: jax.Array) -> jax.Array:
    """LeCun's scaled tanh ``1.7159 * tanh(2x/3)`` (the reference's ``custom_tanh``)."""
    return TANH_SCALE * jnp.tanh(TANH_SLOPE * x)


def tanh_unit_grad(th: jax.Array) -> jax.Array:
    """Derivative of `scaled_tanh` from ``th = tanh(2x/3)`` (the value a loop stored)."""
    return (TANH_SCALE * TANH_SLOPE) * (1.0 - th * th)


def scaled_tanh_grad(x: jax.Array) -> jax.Array:
    """Derivative of `scaled_tanh`."""
    return tanh_unit_grad(jnp.tanh(TANH_SLOPE * x))


def _relu_grad(z: jax.Array) -> jax.Array:
    return (z > 0).astype(z.dtype)


def _silu_grad(z: jax.Array) -> jax.Array:
    sig = jax.nn.sigmoid(z)
    return sig * (1.0 + z * (1.0 - sig))


# name -> (activation, its derivative)
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (jax.nn.relu, _relu_grad),
    "silu": (jax.nn.silu, _silu_grad),
}


def activation(name: str) -> tuple[Callable, Callable]:
    """``(fn, derivative)`` of the hidden activation `name` (see `ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation={name!r} is invalid: expected one of "
                         f"{tuple(ACTIVATIONS)}") from None


def matmul(a: jax.Array, w: jax.Array, compute_dtype=None) -> jax.Array:
    """``a @ w``; with `compute_dtype` (e.g. bfloat16) the operands are cast to it and
    the product is accumulated and returned in the dtype of `a`."""
    if compute_dtype is None or jnp.dtype(compute_dtype) == a.dtype:
        return a @ w
    return jnp.matmul(a.astype(compute_dtype), w.astype(compute_dtype),
                      preferred_element_type=a.dtype)


def layer_pairs(mlp: Iterable[dict]) -> tuple:
    """``((kernel, bias), ...)`` of a sequence of ``{"kernel", "bias"}`` layer dicts."""
    return tuple((layer["kernel"], layer["bias"]) for layer in mlp)


def mlp_forward(first_pre: jax.Array, layers: Iterable, activation_name: str,
                compute_dtype: Any = None) -> tuple[jax.Array, list]:
    """The MLP after its first layer.

    Args:
      first_pre: (..., h1) pre-activation of the first layer.
      layers: ``((kernel, bias), ...)`` of the later layers.
      activation_name: a key of `ACTIVATIONS`.
      compute_dtype: matmul operand dtype (see `matmul`).
    Returns: ``(output pre-activation (..., d_m), [hidden pre-activations])``: one
      hidden pre-activation (the input of an activation) per later layer.
    """
    act = activation(activation_name)[0]
    z, hidden = first_pre, []
    for kernel, bias in layers:
        hidden.append(z)
        z = matmul(act(z), kernel, compute_dtype) + bias
    return z, hidden


class MemoryWeights(NamedTuple):
    """The constants the memory update depends on (a pytree; differentiable).

    Attributes:
      mlp: tuple of {"kernel": (in, out), "bias": (out,)} layer dicts.
      memory_decay: (num_memory,) ``kappa_m``.
      update_scale: (num_memory,) ``u``.
    """

    mlp: tuple
    memory_decay: jax.Array
    update_scale: jax.Array


# Key of the first layer's memory half once the trace half is folded into the input
# projection (`elm_jax.input_paths.fold`): a layer ``{FOLDED_KERNEL: (num_memory or 0,
# h1), "bias": (h1,)}`` receives traces that are already ``b_t @ W_b`` (..., h1).
FOLDED_KERNEL = "memory_kernel"


def split_first_layer(layer: dict, num_branch: int) -> tuple:
    """``(trace_kernel, memory_kernel, bias)`` of a first layer; ``trace_kernel`` is None
    for a folded layer (see `FOLDED_KERNEL`).  ``trace_kernel``: (num_branch, h1),
    ``memory_kernel``: (num_memory, h1), or (0, h1) without memory feedback."""
    if FOLDED_KERNEL in layer:
        return None, layer[FOLDED_KERNEL], layer["bias"]
    kernel = layer["kernel"]
    return kernel[:num_branch], kernel[num_branch:], layer["bias"]


def first_layer(w: MemoryWeights, decayed: jax.Array | None, branch_traces: jax.Array,
                num_branch: int, compute_dtype: Any = None) -> jax.Array:
    """First-layer pre-activation from the traces and (with feedback) ``kappa_m m``;
    `decayed` None: the parallel ELM (the MLP sees the traces only).  For a folded
    first layer the traces are already projected (``b_t @ W_b``)."""
    trace_kernel, memory_kernel, bias = split_first_layer(w.mlp[0], num_branch)
    if trace_kernel is None:
        pre = branch_traces + bias
    else:
        pre = matmul(branch_traces, trace_kernel, compute_dtype) + bias
    if decayed is None:
        return pre
    return pre + matmul(decayed, memory_kernel, compute_dtype)


def memory_update(w: MemoryWeights, memory: jax.Array, branch_traces: jax.Array, config,
                  compute_dtype: Any = None, *, return_pre: bool = False):
    """``m_t = f(m_{t-1}, b_t)`` for any leading shape.

    Args:
      w: `MemoryWeights`.
      memory: (..., num_memory) ``m_{t-1}``.
      branch_traces: (..., num_branch) ``b_t``.
      config: the `elm_jax.ELMConfig`.
      compute_dtype: optional matmul operand dtype (see `matmul`).
      return_pre: also return ``(output pre-activation, [hidden pre-activations])``.
    Returns: (..., num_memory) ``m_t`` (and the pre-activations when asked).
    """
    decayed = w.memory_decay * memory
    first = first_layer(w, decayed if config.memory_feedback else None, branch_traces,
                        config.num_branch, compute_dtype)
    z, hidden = mlp_forward(first, layer_pairs(w.mlp[1:]), config.mlp_activation,
                            compute_dtype)
    new = decayed + w.update_scale * scaled_tanh(z)
    return (new, (z, hidden)) if return_pre else new


def mlp_all_tokens(w: MemoryWeights, traces: jax.Array, config,
                   compute_dtype: Any = None) -> jax.Array:
    """``scaled_tanh(MLP(b))`` for every token (the parallel ELM: no memory input)."""
    first = first_layer(w, None, traces, config.num_branch, compute_dtype)
    z, _ = mlp_forward(first, layer_pairs(w.mlp[1:]), config.mlp_activation, compute_dtype)
    return scaled_tanh(z)
