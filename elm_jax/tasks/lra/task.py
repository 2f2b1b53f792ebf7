"""The ``listops``, ``pathfinder`` and ``pathx`` tasks: classify a long categorical
sequence from its last output.

Input: one category per time step, fed one-hot.  ListOps: the token ids of
`listops.VOCAB` (15 input channels; padding steps feed nothing); Pathfinder / Path-X:
the image flattened row by row (32 x 32 -> 1,024 steps, 128 x 128 -> 16,384), grey
values binned into ``task.levels`` equal bins (16; 8 for Path-X) as the paper does.
``task.input_format``: ``"dense"`` (default: (batch, T, channels) uint8 one-hot) or
``"events"`` (`elm_jax.SpikeEvents`, one event per real step); both give the same
outputs (tested).  Dense is the default because it measured faster here: the Path-X
ELM training step at batch 32 took 7.9 s with dense input and 11.0 s with events on
the 2-core CPU (docs/lra.md); with 8-16 channels the dense input product is cheap.

Padding (ListOps): sequences are padded at the end to ``task.max_length`` (a fixed T, so
one compilation) and the class is read at each sequence's last real token
(``batch["length"]``): steps after it cannot change the prediction (tested).

Data (``task.data_dir``):

* unset: generated, seeded, in the official layout, under
  ``$ELM_JAX_CACHE/lra/...`` (written into a temporary folder and renamed into place
  when complete, so a half-written set is never used): ListOps by the published
  grammar, Pathfinder by `pathfinder_generator`;
* a folder with the official files: ListOps ``basic_{train,val,test}.tsv`` (or
  ``listops-1000/``, or one TSV file, which is then the test set); Pathfinder a
  difficulty folder such as ``pathfinder32/curv_contour_length_14/`` or a folder
  holding ``pathfinder{R}/<difficulty>/`` (the seeded 80/10/10 split of
  `pathfinder.split_indices`, seed ``task.split_seed`` = 42 as in S4/Mega).

``task.reader``: ``"files"`` (default) reads the files directly; ``"tfds"`` prepares the
``listops`` / ``pathfinder`` TFDS dataset (array_record, no TensorFlow) from the same
files and reads it with random access (``tfds.data_source``); equal batches (tested).

Training batches: epoch ``e`` visits the training split in a permutation seeded by
``(train.seed, e)``, so batch ``step`` is a pure function of the step (exact resume).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...events import SpikeEvents
from .. import run_config
from ..classification import classification_report, predict_classes
from . import listops, pathfinder

Batch = dict[str, Any]
INPUT_FORMATS = ("events", "dense")
READERS = ("files", "tfds")
SPLITS = ("train", "val", "test")
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def cache_root() -> Path:
    """``$ELM_JAX_CACHE/lra`` (else ``~/.cache/elm_jax/lra``)."""
    base = os.environ.get("ELM_JAX_CACHE") or Path.home() / ".cache" / "elm_jax"
    return Path(base) / "lra"


def _key(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()
                          ).hexdigest()[:12]


def tfds_dir(source_folder: Path) -> Path:
    """The TFDS data_dir of a dataset prepared from `source_folder` (one per folder, so a
    prepared dataset is never reused for other files)."""
    return cache_root() / "tfds" / _key(str(Path(source_folder).resolve()))


def _generated(kind: str, params: dict[str, Any], make: Any) -> Path:
    """A generated data folder keyed by `params`, made by ``make(tmp_folder)`` into a
    temporary sibling and renamed into place once complete."""
    target = cache_root() / f"{kind}-{_key(params)}"
    if (target / "COMPLETE").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make(tmp)
        (tmp / "params.json").write_text(json.dumps(params, indent=1) + "\n")
        (tmp / "COMPLETE").write_text("complete\n")
        if target.exists() and not (target / "COMPLETE").is_file():
            # a generation cut off before it completed (older layouts): set it aside
            stale = Path(tempfile.mkdtemp(prefix=f".stale-{target.name}-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: use its copy
            if not (target / "COMPLETE").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------- configs
def _check(cfg: Any, name: str, minimum: int = 1) -> None:
    run_config._check_int(cfg, name, minimum, section="task")


@dataclasses.dataclass(frozen=True)
class ListOpsTaskConfig:
    """Options of the ``listops`` task (``--set task.FIELD=VALUE``).

    Attributes:
      data_dir: official files (a folder with ``*_train/val/test.tsv`` or one TSV file,
        then the test set only); None: generated data.
      reader: ``"files"`` or ``"tfds"`` (module docstring).
      input_format: ``"dense"`` or ``"events"``.
      max_length: T: sequences are padded to it; longer ones are an error.
      num_train, num_val, num_test: generated sizes (official 96,000 / 2,000 / 2,000).
      min_length, gen_max_length: generated lengths lie strictly inside (min_length,
        gen_max_length) (official 500, 2000).
      seed: the generator's seed.
    """

    data_dir: str | None = None
    reader: str = "files"
    input_format: str = "dense"
    max_length: int = 2000
    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000
    min_length: int = 500
    gen_max_length: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        _common_checks(self)
        for name in ("max_length", "num_train", "num_val", "num_test", "gen_max_length"):
            _check(self, name)
        _check(self, "min_length", 0)
        if self.gen_max_length > self.max_length + 1:
            run_config._fail("task", "gen_max_length", self.gen_max_length,
                             f"at most task.max_length + 1 = {self.max_length + 1} (generated "
                             f"sequences must fit the padded length)")


@dataclasses.dataclass(frozen=True)
class PathfinderTaskConfig:
    """Options of the ``pathfinder`` and ``pathx`` tasks (``--set task.FIELD=VALUE``).

    Attributes:
      data_dir: a difficulty folder in the official layout, or a folder holding
        ``pathfinder{resolution}/<difficulty>/``; None: generated data.
      reader: ``"files"`` or ``"tfds"``.
      input_format: ``"dense"`` or ``"events"``.
      resolution: image side (32, 64, 128, 256); T = resolution ** 2.
      difficulty: ``easy`` (contours of 6 paddles), ``intermediate`` (9), ``hard`` (14).
      levels: grey levels of the one-hot input (paper: 16; 8 for Path-X).
      num_images: generated images (official: 200,000 per difficulty).
      seed: the generator's seed.
      split_seed: seed of the 80/10/10 split (42, as S4 and Mega).
      workers: processes generating images.
    """

    data_dir: str | None = None
    reader: str = "files"
    input_format: str = "dense"
    resolution: int = 32
    difficulty: str = "hard"
    levels: int = 16
    num_images: int = 200_000
    seed: int = 0
    split_seed: int = 42
    workers: int = 1

    def __post_init__(self) -> None:
        _common_checks(self)
        if self.resolution not in pathfinder.RESOLUTIONS:
            run_config._fail("task", "resolution", self.resolution,
                             f"one of {pathfinder.RESOLUTIONS}")
        if self.difficulty not in pathfinder.DIFFICULTIES:
            run_config._fail("task", "difficulty", self.difficulty,
                             f"one of {tuple(pathfinder.DIFFICULTIES)}")
        for name in ("levels", "num_images", "workers"):
            _check(self, name)
        if self.levels > 256:
            run_config._fail("task", "levels", self.levels, "an integer in [1, 256]")
        _check(self, "seed", 0)
        _check(self, "split_seed", 0)


def _common_checks(cfg: Any) -> None:
    if cfg.data_dir is not None and not str(cfg.data_dir).strip():
        object.__setattr__(cfg, "data_dir", None)
    if cfg.input_format not in INPUT_FORMATS:
        run_config._fail("task", "input_format", cfg.input_format, f"one of {INPUT_FORMATS}")
    if cfg.reader not in READERS:
        run_config._fail("task", "reader", cfg.reader, f"one of {READERS}")


# ---------------------------------------------------------------------------- batches
def categorical_input(ids: np.ndarray, num_input: int, input_format: str) -> Any:
    """One-hot input of categorical steps.

    Args:
      ids: (batch, T) int channel of each step, -1 for a step with no input (padding);
        or (batch, 2, T) document pairs (dense only).
      num_input: channels.
      input_format: ``"events"`` (one event per real step) or ``"dense"``.
    Returns: `SpikeEvents` (capacity T) or (batch, T, num_input) uint8 one-hot (exact,
      and a quarter of float32's host memory and transfer: 100 MB for a Path-X batch of
      768; the model computes in float32); pairs: (batch, 2, T, num_input).
    """
    ids = np.asarray(ids)
    if input_format == "dense":
        return (ids[..., None] == np.arange(num_input)).astype(np.uint8)
    batch, steps = ids.shape
    real = ids >= 0
    time = np.broadcast_to(np.arange(steps, dtype=np.int32), (batch, steps)).copy()
    channel = np.where(real, ids, 0).astype(np.int32)
    value = real.astype(np.float32)
    return SpikeEvents(time=time, channel=channel, value=value, num_steps=steps,
                       num_input=num_input)


class SplitSource:
    """One split: ``fetch(indices) -> (ids (b, T) int, lengths (b,), labels (b,))``."""

    def __init__(self, size: int, fetch: Any):
        self.size, self.fetch = size, fetch

    def __len__(self) -> int:
        return self.size


class SequenceClassificationData:
    """`TaskData` of a categorical-sequence classification task (module docstring).

    Attributes: num_input, num_output, seq_len; ``splits`` {"train"|"val"|"test":
    SplitSource}; ``description`` (where the data came from, GENERATED said so).
    """

    def __init__(self, splits: dict[str, SplitSource], num_input: int, num_output: int,
                 seq_len: int, input_format: str, seed: int, description: str):
        self.splits = splits
        self.num_input, self.num_output, self.seq_len = num_input, num_output, seq_len
        self.input_format, self.seed, self.description = input_format, seed, description
        self._perm: dict[int, np.ndarray] = {}

    def _split(self, split: str) -> SplitSource:
        if split not in self.splits:
            raise ValueError(f"this data has no {split!r} split (it has "
                             f"{sorted(self.splits)}): {self.description}")
        return self.splits[split]

    def _batch(self, source: SplitSource, idx: np.ndarray, weight: np.ndarray) -> Batch:
        ids, lengths, labels = source.fetch(idx)
        return {"x": categorical_input(ids, self.num_input, self.input_format),
                "y": np.asarray(labels, np.int32), "length": np.asarray(lengths, np.int32),
                "weight": weight.astype(np.float32)}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            if len(self._perm) > 4:
                self._perm.clear()
            rng = np.random.default_rng([self.seed, epoch])
            self._perm[epoch] = rng.permutation(len(self._split("train")))
        return self._perm[epoch]

    def train_batch(self, step: int, batch_size: int) -> Batch:
        """Batch `step`: positions ``step * batch_size ...`` of the epoch permutations."""
        n = len(self._split("train"))
        pos = step * batch_size + np.arange(batch_size)
        idx = np.array([self._permutation(int(p // n))[p % n] for p in pos], np.int64)
        return self._batch(self.splits["train"], idx, np.ones(batch_size))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Every example of `split` once, in order; the last batch padded (weight 0)."""
        source = self._split(split)
        n = len(source)
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(start + batch_size, n))
            weight = np.ones(batch_size)
            weight[len(idx):] = 0.0
            idx = np.concatenate([idx, np.full(batch_size - len(idx), idx[0], np.int64)])
            yield self._batch(source, idx, weight)


