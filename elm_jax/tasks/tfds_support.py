"""TFDS glue shared by the task families' builders (``shd``, ``listops``, ``pathfinder``).

* `import_tfds`: tensorflow_datasets, imported on first use (importing a task package
  must not import it).
* `lazy_builder_attribute`: a module ``__getattr__`` that defines a builder class on
  first access (the class derives from a tfds base class, so it cannot exist before tfds
  is imported).
* `prepare`: ``download_and_prepare`` with a manual directory.
* `dataset_info`: the ``DatasetInfo`` every builder here returns (records in generation
  order, no shuffling).
* `read_records` / `read_field`: random access to a ``tfds.data_source`` (or anything
  indexable by ints) in batches of indices, through ``__getitems__`` when it has one.
* `ImageLabelSource`: batches of ``(image, label)`` records of a prepared split
  (Pathfinder's and LRA Image's sources).

Everything here works without TensorFlow (array_record files, data sources).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def import_tfds():
    """The ``tensorflow_datasets`` module."""
    import tensorflow_datasets as tfds

    return tfds


def lazy_builder_attribute(module_name: str, factories: dict[str, Callable[[], type]]
                           ) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` returning ``factories[name]()`` for the builder
    class names it knows (each factory defines its class once and caches it)."""
    def __getattr__(name: str) -> Any:
        if name in factories:
            return factories[name]()
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


def prepare(builder: Any, manual_dir: str | os.PathLike | None) -> Any:
    """``builder.download_and_prepare`` reading manual files from `manual_dir` (None:
    TFDS's default ``<data_dir>/downloads/manual``); returns the builder."""
    config = import_tfds().download.DownloadConfig(
        manual_dir=None if manual_dir is None else str(manual_dir))
    builder.download_and_prepare(download_config=config)
    return builder


def dataset_info(builder: Any, features: dict[str, Any], *, description: str,
                 homepage: str, citation: str,
                 supervised_keys: tuple[str, str] | None = None) -> Any:
    """``tfds.core.DatasetInfo`` of `builder` with `features` (a dict of TFDS feature
    objects), shuffling disabled (records keep the order they were generated in) and an
    empty metadata dict the builder may fill while generating."""
    tfds = import_tfds()
    return tfds.core.DatasetInfo(
        builder=builder, description=description,
        features=tfds.features.FeaturesDict(features), supervised_keys=supervised_keys,
        disable_shuffling=True, metadata=tfds.core.MetadataDict(), homepage=homepage,
        citation=citation)


def read_records(source: Any, indices: Sequence[int]) -> list[dict]:
    """The records at `indices` of a data source, in order."""
    keys = [int(i) for i in indices]
    getitems = getattr(source, "__getitems__", None)
    return list(getitems(keys)) if getitems else [source[k] for k in keys]


def read_field(source: Any, field: str, dtype: Any, chunk: int = 1024) -> np.ndarray:
    """(len(source),) array of one scalar field of every record, read `chunk` records at
    a time (touches every record once)."""
    n = len(source)
    out = np.zeros(n, dtype)
    for lo in range(0, n, chunk):
        records = read_records(source, range(lo, min(n, lo + chunk)))
        out[lo:lo + len(records)] = [r[field] for r in records]
    return out


class ImageLabelSource:
    """A prepared split of a builder whose records hold ``image`` (H, W) uint8 and an
    integer ``label``, as a random-access batch source (``tfds.data_source``).

    Args:
      builder: a prepared builder with a builder config (or an already opened data
        source: anything indexable with ``__getitems__`` returning such dicts).
      split: ``"train"``, ``"validation"``, ``"test"`` or TFDS slicing (``"train[:10%]"``).
    Attributes: ``labels`` (n,) int32 (read once).
    """

    #: shape of the images array of an empty batch
    empty_shape: tuple[int, int, int] = (0, 0, 0)

    def __init__(self, builder: Any, split: str = "train", *, chunk: int = 4096):
        if hasattr(builder, "builder_config"):
            self.source = import_tfds().data_source(
                f"{builder.name}/{builder.builder_config.name}", split=split,
                data_dir=str(Path(builder.data_dir).parents[2]))
        else:
            self.source = builder
        self.labels = read_field(self.source, "label", np.int32, chunk)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(images (b, H, W) uint8, labels (b,) int32)`` of `indices`."""
        recs = read_records(self.source, np.asarray(indices, np.int64).reshape(-1).tolist())
        if not recs:
            return np.zeros(self.empty_shape, np.uint8), np.zeros(0, np.int32)
        images = np.stack([np.asarray(r["image"], np.uint8) for r in recs])
        return images, np.array([r["label"] for r in recs], np.int32)
