"""The NeuronIO task: fit a cortical neuron's input -> (spike, somatic voltage) mapping.

Data: NeuronIO files in the original format (`elm_jax.tasks.neuronio.formats`), either the real
dataset (``--set task.data_dir=DIR`` with ``full_ergodic_train_batch_k`` and
``Data_test`` folders) or, when ``task.data_dir`` is empty, the built-in teacher neuron
(`elm_jax.tasks.neuronio.teacher`), generated once into ``task.teacher_dir`` (default: a folder
under ``~/.cache/elm_jax`` named by the teacher settings).  Split as published: train =
``full_ergodic_train_batch_2..10``, validation = ``full_ergodic_train_batch_1``, test =
``Data_test`` (the validation files stand in for a missing test split, with a note).

Training batches: random 500-ms windows (`WindowSampler`), ``x`` (batch, 500, 1278)
int8 (``task.input_format=dense``) or, by default, the same input as an
`elm_jax.SpikeEvents` (``task.input_format=events``: the routing then costs per spike
instead of per input entry, a large saving at NeuronIO's ~0.2 % density; the results equal
the dense input's up to float rounding), ``y`` (batch, 500, 2) = (spike 0/1, soma scaled
as (v - (-67.7)) * 0.1 with v capped at -55 mV).  Loss: 0.5 * BCE(spike logit) + 0.5 *
MSE(soma), after the optional burn-in (``train.burn_in``).  Validation/test batches:
fixed windows (the same for every run, with one event capacity per split).  After
training, the trainer calls `final_evaluation`, the published evaluation (overlapping
windows with 150-ms burn-in, AUC, TP @ FP, soma RMSE/MAE/explained variance), and
stores its metrics and plots in the workdir.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import optax

from ...fileio import atomic_write
from .. import register_task
from ..base import Batch, Task
from ..run_config import Preset, TrainConfig
from .formats import IGNORE_TIME_FROM_START_MS, WINDOW_MS, NeuronIOData, soma_train_target
from .reader import find_files, load_file
from .sampler import INPUT_FORMATS, WindowSampler



@dataclasses.dataclass(frozen=True)
class NeuronIOTaskConfig:
    """Options of the NeuronIO task (``--set task.FIELD=VALUE``).

    Attributes:
      data_dir: root of NeuronIO files in the published folder layout; empty: use the
        teacher neuron's data (generated on first use).
      cache_dir: `.npz` cache of parsed files: unpickling a NeuronIO file is slow and
        the training sampler revisits files, so parsed files are
        cached (atomically, keyed by path, checked against size and mtime).  Empty
        (default): ``$ELM_JAX_CACHE/neuronio-npz`` (else ``~/.cache/elm_jax/...``);
        ``"none"``: no cache.
      window: training window (ms).
      eval_windows_per_sim: fixed validation/test windows cut from every simulation.
      teacher: teacher kind when generating (``dendritic``, ``lif``, ``alif``).
      teacher_dir: where the teacher data goes (empty: a folder under ~/.cache/elm_jax).
      teacher_train_files, teacher_sims_per_file, teacher_duration_ms, teacher_seed:
        size and seed of the generated dataset (one validation and one test file).
      input_format: ``"events"`` (default: ``x`` of train and evaluation batches is an
        `elm_jax.SpikeEvents` of fixed capacity, much faster) or ``"dense"`` (``x`` a
        (batch, window, 2 S) int8 array).
    """

    data_dir: str = ""
    cache_dir: str = ""
    window: int = WINDOW_MS
    eval_windows_per_sim: int = 4
    teacher: str = "dendritic"
    teacher_dir: str = ""
    teacher_train_files: int = 4
    teacher_sims_per_file: int = 16
    teacher_duration_ms: int = 6000
    teacher_seed: int = 0
    input_format: str = "events"

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"task.input_format={self.input_format!r} is invalid: expected "
                             f"one of {INPUT_FORMATS}")
        for name in ("window", "eval_windows_per_sim", "teacher_train_files",
                     "teacher_sims_per_file", "teacher_duration_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task.{name}={value!r} is invalid: expected a positive "
                                 f"integer")
        from .teacher import TEACHER_KINDS

        if self.teacher not in TEACHER_KINDS:
            raise ValueError(f"task.teacher={self.teacher!r} is invalid: expected one of "
                             f"{TEACHER_KINDS}")

    def parsed_cache(self) -> Path | None:
        """The folder of parsed-file caches (`cache_dir` resolved), or None."""
        if self.cache_dir.lower() == "none":
            return None
        return Path(self.cache_dir) if self.cache_dir else _cache_base() / "neuronio-npz"

    def teacher_root(self) -> Path:
        """Folder of the generated teacher dataset for these settings."""
        if self.teacher_dir:
            return Path(self.teacher_dir)
        key = (f"{self.teacher}-train{self.teacher_train_files}-sims"
               f"{self.teacher_sims_per_file}-{self.teacher_duration_ms}ms-seed"
               f"{self.teacher_seed}")
        return _cache_base() / f"neuronio-teacher-{key}"


def _cache_base() -> Path:
    return Path(os.environ.get("ELM_JAX_CACHE", Path.home() / ".cache" / "elm_jax"))


def ensure_teacher_data(cfg: NeuronIOTaskConfig) -> Path:
    """Generate the teacher dataset of `cfg` unless it is complete; returns its root.

    Files are written atomically and a ``COMPLETE`` marker is written last, so an
    interrupted generation is redone rather than used half-made.
    """
    from .teacher import generate_dataset

    root = cfg.teacher_root()
    marker = root / "COMPLETE"
    if marker.exists():
        return root
    generate_dataset(root, kind=cfg.teacher,
                     files_per_split={"train": cfg.teacher_train_files, "valid": 1, "test": 1},
                     sims_per_file=cfg.teacher_sims_per_file,
                     duration_ms=cfg.teacher_duration_ms, seed=cfg.teacher_seed)
    atomic_write(marker, lambda f: f.write(b"teacher dataset complete\n"))
    return root


def data_root(cfg: NeuronIOTaskConfig) -> Path:
    """The dataset root: ``cfg.data_dir`` or the (generated) teacher data."""
    return Path(cfg.data_dir) if cfg.data_dir else ensure_teacher_data(cfg)


def split_files(cfg: NeuronIOTaskConfig, split: str) -> list[Path]:
    """Files of ``"train"``, ``"val"`` or ``"test"`` (test falls back to validation)."""
    root = data_root(cfg)
    name = {"train": "train", "val": "valid", "test": "test"}[split]
    try:
        return find_files(root, name)
    except FileNotFoundError:
        if split != "test":
            raise
        print(f"note: no Data_test files under {root}; the validation files stand in for "
              f"the test split")
        return find_files(root, "valid")


class NeuronIOTaskData:
    """`TaskData` of NeuronIO (see the module docstring)."""

    num_output = 2

    def __init__(self, cfg: NeuronIOTaskConfig, seed: int):
        self.cfg = cfg
        self.seed = int(seed)
        self.seq_len = cfg.window
        # evaluating needs no training files: a folder with only Data_test/ is enough
        # (training from it fails when the first batch is drawn, naming the folders)
        try:
            self._train_files: list[Path] | None = split_files(cfg, "train")
        except FileNotFoundError as err:
            self._train_files, self._no_train = None, err
        self._samplers: dict[int, WindowSampler] = {}
        self._layouts: dict[str, list] = {}
        self._eval_cap: int | None = None
        probe = self._train_files or split_files(cfg, "test")
        first = load_file(probe[0], cache_dir=cfg.parsed_cache())
        self.num_input = first.num_input

    def _sampler(self, batch_size: int) -> WindowSampler:
        if self._train_files is None:
            raise self._no_train
        if batch_size not in self._samplers:
            self._samplers[batch_size] = WindowSampler(
                self._train_files, seed=self.seed, batch_size=batch_size,
                window=self.cfg.window, cache_dir=self.cfg.parsed_cache(),
                input_format=self.cfg.input_format)
        return self._samplers[batch_size]

    def train_batch(self, step: int, batch_size: int) -> Batch:
        x, y_spike, y_soma = self._sampler(batch_size).batch(step)
        return {"x": x, "y": np.stack([y_spike, y_soma], axis=-1).astype(np.float32)}

    def _eval_layouts(self, split: str) -> list[tuple[NeuronIOData, np.ndarray,
                                                      np.ndarray]]:
        """Per file of `split`: its data and the simulation and start (ms) of each fixed
        evaluation window (loaded once per run, reused by every evaluation)."""
        if split not in self._layouts:
            layouts = []
            window = self.cfg.window
            for path in split_files(self.cfg, split):
                data = load_file(path, cache_dir=self.cfg.parsed_cache())
                span = data.duration_ms - window - IGNORE_TIME_FROM_START_MS
                if span <= 0:
                    raise ValueError(f"{path}: {data.duration_ms}-ms simulations are too "
                                     f"short for {window}-ms evaluation windows")
                k = self.cfg.eval_windows_per_sim
                offsets = (np.arange(k) * span) // max(1, k)
                sims = np.repeat(np.arange(data.num_sims), k)
                starts = IGNORE_TIME_FROM_START_MS + np.tile(offsets, data.num_sims)
                layouts.append((data, sims, starts))
            self._layouts[split] = layouts
        return self._layouts[split]

    def _eval_capacity(self) -> int:
        """Events per window for evaluation batches: the most any validation or test
        window holds (of the splits present), so that both splits share one compiled
        evaluation step."""
        if self._eval_cap is None:
            counts = [1]
            for split in ("val", "test"):
                try:
                    layouts = self._eval_layouts(split)
                except FileNotFoundError:  # e.g. evaluating a folder with only Data_test/
                    continue
                counts += [int(data.window_event_counts(sims, starts, self.cfg.window).max())
                           for data, sims, starts in layouts]
            self._eval_cap = max(counts)
        return self._eval_cap

    def _eval_windows(self, split: str) -> tuple[Any, np.ndarray]:
        """x (n, window, 2 S) of every evaluation window, dense or (with one capacity for
        both evaluation splits, `_eval_capacity`) as `SpikeEvents`; y (n, window, 2)."""
        xs, ys = [], []
        window = self.cfg.window
        events = self.cfg.input_format == "events"
        for data, sims, starts in self._eval_layouts(split):
            cols = starts[:, None] + np.arange(window)
            xs.append(data.x_window_events(sims, starts, window, self._eval_capacity())
                      if events else data.x_windows(sims, starts, window))
            ys.append(np.stack([data.y_spike[sims[:, None], cols],
                                soma_train_target(data.soma_mv[sims[:, None], cols])], -1))
        y = np.concatenate(ys).astype(np.float32)
        if not events:
            return np.concatenate(xs), y
        return jax.tree_util.tree_map(lambda *leaves: np.concatenate(leaves), *xs), y

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r} is invalid: expected 'val' or 'test'")
        x, y = self._eval_windows(split)
        # x is an array or a SpikeEvents (leaves batch-first): slice and pad leaf-wise;
        # padding rows are zeros (for events: value 0, i.e. no events)
        for lo in range(0, len(y), batch_size):
            batch = {"x": x, "y": y}
            batch = jax.tree_util.tree_map(
                lambda a: _pad_axis(a[lo:lo + batch_size], batch_size, 0), batch)
            weight = np.zeros(batch_size, np.float32)
            weight[:len(y[lo:lo + batch_size])] = 1.0
            yield {**batch, "weight": weight}


def _pad_axis(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """`a` zero-padded at the end of `axis` to length `size`."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - a.shape[axis])
    return np.pad(a, pad)