# ---------------------------------------------------------------------------- ListOps
def listops_files(cfg: ListOpsTaskConfig) -> tuple[dict[str, Path], str]:
    """The ListOps files of `cfg` (generated if ``data_dir`` is unset) and a description."""
    if cfg.data_dir is None:
        params = {"seed": cfg.seed, "sizes": [cfg.num_train, cfg.num_val, cfg.num_test],
                  "min_length": cfg.min_length, "max_length": cfg.gen_max_length}
        root = _generated("listops", params, lambda d: listops.write_listops_splits(
            d, cfg.seed, (cfg.num_train, cfg.num_val, cfg.num_test),
            min_length=cfg.min_length, max_length=cfg.gen_max_length))
        return listops.find_listops_files(root), (
            f"GENERATED ListOps (seed {cfg.seed}, {cfg.num_train}/{cfg.num_val}/"
            f"{cfg.num_test} rows, lengths in ({cfg.min_length}, {cfg.gen_max_length}))")
    files = listops.find_listops_files(cfg.data_dir)
    return files, f"ListOps files {', '.join(f'{k}={v}' for k, v in sorted(files.items()))}"


def listops_data(cfg: ListOpsTaskConfig, seed: int) -> SequenceClassificationData:
    """`SequenceClassificationData` of ListOps (``x``: 15 channels, ``y``: 10 classes)."""
    sources, description = _listops_sources(cfg)
    return SequenceClassificationData(sources, listops.INPUT_DIM, listops.NUM_CLASSES,
                                      cfg.max_length, cfg.input_format, seed, description)


