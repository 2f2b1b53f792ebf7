"""A PyTorch baseline with the design of the published ELM implementation.

Written from the model's equations (see the README and ``elm_jax.core``), following the
*design* of the reference PyTorch code: a TorchScript module whose ``forward`` routes the
inputs to per-synapse channels once with ``index_select`` (masking empty slots), then
calls a per-step ``dynamics`` method in a loop over time, keeping a trace per synapse,
summing synapses into branches, concatenating ``[branch traces, kappa_m * m]`` and
applying the MLP; the readout is one ``Linear`` over the stacked memory.

torch is imported only inside the functions here, so this module imports without it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def torch_available() -> bool:
    """Whether ``import torch`` works in this interpreter."""
    try:
        import torch  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


def build_torch_elm(config, params: dict | None = None, threads: int = 2) -> Any:
    """A scripted (`torch.jit.script`) per-step ELM equal to ``elm_jax.apply``.

    Args:
      config: an `elm_jax.ELMConfig` with ``mlp_num_layers == 1`` and
        ``memory_feedback=True`` (the published model).
      params: optional elm_jax parameter dict to load (kernels are transposed into
        ``Linear.weight``); otherwise torch's default initialisation.
      threads: ``torch.set_num_threads``.
    Returns: the scripted module; ``module(x)`` maps (batch, time, num_input) float32 to
      (batch, time, num_output).
    """
    import torch
    from torch import nn

    from elm_jax.routing import routing_table

    if config.mlp_num_layers != 1 or not config.memory_feedback:
        raise ValueError("the torch baseline covers mlp_num_layers=1 with memory feedback")
    torch.set_num_threads(threads)
    table = np.asarray(routing_table(config))

    class PerStepELM(nn.Module):
        def __init__(self):
            super().__init__()
            nb, ns, dm = config.num_branch, config.num_synapse_per_branch, config.num_memory
            self.num_branch = nb
            self.num_synapse_per_branch = ns
            self.num_memory = dm
            self.lambda_value = float(config.lambda_value)
            self.elm_v1 = config.variant == "elm"
            self.tau_min = float(config.memory_tau_min)
            self.tau_max = float(config.memory_tau_max)
            self.delta_t = float(config.delta_t)
            self.kappa_s = float(math.exp(-config.delta_t / max(config.tau_s, 1e-6)))
            self.w_s_raw = nn.Parameter(torch.full((nb * ns,), float(config.w_s_value)))
            self.tau_m_raw = nn.Parameter(torch.zeros(dm), requires_grad=False)
            self.mlp = nn.Sequential(nn.Linear(nb + dm, config.mlp_hidden_size),
                                     nn.ReLU() if config.mlp_activation == "relu"
                                     else nn.SiLU(),
                                     nn.Linear(config.mlp_hidden_size, dm))
            self.w_y = nn.Linear(dm, config.num_output)
            self.register_buffer("routing", torch.as_tensor(np.maximum(table, 0),
                                                            dtype=torch.long))
            self.register_buffer("valid", torch.as_tensor(table >= 0, dtype=torch.float32))

        @torch.jit.export
        def dynamics(self, x_t: torch.Tensor, s: torch.Tensor, m: torch.Tensor,
                     w_s: torch.Tensor, kappa_s: float, kappa_m: torch.Tensor,
                     scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s = kappa_s * s + w_s * x_t
            branches = s.view(s.shape[0], self.num_branch,
                              self.num_synapse_per_branch).sum(-1)
            decayed = kappa_m * m
            delta = 1.7159 * torch.tanh(2.0 / 3.0 * self.mlp(
                torch.cat([branches, decayed], dim=-1)))
            return s, decayed + scale * delta

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, steps = x.shape[0], x.shape[1]
            routed = torch.index_select(x, 2, self.routing) * self.valid
            w_s = torch.relu(self.w_s_raw)
            tau_m = (self.tau_max - self.tau_min) * torch.sigmoid(self.tau_m_raw) \
                + self.tau_min
            tau_m = torch.clamp(tau_m, min=1e-6)
            kappa_m = torch.exp(-self.delta_t / tau_m)
            if self.elm_v1:
                scale = self.lambda_value * (1.0 - kappa_m)
            else:
                scale = 1.0 - torch.exp(-self.delta_t * self.lambda_value / tau_m)
            kappa_s = self.kappa_s
            s = torch.zeros(batch, w_s.shape[0], dtype=x.dtype)
            m = torch.zeros(batch, self.num_memory, dtype=x.dtype)
            memory = []
            for t in range(steps):
                s, m = self.dynamics(routed[:, t], s, m, w_s, kappa_s, kappa_m, scale)
                memory.append(m)
            return self.w_y(torch.stack(memory, dim=1))

    module = PerStepELM()
    if params is not None:
        load_jax_params(module, params)
    return torch.jit.script(module)


def load_jax_params(module, params: dict) -> None:
    """Copy an elm_jax parameter dict into the (unscripted or scripted) torch module."""
    import torch

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    with torch.no_grad():
        module.w_s_raw.copy_(t(params["w_s_raw"]))
        module.tau_m_raw.copy_(t(params["tau_m_raw"]))
        module.mlp[0].weight.copy_(t(params["mlp"][0]["kernel"]).T)
        module.mlp[0].bias.copy_(t(params["mlp"][0]["bias"]))
        module.mlp[2].weight.copy_(t(params["mlp"][1]["kernel"]).T)
        module.mlp[2].bias.copy_(t(params["mlp"][1]["bias"]))
        module.w_y.weight.copy_(t(params["readout"]["kernel"]).T)
        module.w_y.bias.copy_(t(params["readout"]["bias"]))
