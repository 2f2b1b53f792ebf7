"""Synthetic long-horizon tasks, generated on the fly (no downloads), seeded.

* ``adding`` -- the adding problem (Hochreiter & Schmidhuber 1997, in the form of
  Arjovsky et al. 2016): two input channels, a value ``v_t ~ U(0, 1)`` and a marker that
  is 1 at exactly two steps, one in each half of the sequence; the target is the sum
  of the two marked values, predicted from the last step (regression, MSE).  Always
  predicting the mean (1.0) scores MSE = Var(U + U') = 1/6 ~ 0.167.
* ``delayed_recall`` -- a one-hot symbol (one of ``num_symbols``) is shown at the
  first step, then ``seq_len - 2`` steps of blank input with optional distractor spikes
  on ``num_noise_channels`` extra channels, then a recall cue on its own channel at the
  last step; the symbol is classified from the last step (cross-entropy; chance
  1/num_symbols).

Every batch is a pure function of ``(seed, split, index)``: training batch ``step``
comes from ``numpy.random.default_rng([seed, 0, step])``; the validation (split 1) and
test (split 2) sets are fixed lists of examples generated in chunks of `CHUNK`, so they
do not depend on the evaluation batch size.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from .run_config import Preset, TrainConfig
from .base import Batch, Task

CHUNK = 32
SPLITS = {"train": 0, "val": 1, "test": 2}
MAX_SEQ_LEN = 16_384


def _check_common(cfg, min_len: int) -> None:
    for name in ("seq_len", "val_size", "test_size"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"task.{name}={value!r} is invalid: expected a positive integer")
    if not min_len <= cfg.seq_len <= MAX_SEQ_LEN:
        raise ValueError(f"task.seq_len={cfg.seq_len} is invalid: expected {min_len} <= "
                         f"seq_len <= {MAX_SEQ_LEN}")


class _FixedEvalSets:
    """Evaluation batches assembled from fixed chunks of `CHUNK` examples."""

    seed: int

    def _examples(self, split: int, index: int, count: int) -> Batch:  # pragma: no cover
        raise NotImplementedError

    def _eval_size(self, split: str) -> int:  # pragma: no cover
        raise NotImplementedError

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r} is invalid: expected 'val' or 'test'")
        size = self._eval_size(split)
        chunks = [self._examples(SPLITS[split], c, min(CHUNK, size - c * CHUNK))
                  for c in range(-(-size // CHUNK))]
        data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        for start in range(0, size, batch_size):
            batch = {k: v[start:start + batch_size] for k, v in data.items()}
            n = len(batch["x"])
            weight = np.ones(batch_size, np.float32)
            if n < batch_size:
                weight[n:] = 0.0
                batch = {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]),
                                                        v.dtype)]) for k, v in batch.items()}
            batch["weight"] = weight
            yield batch

    def train_batch(self, step: int, batch_size: int) -> Batch:
        return self._examples(SPLITS["train"], step, batch_size)


# ---------------------------------------------------------------------------- adding
@dataclasses.dataclass(frozen=True)
class AddingConfig:
    """Options of the adding problem (``--set task.FIELD=VALUE``).

    Attributes:
      seq_len: time steps per sequence (2 ... 16,384).
      val_size, test_size: examples in the validation and test sets.
    """

    seq_len: int = 1000
    val_size: int = 512
    test_size: int = 1024

    def __post_init__(self) -> None:
        _check_common(self, 2)


class AddingData(_FixedEvalSets):
    """Data of the adding problem (see the module docstring)."""

    num_input = 2
    num_output = 1

    def __init__(self, config: AddingConfig, seed: int):
        self.config, self.seed, self.seq_len = config, int(seed), config.seq_len

    def _eval_size(self, split: str) -> int:
        return self.config.val_size if split == "val" else self.config.test_size

    def _examples(self, split: int, index: int, count: int) -> Batch:
        rng = np.random.default_rng([self.seed, split, index])
        t = self.seq_len
        values = rng.random((count, t), dtype=np.float32)
        first = rng.integers(0, t // 2, count)
        second = rng.integers(t // 2, t, count)
        rows = np.arange(count)
        markers = np.zeros((count, t), np.float32)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        return {"x": np.stack([values, markers], axis=-1), "y": target[:, None]}


def _adding_presets() -> dict[str, Preset]:
    model = dict(num_memory=16, lambda_value=5.0, tau_s=0.1, memory_tau_min=1.0,
                 variant="branch_elm")
    return {
        "tiny": Preset(
            "T=50, d_m=8, 300 steps: learns in seconds on a CPU (tests, smoke runs)",
            AddingConfig(seq_len=50, val_size=128, test_size=256),
            dict(model, num_memory=8, memory_tau_max=100.0),
            TrainConfig(steps=300, batch_size=16, learning_rate=1e-2, eval_every=100,
                        checkpoint_every=100, log_every=10)),
        "small": Preset(
            "T=1000, d_m=16 Branch-ELM (lambda 10, tau_m 300-3000, hoisted backend), 6000 "
            "steps: test MSE < 0.01 in minutes on a CPU",
            AddingConfig(seq_len=1000),
            dict(model, lambda_value=10.0, memory_tau_min=300.0, memory_tau_max=3000.0,
                 backend="hoisted"),
            TrainConfig(steps=6000, batch_size=32, learning_rate=5e-3, warmup_steps=200,
                        eval_every=250, checkpoint_every=500, log_every=25)),
        "long": Preset(
            "T=16,384, d_m=16 Branch-ELM (an accelerator is advised)",
            AddingConfig(seq_len=16_384, val_size=256, test_size=512),
            dict(model, lambda_value=10.0, memory_tau_min=5000.0, memory_tau_max=50_000.0),
            TrainConfig(steps=20_000, batch_size=32, learning_rate=5e-3, warmup_steps=500,
                        eval_every=1000,
                        checkpoint_every=1000, log_every=50)),
    }


# ---------------------------------------------------------------------------- recall
@dataclasses.dataclass(frozen=True)
class DelayedRecallConfig:
    """Options of the delayed-recall task (``--set task.FIELD=VALUE``).

    Attributes:
      seq_len: time steps per sequence (3 ... 16,384): symbol, delay, cue.
      num_symbols: size of the alphabet (the classes).
      num_noise_channels: extra input channels carrying distractor spikes.
      noise_rate: probability of a spike per noise channel and step of the delay.
      val_size, test_size: examples in the validation and test sets.
    """

    seq_len: int = 1000
    num_symbols: int = 8
    num_noise_channels: int = 0
    noise_rate: float = 0.0
    val_size: int = 512
    test_size: int = 1024

    def __post_init__(self) -> None:
        _check_common(self, 3)
        if isinstance(self.num_symbols, bool) or not isinstance(self.num_symbols, int) \
                or self.num_symbols < 2:
            raise ValueError(f"task.num_symbols={self.num_symbols!r} is invalid: expected "
                             f"an integer >= 2")
        if isinstance(self.num_noise_channels, bool) or \
                not isinstance(self.num_noise_channels, int) or self.num_noise_channels < 0:
            raise ValueError(f"task.num_noise_channels={self.num_noise_channels!r} is "
                             f"invalid: expected an integer >= 0")
        if not 0.0 <= self.noise_rate <= 1.0:
            raise ValueError(f"task.noise_rate={self.noise_rate!r} is invalid: expected a "
                             f"probability in [0, 1]")


class DelayedRecallData(_FixedEvalSets):
    """Data of the delayed-recall task: channels [symbols..., cue, noise...]."""

    def __init__(self, config: DelayedRecallConfig, seed: int):
        self.config, self.seed, self.seq_len = config, int(seed), config.seq_len
        self.num_input = config.num_symbols + 1 + config.num_noise_channels
        self.num_output = config.num_symbols

    def _eval_size(self, split: str) -> int:
        return self.config.val_size if split == "val" else self.config.test_size

    def _examples(self, split: int, index: int, count: int) -> Batch:
        cfg = self.config
        rng = np.random.default_rng([self.seed, split, index])
        symbols = rng.integers(0, cfg.num_symbols, count)
        x = np.zeros((count, cfg.seq_len, self.num_input), np.float32)
        x[np.arange(count), 0, symbols] = 1.0
        x[:, -1, cfg.num_symbols] = 1.0
        if cfg.num_noise_channels and cfg.noise_rate > 0:
            noise = rng.random((count, cfg.seq_len - 2, cfg.num_noise_channels))
            x[:, 1:-1, cfg.num_symbols + 1:] = (noise < cfg.noise_rate)
        return {"x": x, "y": symbols.astype(np.int32)}


def _recall_presets() -> dict[str, Preset]:
    model = dict(num_memory=16, lambda_value=20.0, tau_s=1.0, variant="branch_elm")
    return {
        "tiny": Preset(
            "T=50, 4 symbols, d_m=8, 200 steps: learns in seconds on a CPU",
            DelayedRecallConfig(seq_len=50, num_symbols=4, val_size=128, test_size=256),
            dict(model, num_memory=8, memory_tau_min=10.0, memory_tau_max=100.0),
            TrainConfig(steps=200, batch_size=16, learning_rate=1e-2, eval_every=100,
                        checkpoint_every=100, log_every=10)),
        "small": Preset(
            "T=1000, 8 symbols, 4 noise channels, d_m=16: minutes on a CPU",
            DelayedRecallConfig(seq_len=1000, num_symbols=8, num_noise_channels=4,
                                noise_rate=0.05),
            dict(model, memory_tau_min=300.0, memory_tau_max=3000.0),
            TrainConfig(steps=1500, batch_size=32, learning_rate=5e-3, eval_every=250,
                        checkpoint_every=500, log_every=25)),
        "long": Preset(
            "T=16,384, 8 symbols, d_m=16 (an accelerator is advised)",
            DelayedRecallConfig(seq_len=16_384, num_symbols=8, val_size=256, test_size=512),
            dict(model, memory_tau_min=1000.0, memory_tau_max=50_000.0),
            TrainConfig(steps=5000, batch_size=32, learning_rate=5e-3, eval_every=500,
                        checkpoint_every=500, log_every=50)),
    }


ADDING = Task(
    name="adding",
    description="adding problem: sum of two marked U(0,1) values in a noisy sequence "
                "(regression from the last step; mean predictor MSE 1/6)",
    config_cls=AddingConfig, make_data=AddingData, head="last_step", loss="mse",
    metrics=("mse",), presets=_adding_presets(), default_preset="small",
    best_metric="mse", best_mode="min",
    plot_reference={"mean predictor (1/6)": 1 / 6, "solved (0.01)": 0.01})

DELAYED_RECALL = Task(
    name="delayed_recall",
    description="delayed recall: classify the one-hot symbol shown at step 0 when cued "
                "at the last step (chance 1/num_symbols)",
    config_cls=DelayedRecallConfig, make_data=DelayedRecallData, head="last_step",
    loss="cross_entropy", metrics=("accuracy",), presets=_recall_presets(),
    default_preset="small", best_metric="accuracy", best_mode="max")

TASKS = (ADDING, DELAYED_RECALL)
