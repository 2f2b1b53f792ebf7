"""TFDS glue shared by the task families' builders (``shd``, ``listops``, ``pathfinder``).

* `import_tfds`: tensorflow_datasets, imported on first use (importing a task package
  must not import it).
* `lazy_builder_attribute`: a module ``__getattr__`` that defines a builder class on
  first access (the class derives from a tfds base class, so it cannot exist before tfds
  is imported).
* `prepare`: ``download_and_prepare`` with a manual directory.
* `read_records` / `read_field`: random access to a ``tfds.data_source`` (or anything
  indexable by ints) in batches of indices, through ``__getitems__`` when it has one.

Everything here works without TensorFlow (array_record files, data sources).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
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
