"""The ``shd`` TFDS dataset (array_record, no TensorFlow needed) and a random-access
`SpikeSource` over it.

Building: `ShdBuilder` (TFDS name ``shd``) reads the official files from TFDS's manual
directory (default ``<data_dir>/downloads/manual/``, data_dir default
``~/tensorflow_datasets``): ``shd_train.h5`` and ``shd_test.h5``, each also accepted as
``.h5.gz`` (the SHD download) or ``.h5.zip``; a missing test file gives a train-only
dataset.  `prepare_shd` builds it::

    builder = prepare_shd(manual_dir="~/shd", data_dir="~/tensorflow_datasets")

(``ShdBuilder`` is defined on first use, so importing this module does not import
tensorflow_datasets.)  TFDS's package-style builder code path needs the
``importlib_resources`` module (a declared dependency).

Every example (in file order: shuffling is disabled, so record ``i`` is sample ``i`` of
the file and the seeded validation split picks the same samples as on the HDF5 file):

=============  ==========================================================
``times``      (n,) float32 spike times in seconds (the float16 values)
``units``      (n,) uint16 channel 0..699
``label``      int64 class (``ClassLabel``, names from ``extra/keys``)
``speaker``    int32 speaker id (-1 if the file has none)
``index``      int32 sample index in the source file
=============  ==========================================================

Only ``file_format="array_record"`` works without TensorFlow (the default tfrecord
format needs it at the end of writing; data-formats.md section 4.2); `ShdBuilder`
defaults to it.  Reading uses ``tfds.data_source`` (random access, NumPy out), never
``tfds.load`` / ``as_dataset`` (TensorFlow).

Reading for training: `TfdsSpikeSource` wraps a split's data source as a `SpikeSource`
(labels and speakers read once; spikes of a batch fetched by index with
``__getitems__``), so `preprocess.EpochSampler` / `preprocess.AddingSampler` batch
it exactly as they batch an HDF5 `SpikeDataset`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..tfds_support import (
    dataset_info,
    import_tfds,
    lazy_builder_attribute,
    prepare,
    read_field,
    read_records,
)
from .formats import NUM_CHANNELS, SHD_FILES, read_shd

NAME = "shd"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Spiking Heidelberg Digits from https://zenkelab.org/datasets/ (Cramer et
al. 2020; files shd_train.h5.gz and shd_test.h5.gz) and place them, compressed or not,
in the manual directory: `<data_dir>/downloads/manual/` (data_dir defaults to
~/tensorflow_datasets), or pass --manual_dir DIR to `tfds build` (download_config=
tfds.download.DownloadConfig(manual_dir=DIR) in Python).  Accepted names:
shd_train.h5 / shd_train.h5.gz / shd_train.h5.zip and the same for shd_test; any file
in SHD's HDF5 layout works under those names.  Without a test file only the train
split is built.
"""


def _find_manual(folder: Path, official: str) -> Path | None:
    for suffix in ("", ".gz", ".zip"):
        path = folder / (official + suffix)
        if path.is_file():
            return path
    return None


