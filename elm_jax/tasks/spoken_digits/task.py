"""The ``shd`` and ``shd_adding`` tasks: classify spoken digits from cochlea spike trains.

Data (``--set task.data_dir=DIR``): files in SHD's HDF5 layout (`formats`), found in DIR by
SHD's names (``shd_train.h5`` / ``shd_test.h5``, also ``.gz`` / ``.zip``) or by any
``*train*.h5`` / ``*test*.h5`` name (`formats.find_split_files`); DIR may also be one
``.h5`` file, which is then the test set (evaluation only: ``elm-jax eval``).  With
``task.data_dir`` unset the tasks run on the SYNTHETIC generator (`synthetic`), said in
the log and in the report (``final_evaluation.data``).

Splits:

* train / validation: a seeded 20 % binomial split of the train file
  (`preprocess.validation_split`, seed ``task.split_seed``);
* test: the test file; with ``task.hold_out_speaker=ID`` the samples of that speaker of
  the train file instead (an unseen-speaker test: the other speakers are then split into
  train / validation); without a test file the validation samples (the report says so
  in ``final_evaluation.test_note``).

Batches (`preprocess`): ``x`` (batch, T, 700) binned spike counts as `elm_jax.SpikeEvents`
(``task.input_format=events``, default) or dense float32 (``dense``; equal results),
``T = 1000 / task.bin_ms`` for ``shd`` and twice that for ``shd_adding`` (two digits back
to back, target the sum of the digits mod 10: 19 classes); ``y`` (batch,) int32 classes;
``weight`` (batch,) (0 for padding rows).  Input-spike dropout ``task.dropout`` (paper 0.5)
on training batches, and on evaluation batches with ``task.eval_dropout=true``.

Head: the last output, ``num_output`` = classes (the train file's class names; 19 for
``shd_adding``); loss: cross-entropy; metric: accuracy (the best checkpoint is the one of
highest validation accuracy).  After training the trainer calls `final_evaluation`:
accuracy, per-class accuracy, the confusion matrix and its PNG.

The model's time step should equal the bin: the presets set ``model.delta_t`` to their
bin size; with another ``task.bin_ms`` also set ``model.delta_t`` (the final evaluation
reports both and warns when they differ).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import run_config
from ..classification import classification_report, plot_confusion, predict_classes
from .formats import SpikeDataset, find_split_files, has_data_suffix, read_shd
from .preprocess import (
    ADDING_NUM_BATCHES,
    ADDING_NUM_CLASSES,
    INPUT_FORMATS,
    AddingSampler,
    EpochSampler,
    num_bins,
    speaker_split,
    validation_split,
)
from .synthetic import DESCRIPTION as SYNTHETIC_DESCRIPTION
from .synthetic import synthetic_dataset

Batch = dict[str, Any]

SHD_URL = "https://zenkelab.org/datasets/"
NO_DATA_HINT = (f"download shd_train.h5.gz and shd_test.h5.gz from {SHD_URL} into a folder "
                f"and set task.data_dir to it, or leave task.data_dir unset to train on the "
                f"SYNTHETIC generator")


@dataclasses.dataclass(frozen=True)
class SpokenDigitsTaskConfig:
    """Options of the ``shd`` and ``shd_adding`` tasks (``--set task.FIELD=VALUE``).

    Attributes:
      data_dir: a folder with the train (and test) file in SHD's layout, or one ``.h5``
        file (evaluated whole as the test set); None: the SYNTHETIC generator.
      bin_ms: bin size (ms) of the 1-s window (T = ceil(1000 / bin_ms) steps per digit).
      input_format: ``"events"`` (`elm_jax.SpikeEvents`) or ``"dense"`` (B, T, 700).
      dropout: input-spike dropout probability of training batches (paper 0.5).
      eval_dropout: also drop input spikes in validation/test batches (seeded; the
        reference notebook did).
      val_fraction: fraction of the train file held out for validation (binomial mask).
      split_seed: seed of the validation split and of the evaluation batches (fixed
        evaluation sets whatever ``train.seed`` is).
      hold_out_speaker: a speaker id of the train file: its samples become the test set
        (never trained on); None: the test file.  Ignored without a train file (a test
        file alone is evaluated whole).
      num_batches: ``shd_adding``: training batches per epoch (0: 2000, the reference).
      num_val_batches, num_test_batches: ``shd_adding``: fixed validation / test batches
        of ``train.eval_batch_size`` pairs each (0: 500 / 2000, the reference).
      synthetic_train, synthetic_test, synthetic_classes: size of the SYNTHETIC data
        (``data_dir`` None): samples of the train and the test file, classes.
      cache_dir: where ``.h5.gz`` / ``.h5.zip`` files are decompressed (empty: the
        default, ``$ELM_JAX_CACHE/spoken_digits``).
    """

    data_dir: str | None = None
    bin_ms: int = 2
    input_format: str = "events"
    dropout: float = 0.5
    eval_dropout: bool = False
    val_fraction: float = 0.2
    split_seed: int = 0
    hold_out_speaker: int | None = None
    num_batches: int = 0
    num_val_batches: int = 0
    num_test_batches: int = 0
    synthetic_train: int = 400
    synthetic_test: int = 100
    synthetic_classes: int = 20
    cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            _fail("input_format", self.input_format, f"one of {INPUT_FORMATS}")
        if self.data_dir is not None and not str(self.data_dir).strip():
            object.__setattr__(self, "data_dir", None)
        _check_int(self, "bin_ms", 1)
        for name in ("split_seed", "num_batches", "num_val_batches", "num_test_batches",
                     "synthetic_train", "synthetic_test"):
            _check_int(self, name, 0)
        _check_int(self, "synthetic_classes", 1)
        if self.hold_out_speaker is not None:
            _check_int(self, "hold_out_speaker", 0)
        for name, high in (("dropout", "< 1"), ("val_fraction", "< 1")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 <= value < 1.0:
                _fail(name, value, f"a number >= 0 and {high}")


_fail = functools.partial(run_config._fail, "task")


def _check_int(cfg: Any, name: str, low: int) -> None:
    run_config._check_int(cfg, name, low, section="task")


# ---------------------------------------------------------------------------- files
def load_sets(cfg: SpokenDigitsTaskConfig
              ) -> tuple[SpikeDataset | None, SpikeDataset | None, str]:
    """``(train, test, description)`` of `cfg`'s data: the files of ``cfg.data_dir``
    (either may be None when absent) or the SYNTHETIC data.  Raises FileNotFoundError
    (one line naming the folder and what was expected) when there is nothing to read."""
    cache = cfg.cache_dir or None
    if cfg.data_dir is None:
        num_speakers = 4
        train = synthetic_dataset(cfg.synthetic_train, num_classes=cfg.synthetic_classes,
                                  num_speakers=num_speakers, source="synthetic train")
        # as write_synthetic_shd: the training speakers plus one unseen, new samples
        test = synthetic_dataset(cfg.synthetic_test, num_classes=cfg.synthetic_classes,
                                 num_speakers=num_speakers + 1,
                                 first_index=cfg.synthetic_train, source="synthetic test")
        return train, test, f"{SYNTHETIC_DESCRIPTION} ({len(train)} train, {len(test)} test)"
    path = Path(cfg.data_dir).expanduser()
    if path.is_file():
        if not has_data_suffix(path):
            raise ValueError(f"task.data_dir={cfg.data_dir}: not a spoken-digit file "
                             f"(expected .h5, .h5.gz or .h5.zip) or a folder")
        test = read_shd(path, cache_dir=cache)
        return None, test, _label_synthetic(None, test, f"{path} (all {len(test)} "
                                                        f"samples as the test set)")
    if not path.exists():
        raise FileNotFoundError(f"task.data_dir={cfg.data_dir} does not exist; "
                                f"{NO_DATA_HINT}")
    files = find_split_files(path)
    if files["train"] is None and files["test"] is None:
        raise FileNotFoundError(f"task.data_dir={cfg.data_dir} holds no spoken-digit "
                                f"files (expected shd_train.h5 / shd_test.h5, also .gz or "
                                f".zip, or *train*.h5 / *test*.h5); {NO_DATA_HINT}")
    train = read_shd(files["train"], cache_dir=cache) if files["train"] else None
    test = read_shd(files["test"], cache_dir=cache) if files["test"] else None
    parts = [f"{name} {files[name]} ({len(ds)} samples)"
             for name, ds in (("train", train), ("test", test)) if ds is not None]
    return train, test, _label_synthetic(train, test, "; ".join(parts))


def _label_synthetic(train: SpikeDataset | None, test: SpikeDataset | None, text: str
                     ) -> str:
    """`text`, prefixed SYNTHETIC when a file says it was made by the generator."""
    made = any(ds is not None and str(ds.attrs.get("synthetic", "")) == "yes"
               for ds in (train, test))
    return f"SYNTHETIC data (files written by the generator): {text}" if made else text


# ---------------------------------------------------------------------------- data
class SpokenDigitsData:
    """`TaskData` of ``shd`` (``adding=False``) and ``shd_adding`` (module docstring).

    Args:
      cfg: the task options.
      seed: the run's seed (training order and dropout; evaluation sets depend only on
        ``cfg.split_seed``).
      adding: SHD-Adding (pairs, 19 classes) instead of SHD.
    Attributes: ``num_input`` (700), ``num_output`` (classes), ``seq_len`` (T),
      ``class_names``, ``description`` (the data, SYNTHETIC said so), ``test_note``
      (what the test split is), ``splits`` ({split: (dataset, indices)}).
    """

    def __init__(self, cfg: SpokenDigitsTaskConfig, seed: int = 0, adding: bool = False):
        self.cfg, self.seed, self.adding = cfg, int(seed), bool(adding)
        train, test, self.description = load_sets(cfg)
        if cfg.data_dir is None:
            print(f"note: task.data_dir is not set: using SYNTHETIC spike digits (not SHD, "
                  f"not speech); to use SHD, {NO_DATA_HINT.split(', or')[0]}")
        self._train_missing = train is None
        ref = train if train is not None else test
        self.class_names = ref.class_names
        self.num_input = int(ref.num_channels)
        self.num_output = ADDING_NUM_CLASSES if adding else len(self.class_names)
        self.seq_len = (2 if adding else 1) * num_bins(cfg.bin_ms)
        self.splits: dict[str, tuple[SpikeDataset, np.ndarray]] = {}
        if train is not None:
            rest = np.arange(len(train))
            held = None
            if cfg.hold_out_speaker is not None:
                rest, held = speaker_split(train, cfg.hold_out_speaker)
            fit, val = validation_split(len(rest), cfg.val_fraction, cfg.split_seed)
            self.splits["train"] = (train, rest[fit])
            self.splits["val"] = (train, rest[val])
            if held is not None:
                self.splits["test"] = (train, held)
                self.test_note = (f"test = speaker {cfg.hold_out_speaker} of the train file "
                                  f"({held.size} samples, never trained on)")
            elif test is not None:
                self.splits["test"] = (test, np.arange(len(test)))
                self.test_note = f"test = the test file ({len(test)} samples)"
            else:
                self.splits["test"] = self.splits["val"]
                self.test_note = ("no test file: test = the held-out validation samples "
                                  f"({val.size}), which also selected the best checkpoint")
                print(f"note: {self.test_note}")
        else:
            # evaluation only: the file is the test set (task.hold_out_speaker, recorded
            # by a run that held out a speaker, has no train file to act on)
            self.splits["test"] = self.splits["val"] = (test, np.arange(len(test)))
            self.test_note = f"test = every sample of {self.description}"
        for split, (ds, idx) in self.splits.items():
            if idx.size == 0:
                raise ValueError(f"the {split} split of {ds.source} is empty (task."
                                 f"val_fraction={cfg.val_fraction}, task.hold_out_speaker="
                                 f"{cfg.hold_out_speaker})")
            top = int(ds.labels[idx].max())
            if not adding and top >= self.num_output:
                raise ValueError(f"{ds.source}: label {top} has no class among the "
                                 f"{self.num_output} classes of the model's data "
                                 f"({ref.source})")
        self._train: dict[int, Any] = {}
        self._eval: dict[int, dict[str, Any]] = {}

    # ---------------------------------------------------------------- samplers
    def _kwargs(self, batch_size: int) -> dict[str, Any]:
        cfg = self.cfg
        return {"batch_size": batch_size, "bin_ms": cfg.bin_ms,
                "input_format": cfg.input_format, "dropout": cfg.dropout,
                "eval_dropout": cfg.eval_dropout}

    def train_sampler(self, batch_size: int) -> EpochSampler | AddingSampler:
        """The training sampler for `batch_size` (built once)."""
        if self._train_missing:
            raise ValueError(f"task.data_dir={self.cfg.data_dir} has no train file "
                             f"(expected shd_train.h5, also .gz or .zip, or *train*.h5): "
                             f"it can only be evaluated")
        if batch_size not in self._train:
            ds, idx = self.splits["train"]
            if self.adding:
                self._train[batch_size] = AddingSampler(
                    ds, idx, train=True, seed=self.seed,
                    num_batches=self.cfg.num_batches or ADDING_NUM_BATCHES["train"],
                    **self._kwargs(batch_size))
            else:
                self._train[batch_size] = EpochSampler(ds, idx, train=True, seed=self.seed,
                                                       **self._kwargs(batch_size))
        return self._train[batch_size]

    def eval_sampler(self, split: str, batch_size: int) -> EpochSampler | AddingSampler:
        """The fixed evaluation sampler of `split` (``"val"`` or ``"test"``); both
        splits share one event capacity (one compiled evaluation step)."""
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r} is invalid: expected 'val' or 'test'")
        if batch_size not in self._eval:
            samplers = {}
            for name in ("val", "test"):
                ds, idx = self.splits[name]
                if self.adding:
                    count = (self.cfg.num_val_batches if name == "val"
                             else self.cfg.num_test_batches)
                    default = ADDING_NUM_BATCHES[name]
                    samplers[name] = AddingSampler(ds, idx, train=False,
                                                   seed=self.cfg.split_seed,
                                                   num_batches=count or default,
                                                   **self._kwargs(batch_size))
                else:
                    samplers[name] = EpochSampler(ds, idx, train=False,
                                                  seed=self.cfg.split_seed,
                                                  **self._kwargs(batch_size))
            if self.cfg.input_format == "events":
                capacity = max(s.capacity for s in samplers.values())
                for s in samplers.values():
                    s.capacity = capacity
            self._eval[batch_size] = samplers
        return self._eval[batch_size][split]

    # ---------------------------------------------------------------- TaskData
    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The training batch of optimizer step `step` (a pure function of seed, step)."""
        return self.train_sampler(batch_size).batch_at(step)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Every batch of `split`, the last one padded with ``weight`` 0 rows."""
        sampler = self.eval_sampler(split, batch_size)
        return sampler.batches(epoch=0)


#: The data instance of the last (config, adding) built, reused by `final_evaluation`
#: (evaluation sets do not depend on the training seed).
_LAST: dict[tuple[SpokenDigitsTaskConfig, bool], SpokenDigitsData] = {}


def make_data(cfg: SpokenDigitsTaskConfig, seed: int, adding: bool = False
              ) -> SpokenDigitsData:
    """``SpokenDigitsData(cfg, seed, adding)``, remembered for `final_evaluation`."""
    data = SpokenDigitsData(cfg, seed, adding)
    _LAST.clear()
    _LAST[(cfg, adding)] = data
    return data


def _data_for_eval(cfg: SpokenDigitsTaskConfig, adding: bool) -> SpokenDigitsData:
    data = _LAST.get((cfg, adding))
    return data if data is not None else make_data(cfg, 0, adding)


# ---------------------------------------------------------------------------- evaluation
def final_evaluation(task_config: SpokenDigitsTaskConfig, model_config: Any, params: Any,
                     out_dir: str | os.PathLike | None = None, split: str = "test",
                     apply_kwargs: dict[str, Any] | None = None, *, adding: bool = False,
                     batch_size: int = 8) -> dict[str, Any]:
    """Accuracy, ``num_examples``, per-class accuracy and the confusion matrix of `params`
    on `split` (``"val"`` or ``"test"``), with ``confusion_matrix.png`` in `out_dir` (if
    given).  Also reports what the data and the test split were (``data``, ``test_note``;
    SYNTHETIC data says so) and the bin size.  `batch_size`: used unless the run's data
    already made evaluation batches (then the trainer's, so that SHD-Adding's fixed
    pairs, drawn per batch, are the same)."""
    data = _data_for_eval(task_config, adding)
    if model_config.num_output != data.num_output:
        raise ValueError(f"the model has num_output={model_config.num_output} but the data "
                         f"({data.description}) has {data.num_output} classes")
    if float(getattr(model_config, "delta_t", task_config.bin_ms)) != task_config.bin_ms:
        warnings.warn(f"model.delta_t={model_config.delta_t} differs from task.bin_ms="
                      f"{task_config.bin_ms} (the paper sets delta_t to the bin size)",
                      RuntimeWarning, stacklevel=2)
    # the evaluation batch size the trainer used, if any: SHD-Adding's fixed pairs are
    # drawn per batch, so the same batch size gives the same evaluation set
    batch_size = next(iter(data._eval), batch_size)
    pred, target = predict_classes(model_config, params,
                                   data.eval_batches(split, batch_size), apply_kwargs)
    names = ([str(k) for k in range(ADDING_NUM_CLASSES)] if adding
             else list(data.class_names))
    out = classification_report(pred, target, names)
    out.update(split=split, data=data.description,
               test_note=data.test_note if split == "test" else "validation split",
               bin_ms=task_config.bin_ms, delta_t=getattr(model_config, "delta_t", None),
               task="shd_adding" if adding else "shd")
    if out_dir is not None:
        title = (f"{out['task']} {split}: accuracy {out['accuracy']:.3f} "
                 f"({out['num_examples']} examples)"
                 + (" SYNTHETIC data" if "SYNTHETIC" in data.description else ""))
        png = plot_confusion(Path(out_dir) / "confusion_matrix.png",
                             np.asarray(out["confusion_matrix"]), names, title)
        out["confusion_matrix_png"] = str(png)
    return out


shd_data = functools.partial(make_data, adding=False)
shd_adding_data = functools.partial(make_data, adding=True)
shd_final_evaluation = functools.partial(final_evaluation, adding=False)
shd_adding_final_evaluation = functools.partial(final_evaluation, adding=True)