@functools.lru_cache(maxsize=2)
def _listops_sources(cfg: ListOpsTaskConfig) -> tuple[dict[str, SplitSource], str]:
    # read once per configuration: the trainer's data and the final evaluation share it
    files, description = listops_files(cfg)
    sources = {}
    if cfg.reader == "tfds":
        manual = Path(next(iter(files.values()))).parent
        builder = listops.prepare_listops(manual_dir=manual, data_dir=tfds_dir(manual))
        readers = {s: listops.ListOpsSource(builder, s) for s in SPLITS if s in files}
    else:
        readers = {s: listops.ListOpsArrays.from_tsv(p) for s, p in files.items()}
    for split, reader in readers.items():
        def fetch(idx, reader=reader):
            tokens, lengths, labels = reader.batch(idx, pad_to=cfg.max_length)
            return tokens.astype(np.int32) - 1, lengths, labels  # pad (0) -> -1
        sources[split] = SplitSource(len(reader), fetch)
    _check_too_long(readers, cfg)
    return sources, description


def _check_too_long(readers: dict[str, Any], cfg: ListOpsTaskConfig) -> None:
    for split, reader in readers.items():
        lengths = getattr(reader, "lengths", None)
        if lengths is not None and len(lengths) and int(np.max(lengths)) > cfg.max_length:
            raise ValueError(f"task.max_length={cfg.max_length} is below the longest "
                             f"{split} sequence ({int(np.max(lengths))} tokens); raise it")