def _builder_class():
    """Define (once) and return the ``shd`` builder class (tfds imported lazily)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    tfds = import_tfds()

    class ShdBuilder(tfds.core.GeneratorBasedBuilder):
        """TFDS builder ``shd``: the Spiking Heidelberg Digits from manual files."""

        name = NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {
            "1.0.0": "SHD spike events (times, units), label, speaker."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

        def __init__(self, *, file_format: str = "array_record", **kwargs: Any):
            super().__init__(file_format=file_format, **kwargs)

        def _info(self):
            features = {
                "times": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "units": tfds.features.Tensor(shape=(None,), dtype=np.uint16),
                "label": tfds.features.ClassLabel(),
                "speaker": tfds.features.Scalar(dtype=np.int32),
                "index": tfds.features.Scalar(dtype=np.int32),
            }
            return dataset_info(
                self, features, description=__doc__.split("\n\n")[0],
                homepage="https://zenkelab.org/datasets/",
                supervised_keys=None,
                citation="Cramer, Stradmann, Schemmel, Zenke (2020), The Heidelberg "
                         "Spiking Data Sets for the Systematic Evaluation of Spiking "
                         "Neural Networks, IEEE TNNLS.")

        def _split_generators(self, dl_manager):
            manual = Path(dl_manager.manual_dir)
            train = _find_manual(manual, SHD_FILES["train"])
            if train is None:
                raise FileNotFoundError(
                    f"no {SHD_FILES['train']}[.gz|.zip] in the manual directory "
                    f"{manual}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
            files = {"train": train}
            test = _find_manual(manual, SHD_FILES["test"])
            if test is not None:
                files["test"] = test
            cache = Path(dl_manager.download_dir) / "extracted_shd"
            data = {split: read_shd(path, cache_dir=cache) for split, path in files.items()}
            names = list(data["train"].class_names)
            for d in data.values():
                if len(d.class_names) > len(names):
                    names = list(d.class_names)
            self.info.features["label"].names = names
            self.info.metadata.update({
                "num_channels": NUM_CHANNELS,
                "source_files": {s: p.name for s, p in files.items()},
                "description": {s: str(d.attrs.get("description", ""))
                                for s, d in data.items()},
            })
            return {split: self._generate_examples(d) for split, d in data.items()}

        def _generate_examples(self, data):
            for i in range(len(data)):
                times, units = data.sample(i)
                yield i, {"times": times, "units": units, "label": int(data.labels[i]),
                          "speaker": int(data.speakers[i]), "index": i}

    _BUILDER = ShdBuilder
    return ShdBuilder


_BUILDER = None
# ``ShdBuilder`` is built on first access so that importing this module (and the
# package) does not import tensorflow_datasets.
__getattr__ = lazy_builder_attribute(__name__, {"ShdBuilder": _builder_class})


def prepare_shd(manual_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None):
    """Build (or reuse) the ``shd`` dataset in `data_dir` from the files in
    `manual_dir` (default TFDS's ``<data_dir>/downloads/manual``), as array_record.
    Returns the builder (``builder.as_data_source()`` reads it)."""
    return prepare(_builder_class()(data_dir=None if data_dir is None else str(data_dir)),
                   manual_dir)


class TfdsSpikeSource:
    """A prepared ``shd`` split as a `preprocess.SpikeSource` (random access).

    Args:
      split: a split name (``"train"``, ``"test"``, or TFDS slicing like
        ``"train[:50%]"``) read with ``tfds.data_source(NAME, data_dir=..., split=...)``,
        or an already opened data source (anything indexable by a list of ints through
        ``__getitems__`` returning dicts with ``times``/``units``/``label``/``speaker``).
      data_dir: the TFDS data_dir the dataset was built into.
      class_names: override (default: the dataset's ``label`` names when known).
    Attributes: ``labels`` (N,) int64, ``speakers`` (N,) int64, ``class_names``,
      ``num_channels`` (700).  Reading the labels touches every record once.
    """

    def __init__(self, split: Any = "train", data_dir: str | os.PathLike | None = None,
                 *, name: str = NAME, class_names: Sequence[str] | None = None,
                 num_channels: int = NUM_CHANNELS, chunk: int = 1024):
        if isinstance(split, str):
            self.source = import_tfds().data_source(
                name, split=split, data_dir=None if data_dir is None else str(data_dir))
            if class_names is None:
                label = getattr(self.source, "dataset_info", None)
                label = label.features["label"] if label is not None else None
                class_names = list(label.names) if label is not None else None
            self.name = f"{name}:{split}"
        else:
            self.source = split
            self.name = repr(split)
        labels = read_field(self.source, "label", np.int64, chunk)
        self.labels = labels
        self.speakers = read_field(self.source, "speaker", np.int64, chunk)
        if class_names is None:
            class_names = [f"class-{k}" for k in range(int(labels.max(initial=-1)) + 1)]
        self.class_names = tuple(class_names)
        self.num_channels = int(num_channels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def spikes(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(times (n,) float32 s, units (n,) uint16, counts (len(indices),) int64)``
        of samples `indices`, concatenated in order (as `SpikeDataset.spikes`)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.name}: sample index out of range [0, {len(self)})")
        records = read_records(self.source, idx.tolist())
        counts = np.array([np.size(r["times"]) for r in records], np.int64)
        if not records:
            return np.zeros(0, np.float32), np.zeros(0, np.uint16), counts
        times = np.concatenate([np.asarray(r["times"], np.float32) for r in records])
        units = np.concatenate([np.asarray(r["units"]) for r in records]).astype(np.uint16)
        return times, units, counts
