"""The ELM parameter pytree: initialisation, validation, counting, trainability.

Parameters are a plain dict (no Flax needed)::

    {
      "w_s_raw":   (num_synapse,)              synapse weights before the ReLU, w_s = relu(w_s_raw)
      "tau_m_raw": (num_memory,)               memory time constants before the scaled sigmoid,
                                               tau_m = tau_min + (tau_max - tau_min) * sigmoid(tau_m_raw)
      "mlp": [ {"kernel": (in, out), "bias": (out,)}, ... ]   mlp_num_layers + 1 dense layers;
                                               the first layer's input is [branch traces, kappa_m * m]
      "readout": {"kernel": (num_memory, num_output), "bias": (num_output,)}
    }

Kernels are stored ``(in, out)`` (Flax layout; the torch ``Linear.weight`` is the
transpose).  ``tau_m_raw`` is always present but is trained only when
``config.learn_memory_tau``: the model applies ``stop_gradient`` to it otherwise, and
`trainable_mask` marks it so optimizers (and weight decay) leave it alone.  The trace
time constant and the routing table are not parameters: they live in `ELMConfig`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .config import ELMConfig

Params = dict[str, Any]


def _dense_init(key: jax.Array, fan_in: int, fan_out: int, dtype) -> dict[str, jax.Array]:
    # torch.nn.Linear's default: Kaiming-uniform with a=sqrt(5) for the weight, i.e.
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
    bound = 1.0 / math.sqrt(fan_in)
    k_w, k_b = jax.random.split(key)
    return {
        "kernel": jax.random.uniform(k_w, (fan_in, fan_out), dtype, -bound, bound),
        "bias": jax.random.uniform(k_b, (fan_out,), dtype, -bound, bound),
    }


def initial_tau_m_raw(config: ELMConfig) -> np.ndarray:
    """Unconstrained tau_m whose scaled sigmoid is log-spaced over [tau_min, tau_max].

    As the reference: ``logspace(log10(tau_min + 1e-6), log10(tau_max - 1e-6), d_m)``
    mapped through ``log((tau - lo) / (hi - tau))`` with tau clipped to
    ``[lo + 1e-6, hi - 1e-6]``.  Computed in float64.

    Returns: (num_memory,) float64.
    """
    lo, hi = config.memory_tau_min, config.memory_tau_max
    tau = np.logspace(math.log10(lo + 1e-6), math.log10(hi - 1e-6), config.num_memory)
    tau = np.clip(tau, lo + 1e-6, hi - 1e-6)
    return np.log((tau - lo) / (hi - tau))


def mlp_layer_sizes(config: ELMConfig) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each MLP layer, first to last."""
    sizes, fan_in = [], config.mlp_input_size
    for _ in range(config.mlp_num_layers):
        sizes.append((fan_in, config.mlp_hidden_size))
        fan_in = config.mlp_hidden_size
    sizes.append((fan_in, config.num_memory))
    return sizes


def init_params(key: jax.Array, config: ELMConfig, dtype=jnp.float32) -> Params:
    """Initialise parameters as the reference implementation does.

    Dense layers use torch.nn.Linear's default (Kaiming-uniform, bound 1/sqrt(fan_in),
    same for biases); ``w_s_raw`` is the constant ``config.w_s_value``; ``tau_m_raw``
    is `initial_tau_m_raw`.

    Args:
      key: a ``jax.random`` key.
      config: the model configuration.
      dtype: float dtype of every leaf (float64 needs ``jax_enable_x64``).
    Returns: the parameter dict described in the module docstring.
    """
    sizes = mlp_layer_sizes(config)
    keys = jax.random.split(key, len(sizes) + 1)
    return {
        "w_s_raw": jnp.full((config.num_synapse,), config.w_s_value, dtype),
        "tau_m_raw": jnp.asarray(initial_tau_m_raw(config), dtype),
        "mlp": [_dense_init(k, i, o, dtype) for k, (i, o) in zip(keys[:-1], sizes)],
        "readout": _dense_init(keys[-1], config.num_memory, config.num_output, dtype),
    }


def param_shapes(config: ELMConfig) -> Params:
    """The expected shape of every leaf, in the structure of the parameter dict."""
    return {
        "w_s_raw": (config.num_synapse,),
        "tau_m_raw": (config.num_memory,),
        "mlp": [{"kernel": (i, o), "bias": (o,)} for i, o in mlp_layer_sizes(config)],
        "readout": {"kernel": (config.num_memory, config.num_output),
                    "bias": (config.num_output,)},
    }


def check_params(params: Params, config: ELMConfig) -> None:
    """Raise ValueError naming the first leaf whose structure, shape or dtype is wrong."""
    expected = param_shapes(config)
    if not isinstance(params, dict) or set(params) != set(expected):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with keys {sorted(expected)}, got {got}")
    if not isinstance(params["mlp"], (list, tuple)) or \
            len(params["mlp"]) != len(expected["mlp"]):
        n = len(params["mlp"]) if isinstance(params["mlp"], (list, tuple)) else "?"
        raise ValueError(f"params['mlp']: expected {len(expected['mlp'])} layers "
                         f"(mlp_num_layers={config.mlp_num_layers} + 1), got {n}")
    flat_expected = jax.tree_util.tree_flatten_with_path(
        expected, is_leaf=lambda t: isinstance(t, tuple))[0]
    for path, shape in flat_expected:
        leaf: Any = params
        for entry in path:
            key = entry.key if hasattr(entry, "key") else entry.idx
            try:
                leaf = leaf[key]
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"params{jax.tree_util.keystr(path)}: missing "
                                 f"(expected shape {shape})") from None
        name = f"params{jax.tree_util.keystr(path)}"
        if tuple(np.shape(leaf)) != shape:
            raise ValueError(f"{name}: expected shape {shape} for this config, got "
                             f"{tuple(np.shape(leaf))}")
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{name}: expected a floating dtype, got {dtype}")


def trainable_mask(config: ELMConfig) -> Params:
    """Pytree of bools, True for trained leaves (``tau_m_raw`` only if learn_memory_tau).

    Use it with ``optax.masked`` / ``optax.multi_transform`` so frozen leaves get
    neither updates nor weight decay.
    """
    shapes = param_shapes(config)
    mask = jax.tree_util.tree_map(lambda _: True, shapes,
                                  is_leaf=lambda t: isinstance(t, tuple))
    mask["tau_m_raw"] = bool(config.learn_memory_tau)
    return mask


def count_params(config: ELMConfig) -> int:
    """Number of trained parameters (the count the reference reports).

    w_s, the MLP, the readout, and tau_m when learned; the trace time constants and the
    routing table are fixed buffers and do not count.  E.g. the released NeuronIO
    Branch-ELMs: d_m = 1 -> 4601, 15 -> 6827, 100 -> 54002.
    """
    shapes = param_shapes(config)
    mask = trainable_mask(config)
    is_shape = lambda t: isinstance(t, tuple)  # noqa: E731
    sizes = jax.tree_util.tree_map(lambda s: int(np.prod(s)), shapes, is_leaf=is_shape)
    return int(sum(jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda n, m: n if m else 0, sizes, mask))))