# ---------------------------------------------------------------------------- loss
def spike_bce(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Sigmoid cross-entropy of the spike logit (channel 0): (..., 2) -> (...)."""
    return optax.sigmoid_binary_cross_entropy(pred[..., 0], target[..., 0].astype(pred.dtype))


def soma_mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error of the scaled somatic voltage (channel 1): (..., 2) -> (...)."""
    return (pred[..., 1] - target[..., 1].astype(pred.dtype)) ** 2


def neuronio_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """The published loss 0.5 * BCE(spike) + 0.5 * MSE(soma), per time step."""
    return 0.5 * spike_bce(pred, target) + 0.5 * soma_mse(pred, target)


# ---------------------------------------------------------------------------- final evaluation
def final_evaluation(task_config: NeuronIOTaskConfig, model_config, params,
                     out_dir: str | os.PathLike | None = None, split: str = "test",
                     apply_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The published NeuronIO evaluation of `params` on `split` (``"val"`` or ``"test"``)
    with plots into `out_dir`; returns the metrics (keys ``AUC``, ``TP @ 0.0025 FP``,
    ``TP @ 0.0100 FP``, ``soma_RMSE``, ``soma_MAE``, ``soma_explained_variance_percent``,
    ...) and the evaluated files.  `apply_kwargs`: the run's model options as
    `elm_jax.apply` keywords (backend, compute_dtype, ...), used for every prediction."""
    from .evaluation import ModelPredictor, evaluate_neuronio

    files = split_files(task_config, split)
    data = [load_file(p, cache_dir=task_config.parsed_cache()) for p in files]
    metrics = evaluate_neuronio(ModelPredictor(model_config, params, apply_kwargs=apply_kwargs), data,
                                plot_dir=out_dir, plot_title=f"NeuronIO {split}")
    metrics["files"] = [str(p) for p in files]
    return metrics


# ---------------------------------------------------------------------------- presets
def _branch(num_memory: int, **kw: Any) -> dict[str, Any]:
    return dict(num_memory=num_memory, lambda_value=5.0, memory_tau_min=1.0,
                memory_tau_max=150.0, num_branch=45, num_synapse_per_branch=100,
                routing="neuronio", **kw)


_PAPER_TRAIN = TrainConfig(steps=350_000, batch_size=8, learning_rate=5e-4, optimizer="adam",
                           schedule="cosine", grad_clip=0.0, eval_every=10_000,
                           checkpoint_every=10_000, eval_batches=0, log_every=100)

PRESETS = {
    "paper_branch_dm15": Preset(
        "Branch-ELM d_m=15 (45x100, NeuronIO routing, lambda 5, tau_m 1-150): Adam 5e-4, "
        "batch 8, 35x10k steps, cosine; set task.data_dir to the real dataset",
        NeuronIOTaskConfig(), _branch(15), _PAPER_TRAIN),
    "paper_branch_dm20": Preset(
        "Branch-ELM d_m=20 as the paper's Fig. 4 model; as paper_branch_dm15 otherwise",
        NeuronIOTaskConfig(), _branch(20), _PAPER_TRAIN),
    "paper_elm_dm20": Preset(
        "vanilla ELM d_m=20 (Table S1: lambda 10, d_mlp 40); as paper_branch_dm15 otherwise",
        NeuronIOTaskConfig(), dict(num_memory=20, lambda_value=10.0, memory_tau_min=1.0,
                                   memory_tau_max=150.0), _PAPER_TRAIN),
    "small": Preset(
        "Branch-ELM d_m=15 on the built-in dendritic teacher neuron; about 10 min on a "
        "2-core CPU",
        NeuronIOTaskConfig(),
        _branch(15, variant="branch_elm"),
        TrainConfig(steps=3000, batch_size=8, learning_rate=5e-3, optimizer="adam",
                    schedule="cosine", warmup_steps=100, grad_clip=1.0, burn_in=150,
                    eval_every=500, checkpoint_every=500, log_every=50)),
    "tiny": Preset(
        "a seconds-long smoke run: d_m=4 on a tiny LIF teacher dataset",
        NeuronIOTaskConfig(window=200, eval_windows_per_sim=1, teacher="lif",
                           teacher_train_files=1, teacher_sims_per_file=2,
                           teacher_duration_ms=1200),
        dict(num_memory=4, num_branch=6, num_synapse_per_branch=256, routing="neuronio"),
        TrainConfig(steps=6, batch_size=4, learning_rate=1e-2, eval_every=3,
                    checkpoint_every=3, log_every=1)),
}

TASK = register_task(Task(
    name="neuronio",
    description="NeuronIO: per-ms spike logit and somatic voltage of a cortical neuron "
                "(real data via task.data_dir, else the built-in teacher neuron)",
    config_cls=NeuronIOTaskConfig,
    make_data=NeuronIOTaskData,
    head="per_step",
    loss=neuronio_loss,
    metrics={"spike_bce": spike_bce, "soma_mse": soma_mse},
    presets=PRESETS,
    default_preset="small",
    best_metric="soma_mse",
    best_mode="min",
    final_evaluation=final_evaluation,
))