# ---------------------------------------------------------------------------- Pathfinder
def pathfinder_folder(cfg: PathfinderTaskConfig) -> tuple[Path, str]:
    """The difficulty folder of `cfg` (generated if ``data_dir`` is unset)."""
    name = pathfinder.DIFFICULTIES[cfg.difficulty]
    if cfg.data_dir is None:
        params = {"seed": cfg.seed, "resolution": cfg.resolution,
                  "difficulty": cfg.difficulty, "num_images": cfg.num_images}
        root = _generated("pathfinder", params, lambda d: pathfinder.generate_pathfinder(
            d / f"pathfinder{cfg.resolution}", cfg.resolution, cfg.difficulty,
            cfg.num_images, cfg.seed, workers=cfg.workers))
        return root / f"pathfinder{cfg.resolution}" / name, (f"GENERATED Pathfinder-{cfg.resolution} {cfg.difficulty} "
                             f"({cfg.num_images} images, seed {cfg.seed})")
    base = Path(cfg.data_dir)
    for candidate in (base, base / name, base / f"pathfinder{cfg.resolution}" / name,
                      base / "lra_release" / f"pathfinder{cfg.resolution}" / name):
        if (candidate / "metadata").is_dir():
            return candidate, f"Pathfinder files {candidate}"
    raise FileNotFoundError(
        f"task.data_dir={cfg.data_dir}: no Pathfinder difficulty folder (one with "
        f"metadata/ and imgs/) there, nor {name}/, pathfinder{cfg.resolution}/{name}/ "
        f"below it")


