"""The SHD training step: the paper's ELM on spoken-digit spikes, JAX vs the PyTorch
per-step design (the runner is `benchmarks.neuronio.run`, with this workload).

The model is the paper's SHD ELM (`shd_elm_config`: 700 input channels, identity
routing, d_m = 100, d_mlp = 200, lambda 5, delta_t = the 2-ms bin; 186K parameters),
trained as published: batch 8, T = 500 steps (1 s in 2-ms bins), Adamax (lr 5e-3),
cross-entropy on the last output.  The input is real spoken digits when
``../shared/data/spoken_digits/fsdd_shd_train.h5`` is there (the first `batch`
samples, binned by `elm_jax.tasks.spoken_digits.preprocess`), else the synthetic
generator of the same layout; no input dropout (the paper's 0.5 halves the events).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from . import neuronio

NAME = "shd_step"
BIN_MS = 2
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / \
    "spoken_digits" / "fsdd_shd_train.h5"


def shd_elm_config(bin_ms: int = BIN_MS):
    """The paper's SHD ELM (paper-notes section 2.2) with delta_t = the bin size."""
    from elm_jax.config import ELMConfig

    return ELMConfig(num_input=700, num_output=20, num_memory=100, mlp_hidden_size=200,
                     lambda_value=5.0, memory_tau_min=1.0, memory_tau_max=150.0,
                     routing="none", num_branch=700, num_synapse_per_branch=1,
                     delta_t=float(bin_ms), variant="elm")


def make_data(config, batch: int, steps: int, seed: int = 0):
    """x (batch, steps, 700) float32 spike counts per bin, labels (batch,) int32."""
    from elm_jax.tasks.spoken_digits.formats import read_shd
    from elm_jax.tasks.spoken_digits.preprocess import bin_entries
    from elm_jax.tasks.spoken_digits.synthetic import synthetic_dataset

    data = read_shd(REAL_DATA) if REAL_DATA.exists() else synthetic_dataset(4 * batch,
                                                                           seed=seed)
    indices = np.arange(batch) % len(data)
    x = bin_entries(data, indices, BIN_MS).to_dense()[:, :steps]
    labels = np.asarray(data.labels)[indices].astype(np.int32) % config.num_output
    return np.ascontiguousarray(x, np.float32), labels


def _loss_jax(y, labels):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(y[:, -1], labels).mean()


def _loss_torch(y, labels):
    import torch

    return torch.nn.functional.cross_entropy(y[:, -1], labels.long())


SHD = neuronio.Workload(
    NAME, "SHD training step (the paper's ELM, 2-ms bins)", make_data,
    lambda y, *t: _loss_jax(y, *t), lambda y, *t: _loss_torch(y, *t), "adamax",
    "cross-entropy on the last output",
    f"{'real spoken digits (FSDD in SHD layout)' if REAL_DATA.exists() else 'SYNTHETIC spike digits'}"
    f", {BIN_MS}-ms bin counts, float32 dense or SpikeEvents (*_events settings)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.workload = SHD
    args.preset = shd_elm_config()
    return neuronio.run(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    neuronio.add_arguments(p)
    p.set_defaults(lr=5e-3, lstm_hidden=[], breakdown=False,
                   variants=["auto", "matrix", "auto_events", "matrix_events"])


def quick_overrides(args: argparse.Namespace) -> None:
    """Tiny settings for --quick (smoke test)."""
    neuronio.quick_overrides(args)
    args.variants = ["auto", "matrix_events"]
