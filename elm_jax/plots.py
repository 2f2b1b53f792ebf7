"""Plots of a model run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_run(path: str | Path, x: np.ndarray, y: np.ndarray, memory: np.ndarray,
             title: str = "") -> Path:
    """Save a PNG with input raster, outputs and memory traces of one sequence.

    Args:
      x: (time, num_input) inputs.
      y: (time, num_output) outputs.
      memory: (time, num_memory) memory units.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1.2, 2]})
    t_exc, i_exc = np.nonzero(x > 0)
    t_inh, i_inh = np.nonzero(x < 0)
    axes[0].scatter(t_exc, i_exc, s=0.3, c="tab:red", label="excitatory (+1)")
    axes[0].scatter(t_inh, i_inh, s=0.3, c="tab:blue", label="inhibitory (-1)")
    axes[0].set_ylabel("input channel")
    axes[0].legend(loc="upper right", markerscale=10, fontsize=8)
    for k in range(y.shape[1]):
        axes[1].plot(y[:, k], lw=0.8, label=f"y[{k}]")
    axes[1].set_ylabel("outputs (raw)")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[2].plot(memory, lw=0.7)
    axes[2].set_ylabel("memory units m")
    axes[2].set_xlabel("time step (ms)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
