"""An independent float64 NumPy loop of the ELM, written from the paper's equations.

It follows the reference implementation's structure literally (route the inputs to
synapse slots, keep one trace per synapse for the v1 "elm" variant or one per branch
for the v2 "branch_elm" variant, concatenate [branch sums, kappa_m * m] before the MLP)
and shares no code with `elm_jax`, so agreement with `elm_jax.apply` is a real check.
"""

from __future__ import annotations

import math

import numpy as np


def numpy_routing(num_input, num_branch, per_branch, routing, seed=None, table=None):
    """Synapse -> input index with -1 for empty slots, built from the specification.

    * ``"none"``: synapse j reads input j.
    * ``"neuronio"`` (the reference's ``neuronio_routing``, paper-notes section 1.4):
      position p of the interleaved order reads input ``(p % 2) * (num_input // 2) +
      p // 2`` ([e0, i0, e1, i1, ...]); window w covers positions ``w * stride + k``,
      ``stride = ceil(num_input / num_branch)``, ``k < per_branch``; positions past the
      end are empty slots.
    * ``"random"``: every synapse draws an input uniformly with replacement.  The
      reference drew them with ``torch.randint``; elm_jax documents its own seeded
      construction (docs/api.md, `ELMConfig.routing_seed`): NumPy's default generator
      (PCG64) seeded with `seed`, one call of ``integers`` for the ``num_branch *
      per_branch`` synapses.  Re-implemented here from that description.

    `table` (an explicit table, e.g. read from a checkpoint) is returned as given.
    """
    if table is not None:
        return np.asarray(table)
    num_synapse = num_branch * per_branch
    if routing == "none":
        assert num_synapse == num_input, (num_synapse, num_input)
        return np.arange(num_input)
    if routing == "random":
        if seed is None:
            raise ValueError("random routing needs the routing seed")
        generator = np.random.Generator(np.random.PCG64(seed))
        return generator.integers(num_input, size=num_synapse)
    if routing == "neuronio":
        half = num_input // 2
        interleaved = np.array([(i % 2) * half + i // 2 for i in range(num_input)])
        stride = int(math.ceil(num_input / num_branch))
        out = []
        for w in range(num_branch):
            for k in range(per_branch):
                pos = w * stride + k
                out.append(interleaved[pos] if pos < num_input else -1)
        return np.array(out)
    raise ValueError(f"unknown routing {routing!r}")


def numpy_forward(params, x, *, table, num_branch, tau_s, delta_t, lambda_value,
                  tau_min, tau_max, variant, activation, memory_feedback=True):
    """Run the ELM step by step in float64.

    Args:
      params: dict with w_s_raw (S,), tau_m_raw (M,), mlp [{kernel (in,out), bias}],
        readout {kernel (M,O), bias (O,)} (any array type; converted to float64).
      x: (B, T, I).
    Returns: dict y (B,T,O), memory (B,T,M), traces (B,T,S) for "elm" or (B,T,nb).
    """
    f = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    x = f(x)
    w_s = np.maximum(f(params["w_s_raw"]), 0.0)
    tau_m = (tau_max - tau_min) / (1.0 + np.exp(-f(params["tau_m_raw"]))) + tau_min
    kappa_m = np.exp(-delta_t / np.maximum(tau_m, 1e-6))
    kappa_s = math.exp(-delta_t / tau_s)
    if variant == "elm":
        scale = lambda_value * (1.0 - kappa_m)
    else:
        scale = 1.0 - np.exp(-delta_t * lambda_value / np.maximum(tau_m, 1e-6))
    layers = [(f(l["kernel"]), f(l["bias"])) for l in params["mlp"]]
    w_y, b_y = f(params["readout"]["kernel"]), f(params["readout"]["bias"])
    act = (lambda h: np.maximum(h, 0.0)) if activation == "relu" else \
        (lambda h: h / (1.0 + np.exp(-h)))
    table = np.asarray(table)
    S, B, T = table.size, x.shape[0], x.shape[1]
    M = tau_m.size
    per_branch = S // num_branch
    s = np.zeros((B, S if variant == "elm" else num_branch))
    m = np.zeros((B, M))
    ys, ms, trs = [], [], []
    for t in range(T):
        routed = np.zeros((B, S))
        for j in range(S):
            if table[j] >= 0:
                routed[:, j] = x[:, t, table[j]]
        if variant == "elm":
            s = kappa_s * s + w_s * routed
            branch = s.reshape(B, num_branch, per_branch).sum(-1)
        else:
            s = kappa_s * s + (w_s * routed).reshape(B, num_branch, per_branch).sum(-1)
            branch = s
        h = np.concatenate([branch, kappa_m * m], axis=-1) if memory_feedback else branch
        for i, (k, b) in enumerate(layers):
            h = h @ k + b
            if i < len(layers) - 1:
                h = act(h)
        dm = 1.7159 * np.tanh(h * 2.0 / 3.0)
        m = kappa_m * m + scale * dm
        ys.append(m @ w_y + b_y)
        ms.append(m)
        trs.append(s.copy())
    return {"y": np.stack(ys, 1), "memory": np.stack(ms, 1), "traces": np.stack(trs, 1)}
