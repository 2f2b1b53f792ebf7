"""The ``lra_text``, ``lra_retrieval`` and ``lra_image`` tasks: LRA's Text (IMDB
reviews), Retrieval (AAN citation pairs) and Image (CIFAR-10 in grey) from the files
as distributed (`text`, `image`), classified from the last output like ListOps.

Input, one category per step, fed one-hot (``task.input_format``: ``dense`` uint8 or
``events``, as `task`):

* Text / Retrieval: ``task.encoding`` ``"bytes"`` (LRA's byte-level encoding, 256
  channels; the default) or ``"chars"`` (a character vocabulary of the training
  texts, characters seen at least ``task.min_freq`` times, plus ``<unk>``: the
  paper's input dimensions 169 / 105 suggest such a dictionary, so the ``paper``
  presets use it; its size depends on the data and is checked against a model at
  evaluation).  Documents are truncated to ``task.max_length`` tokens (LRA: 4,000;
  AAN documents first to 10,000 characters) and padded to it; the class is read at
  each document's last real token, so padding cannot change a prediction.
* Retrieval: each example is a pair, ``x`` (batch, 2, T, channels) and ``length``
  (batch, 2); the model is a two-tower pair classifier (`elm_jax.models`, presets set
  ``model.tower_latent`` = 75 as the paper) and the input must be dense.
* Image: grey (``task.grey``: ``"pil"``, ITU-R 601-2 luma with PIL's integer rounding,
  the default; or ``"tf"``, LRA's ``tf.image.rgb_to_grayscale`` reproduced), binned
  into ``task.levels`` (16) levels, 1,024 steps row by row.

Splits: Text trains on IMDB's train split and, as LRA, validates and tests on its
test split (the validation numbers are therefore not held out from the test set);
Retrieval uses the train / eval / test files; Image splits the 50,000 training images
45,000 / 5,000 with ``task.split_seed`` (42) and tests on the test batch.

Data (``task.data_dir``): unset gives GENERATED sets in the official layouts (seeded
synthetic reviews, topic-sharing document pairs, striped images: learnable, not the
real data), cached atomically under ``$ELM_JAX_CACHE/lra``; otherwise the folder (or
file) holding ``aclImdb_v1.tar.gz`` / ``aclImdb/``, ``new_aan_pairs.*.tsv``, or
``cifar-10-python.tar.gz`` / ``cifar-10-binary.tar.gz`` / their unpacked folders.
``task.reader``: ``files`` (read directly) or ``tfds`` (the ``lra_text`` /
``lra_retrieval`` / ``lra_image`` TFDS datasets, prepared from the same files).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from .. import run_config
from . import image, text
from .task import (
    SPLITS,
    TFDS_SPLITS,
    SequenceClassificationData,
    SplitSource,
    _check,
    _common_checks,
    _generated,
    image_sources,
    tfds_dir,
)


def _check_encoding(cfg: Any) -> None:
    if cfg.encoding not in text.ENCODINGS:
        run_config._fail("task", "encoding", cfg.encoding, f"one of {text.ENCODINGS}")
    for name in ("max_length", "min_freq"):
        _check(cfg, name)
    _check(cfg, "seed", 0)


@dataclasses.dataclass(frozen=True)
class TextTaskConfig:
    """Options of ``lra_text`` (``--set task.FIELD=VALUE``; module docstring).

    Attributes:
      data_dir: IMDB archive or folder; None: GENERATED reviews.
      reader, input_format: as `ListOpsTaskConfig`.
      encoding: ``"bytes"`` or ``"chars"``; min_freq: the char vocabulary's cut-off.
      max_length: T (LRA: 4,000).
      num_per_class: generated reviews per split and class (IMDB: 12,500).
      seed: the generator's seed.
    """

    data_dir: str | None = None
    reader: str = "files"
    input_format: str = "dense"
    encoding: str = "bytes"
    min_freq: int = text.DEFAULT_MIN_FREQ
    max_length: int = text.TEXT_MAX_LENGTH
    num_per_class: int = 12_500
    seed: int = 0

    def __post_init__(self) -> None:
        _common_checks(self)
        _check_encoding(self)
        _check(self, "num_per_class")


@dataclasses.dataclass(frozen=True)
class RetrievalTaskConfig:
    """Options of ``lra_retrieval`` (module docstring).

    Attributes:
      data_dir: folder of ``new_aan_pairs.{train,eval,test}.tsv``; None: GENERATED.
      reader, encoding, min_freq, max_length (per document), seed: as `TextTaskConfig`.
      input_format: ``"dense"`` only (pairs).
      num_train, num_val, num_test: generated pairs (the release: ~147k / 18k / 17k).
    """

    data_dir: str | None = None
    reader: str = "files"
    input_format: str = "dense"
    encoding: str = "bytes"
    min_freq: int = text.DEFAULT_MIN_FREQ
    max_length: int = text.AAN_MAX_LENGTH
    num_train: int = 20_000
    num_val: int = 2_000
    num_test: int = 2_000
    seed: int = 0

    def __post_init__(self) -> None:
        _common_checks(self)
        _check_encoding(self)
        if self.input_format != "dense":
            run_config._fail("task", "input_format", self.input_format,
                             "'dense' (document pairs have no events input)")
        for name in ("num_train", "num_val", "num_test"):
            _check(self, name)


@dataclasses.dataclass(frozen=True)
class ImageTaskConfig:
    """Options of ``lra_image`` (module docstring).

    Attributes:
      data_dir: CIFAR-10 archive or folder; None: GENERATED striped images.
      reader, input_format: as `ListOpsTaskConfig`.
      levels: grey levels of the one-hot input (paper: 16).
      grey: ``"pil"`` or ``"tf"`` (`image.to_grey`).
      split_seed: seed of the 45,000 / 5,000 train / validation split (42).
      num_train, num_test: generated images (CIFAR-10: 50,000 / 10,000).
      seed: the generator's seed.
    """

    data_dir: str | None = None
    reader: str = "files"
    input_format: str = "dense"
    levels: int = 16
    grey: str = "pil"
    split_seed: int = 42
    num_train: int = 50_000
    num_test: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        _common_checks(self)
        if self.grey not in image.GREY_FORMULAS:
            run_config._fail("task", "grey", self.grey, f"one of {image.GREY_FORMULAS}")
        for name in ("levels", "num_test"):
            _check(self, name)
        _check(self, "num_train", 10)  # a tenth of it is the validation split
        if self.levels > 256:
            run_config._fail("task", "levels", self.levels, "an integer in [1, 256]")
        _check(self, "seed", 0)
        _check(self, "split_seed", 0)


# ---------------------------------------------------------------------------- sources
def _token_sources(arrays: dict[str, Any], labels: dict[str, np.ndarray],
                   max_length: int) -> dict[str, SplitSource]:
    """SplitSources over `TokenArrays` / `PairArrays` (ids padded to max_length, -1)."""
    sources = {}
    for split, arr in arrays.items():
        def fetch(idx, arr=arr, y=labels[split]):
            ids, lengths = arr.batch(idx, pad_to=max_length)
            return ids, lengths, y[np.asarray(idx, np.int64)]
        sources[split] = SplitSource(len(arr), fetch)
    return sources


def text_location(cfg: TextTaskConfig) -> tuple[Path, str]:
    """The IMDB archive or folder of `cfg` (generated if ``data_dir`` is unset)."""
    if cfg.data_dir is None:
        params = {"seed": cfg.seed, "num_per_class": cfg.num_per_class}
        root = _generated("imdb", params, lambda d: text.write_imdb_fixture(
            d, cfg.num_per_class, cfg.seed))
        return text.find_imdb(root), (f"GENERATED IMDB-like reviews (seed {cfg.seed}, "
                                      f"{cfg.num_per_class} per split and class)")
    found = text.find_imdb(cfg.data_dir)
    return found, f"IMDB {found}"


@functools.lru_cache(maxsize=2)
def _text_sources(cfg: TextTaskConfig) -> tuple[dict[str, SplitSource], int, str]:
    found, description = text_location(cfg)
    if cfg.reader == "tfds":
        manual = found.parent
        builder = text.prepare_text(manual_dir=manual, data_dir=tfds_dir(manual))
        raw = {split: text.TextSource(builder, split).read_all()
               for split in text.IMDB_FILE_SPLITS}
    else:
        raw = text.read_imdb(found)
    vocab = (text.CharVocabulary.build(raw["train"][0], cfg.min_freq)
             if cfg.encoding == "chars" else None)
    arrays = {s: text.TokenArrays.from_texts(raw[s][0], cfg.encoding, cfg.max_length, vocab)
              for s in text.IMDB_FILE_SPLITS}
    per_file = _token_sources(arrays, {s: np.asarray(raw[s][1]) for s in arrays},
                              cfg.max_length)
    sources = {task_split: per_file[file_split]
               for task_split, file_split in text.IMDB_SPLITS.items()}
    return sources, text.num_channels(cfg.encoding, vocab), f"{description}, {cfg.encoding}"


def text_data(cfg: TextTaskConfig, seed: int) -> SequenceClassificationData:
    """`SequenceClassificationData` of IMDB (``x``: the encoding's channels)."""
    sources, channels, description = _text_sources(cfg)
    return SequenceClassificationData(sources, channels, text.NUM_CLASSES, cfg.max_length,
                                      cfg.input_format, seed, description)


def retrieval_location(cfg: RetrievalTaskConfig) -> tuple[dict[str, Path], str]:
    """The AAN TSV files of `cfg` (generated if ``data_dir`` is unset)."""
    if cfg.data_dir is None:
        sizes = (cfg.num_train, cfg.num_val, cfg.num_test)
        root = _generated("aan", {"seed": cfg.seed, "sizes": list(sizes)},
                          lambda d: text.write_aan_fixture(d, sizes, cfg.seed))
        return text.find_aan_files(root), (f"GENERATED AAN-like pairs (seed {cfg.seed}, "
                                           f"{'/'.join(map(str, sizes))})")
    files = text.find_aan_files(cfg.data_dir)
    return files, f"AAN {', '.join(f'{k}={v}' for k, v in sorted(files.items()))}"


@functools.lru_cache(maxsize=2)
def _retrieval_sources(cfg: RetrievalTaskConfig) -> tuple[dict[str, SplitSource], int, str]:
    files, description = retrieval_location(cfg)
    if cfg.reader == "tfds":
        manual = next(iter(files.values())).parent
        builder = text.prepare_retrieval(manual_dir=manual, data_dir=tfds_dir(manual))
        raw = {split: text.PairSource(builder, split).read_all(text.AAN_CHAR_LIMIT)
               for split in text.AAN_FILE_SPLITS}
    else:
        if len(files) == 1 and Path(cfg.data_dir or "").is_file():
            files = {"test": next(iter(files.values()))}  # one TSV given: the test set
        raw = {split: text.read_aan_tsv(path, text.AAN_CHAR_LIMIT)
               for split, path in files.items()}
    if cfg.encoding == "chars" and "train" not in raw:
        raise ValueError("task.encoding=chars builds its vocabulary from "
                         "new_aan_pairs.train.tsv, which is missing from "
                         f"{cfg.data_dir}")
    vocab = (text.aan_vocabulary(raw["train"], cfg.min_freq)
             if cfg.encoding == "chars" else None)
    arrays = {s: text.PairArrays.from_split(split, cfg.encoding, cfg.max_length, vocab)
              for s, split in raw.items()}
    per_file = _token_sources(arrays, {s: np.asarray(a.labels) for s, a in arrays.items()},
                              cfg.max_length)
    sources = {task_split: per_file[file_split]
               for task_split, file_split in text.AAN_SPLITS.items() if file_split in per_file}
    return sources, text.num_channels(cfg.encoding, vocab), f"{description}, {cfg.encoding}"


def retrieval_data(cfg: RetrievalTaskConfig, seed: int) -> SequenceClassificationData:
    """`SequenceClassificationData` of AAN pairs: ``x`` (batch, 2, T, channels),
    ``length`` (batch, 2); ``seq_len`` counts both documents (2 T tokens per pair)."""
    sources, channels, description = _retrieval_sources(cfg)
    return SequenceClassificationData(sources, channels, text.NUM_CLASSES,
                                      2 * cfg.max_length, cfg.input_format, seed,
                                      description)


def image_location(cfg: ImageTaskConfig) -> tuple[Path, str]:
    """The CIFAR-10 archive or folder of `cfg` (generated if ``data_dir`` is unset)."""
    if cfg.data_dir is None:
        params = {"seed": cfg.seed, "num_train": cfg.num_train, "num_test": cfg.num_test}
        root = _generated("cifar", params, lambda d: image.write_cifar_fixture(
            d, cfg.num_train, cfg.num_test, cfg.seed))
        return root, (f"GENERATED striped CIFAR-like images (seed {cfg.seed}, "
                      f"{cfg.num_train}/{cfg.num_test})")
    return Path(cfg.data_dir).expanduser(), f"CIFAR-10 {cfg.data_dir}"


@functools.lru_cache(maxsize=2)
def _image_sources(cfg: ImageTaskConfig) -> tuple[dict[str, SplitSource], str]:
    found, description = image_location(cfg)
    if cfg.reader == "tfds":
        manual = found if found.is_dir() else found.parent
        builder = image.prepare_image(
            manual_dir=manual, data_dir=tfds_dir(manual) / f"split{cfg.split_seed}",
            split_seed=cfg.split_seed, formula=cfg.grey)
        readers = {s: image.ImageSource(builder, TFDS_SPLITS[s]) for s in SPLITS}
    else:
        arrays = image.CifarArrays.read(found, split_seed=cfg.split_seed, formula=cfg.grey)
        readers = {s: arrays.split(TFDS_SPLITS[s]) for s in SPLITS}
    return (image_sources(readers, cfg.levels),
            f"{description}, grey {cfg.grey}, {cfg.levels} levels")


def image_data(cfg: ImageTaskConfig, seed: int) -> SequenceClassificationData:
    """`SequenceClassificationData` of CIFAR-10 grey (``x``: `levels` channels, T 1,024,
    ``y``: 10 classes)."""
    sources, description = _image_sources(cfg)
    return SequenceClassificationData(sources, cfg.levels, len(image.CLASS_NAMES),
                                      image.STEPS, cfg.input_format, seed, description)

