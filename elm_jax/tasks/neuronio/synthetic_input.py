"""NeuronIO-like synthetic input spikes (interim generator for demos and tests).

NeuronIO inputs are 1278 channels: 639 excitatory synapses (value +1 when they spike)
followed by 639 inhibitory ones (value -1), in 1 ms bins.  This generator draws Poisson
spikes whose per-channel rates drift slowly (a random rate per channel, re-drawn every
`rate_interval_ms`, smoothed), which is enough to drive a model visibly; it does not
claim the statistics of the original dataset.
"""

from __future__ import annotations

import numpy as np


def neuronio_like_spikes(seed: int, batch: int, time: int, num_input: int = 1278, *,
                         mean_rate_hz: float = 2.0, rate_interval_ms: int = 200,
                         delta_t_ms: float = 1.0) -> np.ndarray:
    """Random signed spike trains in the NeuronIO layout.

    Args:
      seed: NumPy RNG seed.
      batch, time: output sizes (time in bins of `delta_t_ms`).
      num_input: even number of channels; first half excitatory (+1), second half
        inhibitory (-1).
      mean_rate_hz: average firing rate per channel.
      rate_interval_ms: how often each channel's rate is re-drawn.
    Returns: (batch, time, num_input) int8 with values in {-1, 0, 1}.
    """
    if num_input % 2:
        raise ValueError(f"num_input={num_input} is invalid: expected an even number "
                         f"(excitatory then inhibitory halves)")
    rng = np.random.default_rng(seed)
    blocks = -(-time // rate_interval_ms) + 1
    rates = rng.exponential(mean_rate_hz, size=(batch, blocks, num_input))
    # piecewise-linear interpolation between block rates gives smooth drift
    grid = np.arange(time) / rate_interval_ms
    low = np.floor(grid).astype(int)
    frac = (grid - low)[None, :, None]
    rate = rates[:, low] * (1 - frac) + rates[:, low + 1] * frac
    spikes = rng.random((batch, time, num_input)) < rate * delta_t_ms * 1e-3
    sign = np.concatenate([np.ones(num_input // 2), -np.ones(num_input // 2)]).astype(np.int8)
    return spikes.astype(np.int8) * sign