def pathfinder_data(cfg: PathfinderTaskConfig, seed: int) -> SequenceClassificationData:
    """`SequenceClassificationData` of Pathfinder / Path-X (``x``: `levels` channels,
    T = resolution ** 2; ``y``: 2 classes)."""
    sources, description = _pathfinder_sources(cfg)
    return SequenceClassificationData(sources, cfg.levels, 2, cfg.resolution ** 2,
                                      cfg.input_format, seed, description)


@functools.lru_cache(maxsize=2)
def _pathfinder_sources(cfg: PathfinderTaskConfig) -> tuple[dict[str, SplitSource], str]:
    # read once per configuration: the trainer's data and the final evaluation share it
    folder, description = pathfinder_folder(cfg)
    if cfg.reader == "tfds":
        manual = folder.parent.parent
        if pathfinder.find_official(manual, cfg.resolution, cfg.difficulty) != folder:
            raise ValueError(f"task.reader=tfds needs the official layout "
                             f".../pathfinder{cfg.resolution}/{folder.name}/; got {folder}")
        builder = pathfinder.prepare_pathfinder(
            cfg.resolution, cfg.difficulty, manual_dir=manual, data_dir=tfds_dir(folder),
            split_seed=cfg.split_seed)
        readers = {s: pathfinder.PathfinderSource(builder, TFDS_SPLITS[s]) for s in SPLITS}
    else:
        arrays = pathfinder.read_pathfinder(folder)
        if arrays.resolution != cfg.resolution:
            raise ValueError(f"{folder} holds {arrays.resolution}x{arrays.resolution} "
                             f"images but task.resolution={cfg.resolution}")
        readers = {s: arrays.split(TFDS_SPLITS[s], cfg.split_seed) for s in SPLITS}
    return image_sources(readers, cfg.levels), description


def image_sources(readers: dict[str, Any], levels: int) -> dict[str, SplitSource]:
    """SplitSources of image splits: each reader's ``batch(indices) -> (images (b, H, W)
    uint8, labels)`` quantised to `levels` grey levels, flattened row by row (every
    step real: length H * W)."""
    sources = {}
    for split, reader in readers.items():
        def fetch(idx, reader=reader):
            images, labels = reader.batch(idx)
            ids = pathfinder.quantize(images, levels).astype(np.int32)
            return ids, np.full(len(ids), ids.shape[1], np.int32), labels
        sources[split] = SplitSource(len(reader), fetch)
    return sources


# ---------------------------------------------------------------------------- evaluation
def final_evaluation(task_config: Any, model_config: Any, params: Any,
                     out_dir: str | os.PathLike | None = None, split: str = "test",
                     apply_kwargs: dict[str, Any] | None = None, *, batch_size: int = 32,
                     make_data: Any = None) -> dict[str, Any]:
    """``accuracy``, ``num_examples``, per-class accuracy, the confusion matrix, chance
    level and what the data was, of `params` on `split`.  `make_data`: the task's
    ``(task_config, seed) -> SequenceClassificationData`` (default: ListOps' or
    Pathfinder's, by the config's class)."""
    if make_data is None:
        make_data = listops_data if isinstance(task_config, ListOpsTaskConfig) else \
            pathfinder_data
    data = make_data(task_config, 0)
    if model_config.num_output != data.num_output or model_config.num_input != data.num_input:
        raise ValueError(f"the model has num_input={model_config.num_input}, num_output="
                         f"{model_config.num_output}; the data ({data.description}) has "
                         f"{data.num_input} channels and {data.num_output} classes")
    pred, target = predict_classes(model_config, params, data.eval_batches(split, batch_size),
                                   apply_kwargs)
    out = classification_report(pred, target, [str(k) for k in range(data.num_output)])
    out.update(split=split, data=data.description, chance=1.0 / data.num_output,
               majority=(float(np.bincount(target).max() / target.size)
                         if target.size else None))
    return out
