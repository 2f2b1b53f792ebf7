"""Spiking Heidelberg Digits (SHD, Cramer et al. 2020): the HDF5 layout, its reader and
writer, and the in-memory form of a file (`SpikeDataset`).

The layout (``shd_train.h5`` / ``shd_test.h5``; the same in the FSDD-derived real data
of ``../shared/data/spoken_digits/``):

==========================  =====================================================
path                        content
==========================  =====================================================
``spikes/times``            (N,) vlen float16: per sample, spike times in seconds
``spikes/units``            (N,) vlen uint16: per sample, the channel (0..699) of
                            each spike, same order as ``times``
``labels``                  (N,) uint16 class (SHD: 0-9 English, 10-19 German)
``extra/speaker``           (N,) uint16 speaker id
``extra/keys``              (C,) byte strings, class names (index = label)
``extra/meta_info/*``       per-speaker arrays (``gender``, ``age``, ``body_height``)
==========================  =====================================================

Files are accepted as ``.h5``, gzip-compressed ``.h5.gz`` (the SHD download) or
``.h5.zip`` (what tonic downloads: one ``.h5`` member).  Compressed files are
decompressed once into a cache folder (written to a temporary file and renamed, so a
crash never leaves a half-written cache; the cache name carries the source's size and
mtime, so a replaced source is decompressed again).

`SpikeDataset` keeps all samples of a file in three flat arrays (compressed sparse
rows): ``times`` (float32 seconds: float16 values cast exactly, before any
arithmetic), ``units`` (uint16) and ``offsets``; sample ``i`` is
``times[offsets[i]:offsets[i + 1]]``.  The 2,000-sample FSDD file (8.5 M spikes) reads
in well under a second and costs ~50 MB.

Reading is strict: a file that is not HDF5, is truncated or corrupt, misses a dataset
or has one of the wrong type or length, or holds a unit outside ``[0, 700)``, a
non-finite or negative time or a label outside the class names raises
`SpokenDigitsFormatError` (a ValueError) naming the file and the dataset path.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...fileio import atomic_write

#: Input channels of the SHD cochlea model.
NUM_CHANNELS = 700
#: The official file names (each also as ``.h5.gz`` / ``.h5.zip``).
SHD_FILES = {"train": "shd_train.h5", "test": "shd_test.h5"}
#: Suffixes the reader accepts, longest first.
SUFFIXES = (".h5.gz", ".h5.zip", ".h5", ".hdf5")

TIMES, UNITS, LABELS = "spikes/times", "spikes/units", "labels"
SPEAKER, KEYS, META_INFO = "extra/speaker", "extra/keys", "extra/meta_info"


class SpokenDigitsFormatError(ValueError):
    """A spike-digit file could not be read; the message names the file and dataset."""


@dataclasses.dataclass(frozen=True, eq=False)
class SpikeDataset:
    """The samples of one file in SHD's layout, held as flat arrays (see module doc).

    Attributes:
      source: the file it came from (or a description).
      times: (total_spikes,) float32 spike times in seconds, sample after sample
        (within a sample in file order: sorted by time in SHD).
      units: (total_spikes,) uint16 channel of each spike, in [0, num_channels).
      offsets: (N + 1,) int64; sample ``i`` is ``[offsets[i], offsets[i + 1])``.
      labels: (N,) int64 class of each sample.
      speakers: (N,) int64 speaker id (-1 when the file has no ``extra/speaker``).
      class_names: (C,) names, index = label (``extra/keys``, or ``class-0`` ...).
      num_channels: input channels (700).
      meta_info: ``extra/meta_info`` arrays by name (per speaker), may be empty.
      attrs: root attributes of the file (strings decoded), may be empty.
    """

    source: str
    times: np.ndarray
    units: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray
    class_names: tuple[str, ...]
    num_channels: int = NUM_CHANNELS
    meta_info: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_samples(cls, times: Sequence[np.ndarray], units: Sequence[np.ndarray],
                     labels: Sequence[int], speakers: Sequence[int] | None = None,
                     **kw: Any) -> SpikeDataset:
        """A `SpikeDataset` of per-sample arrays: `times` (n_i,) seconds (cast to
        float32), `units` (n_i,) channels (cast to uint16), `labels` (N,), `speakers`
        (N,) (default -1); `kw`: the other fields (``source``, ``class_names`` default
        ``class-k`` up to the largest label, ...)."""
        n = len(labels)
        if len(times) != n or len(units) != n:
            raise ValueError(f"times, units and labels differ in length: {len(times)}, "
                             f"{len(units)}, {n}")
        counts = np.array([np.size(t) for t in times], np.int64)
        if any(np.size(u) != c for u, c in zip(units, counts)):
            raise ValueError("a sample has different numbers of times and units")
        labels = np.asarray(labels, np.int64).reshape(n)
        kw.setdefault("source", "memory")
        kw.setdefault("class_names", tuple(
            f"class-{k}" for k in range(int(labels.max()) + 1 if n else 0)))
        return cls(
            times=(np.concatenate([np.asarray(t, np.float32).reshape(-1) for t in times])
                   if n else np.zeros(0, np.float32)),
            units=(np.concatenate([np.asarray(u).reshape(-1) for u in units]).astype(np.uint16)
                   if n else np.zeros(0, np.uint16)),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            labels=labels,
            speakers=(np.full(n, -1, np.int64) if speakers is None
                      else np.asarray(speakers, np.int64).reshape(n)),
            **kw)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spike_counts(self) -> np.ndarray:
        """(N,) int64 spikes per sample."""
        return np.diff(self.offsets)

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `i`: ``(times (n,) float32 seconds, units (n,) uint16)`` (views)."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.source}: sample {i} is out of range [0, {len(self)})")
        i %= len(self)
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.times[lo:hi], self.units[lo:hi]

    def spikes(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The spikes of samples `indices`, concatenated.

        Returns ``(times (n,) float32, units (n,) uint16, counts (len(indices),) int64)``
        where ``counts[k]`` spikes belong to ``indices[k]`` (in order).
        """
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.source}: sample index out of range [0, {len(self)})")
        lo, hi = self.offsets[idx], self.offsets[idx + 1]
        counts = hi - lo
        if not idx.size:
            return self.times[:0], self.units[:0], counts
        # one gather: positions lo_k .. hi_k - 1 of every sample
        pos = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) \
            + np.arange(int(counts.sum()))
        return self.times[pos], self.units[pos], counts

    def subset(self, indices: Sequence[int]) -> SpikeDataset:
        """A `SpikeDataset` of samples `indices` (in that order; copies)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        times, units, counts = self.spikes(idx)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return dataclasses.replace(self, times=times, units=units, offsets=offsets,
                                   labels=self.labels[idx], speakers=self.speakers[idx])


# ---------------------------------------------------------------------------- discovery
def strip_suffix(name: str) -> str:
    """``shd_train.h5.gz`` -> ``shd_train`` (the name without a `SUFFIXES` ending)."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def has_data_suffix(path: str | os.PathLike) -> bool:
    """True if the file name ends with one of `SUFFIXES`."""
    return any(Path(path).name.endswith(s) for s in SUFFIXES)


def find_split_files(data_dir: str | os.PathLike) -> dict[str, Path | None]:
    """The train and test files in `data_dir`.

    Looks for SHD's names first (``shd_train.h5`` / ``shd_test.h5``, then their
    ``.gz`` / ``.zip`` forms), else for a single file per split whose name contains
    ``train`` / ``test`` and ends in a `SUFFIXES` ending (as
    ``fsdd_shd_train.h5``).  Returns ``{"train": path or None, "test": path or None}``.
    Raises FileNotFoundError if `data_dir` does not exist, ValueError if a split
    matches several files by the loose rule (name them in the message).
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"spoken-digit data folder {folder} does not exist")
    found: dict[str, Path | None] = {}
    for split, official in SHD_FILES.items():
        exact = [folder / (official + s) for s in ("", ".gz", ".zip")]
        hit = next((p for p in exact if p.is_file()), None)
        if hit is None:
            loose = sorted(p for p in folder.iterdir() if p.is_file()
                           and not p.name.startswith(".") and has_data_suffix(p)
                           and split in strip_suffix(p.name).lower())
            if len(loose) > 1:
                raise ValueError(f"{folder}: several {split} files match *{split}*.h5: "
                                 f"{[p.name for p in loose]}; keep one or name it "
                                 f"{official}")
            hit = loose[0] if loose else None
        found[split] = hit
    return found


# ---------------------------------------------------------------------------- decompress
def default_cache_dir() -> Path:
    """``$ELM_JAX_CACHE/spoken_digits``, else ``$XDG_CACHE_HOME/elm_jax/spoken_digits``
    (``~/.cache/...``)."""
    if os.environ.get("ELM_JAX_CACHE"):
        return Path(os.environ["ELM_JAX_CACHE"]) / "spoken_digits"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "elm_jax" / "spoken_digits"


def _cache_name(path: Path) -> str:
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    return f"{strip_suffix(path.name)}-{hashlib.sha1(stamp).hexdigest()[:12]}.h5"


def _decompress(path: Path, cache_dir: Path) -> Path:
    """The decompressed ``.h5`` of a ``.gz`` / ``.zip`` file, from or into `cache_dir`."""
    target = cache_dir / _cache_name(path)
    if target.is_file():
        return target
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as src:
                atomic_write(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))
        else:
            with zipfile.ZipFile(path) as z:
                members = [m for m in z.namelist() if m.endswith((".h5", ".hdf5"))
                           and not m.split("/")[-1].startswith(".")]
                if len(members) != 1:
                    raise SpokenDigitsFormatError(
                        f"{path}: expected exactly one .h5 member in the zip archive, "
                        f"found {members}")
                with z.open(members[0]) as src:
                    atomic_write(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))
    except SpokenDigitsFormatError:
        raise
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        raise SpokenDigitsFormatError(
            f"{path}: the compressed file is corrupt or truncated and could not be "
            f"decompressed ({type(err).__name__}: {err})") from err
    return target


def resolve_h5(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The plain ``.h5`` to open for `path`: `path` itself, or its decompressed copy in
    `cache_dir` (default `default_cache_dir`) for ``.h5.gz`` / ``.h5.zip``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spoken-digit file {path} does not exist")
    if path.name.endswith((".gz", ".zip")):
        return _decompress(path, Path(cache_dir) if cache_dir is not None
                           else default_cache_dir())
    return path


# ---------------------------------------------------------------------------- reader
def _fail(path: Any, dataset: str, problem: str) -> SpokenDigitsFormatError:
    return SpokenDigitsFormatError(f"{path}: dataset '{dataset}': {problem}")


def _read(f, path: Path, name: str, required: bool = True):
    """``f[name][()]`` with errors naming the file and dataset (None if optional and
    absent)."""
    import h5py

    if name not in f:
        if not required:
            return None
        raise _fail(path, name, "is missing (not an SHD-layout file?)")
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise _fail(path, name, f"expected a dataset, found {type(obj).__name__}")
    try:
        return obj[()]
    except Exception as err:
        raise _fail(path, name, f"could not be read: the file is truncated or corrupt "
                                f"({type(err).__name__}: {err})") from err


def _vlen_base(f, name: str):
    import h5py

    return h5py.check_vlen_dtype(f[name].dtype) if name in f else None


def _flatten(path: Path, name: str, ragged: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate an object array of per-sample arrays; returns (values, counts)."""
    arr = np.asarray(ragged, dtype=object)
    if arr.ndim != 1:
        raise _fail(path, name, f"expected shape (N,), got {arr.shape}")
    parts = [np.asarray(a).reshape(-1) for a in arr]
    counts = np.array([p.shape[0] for p in parts], np.int64)
    if parts:
        values = np.concatenate(parts)
    else:
        values = np.zeros(0, np.float32 if kind == "f" else np.uint16)
    if values.size and values.dtype.kind not in ("f" if kind == "f" else "ui"):
        raise _fail(path, name, f"expected {'float' if kind == 'f' else 'integer'} "
                                f"values, got {values.dtype}")
    return values, counts


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in value.reshape(-1)]
    return value


def read_shd(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
             num_channels: int = NUM_CHANNELS) -> SpikeDataset:
    """Read a file in SHD's layout (``.h5``, ``.h5.gz`` or ``.h5.zip``).

    Args:
      path: the file.
      cache_dir: where compressed files are decompressed (`resolve_h5`).
      num_channels: units must lie in ``[0, num_channels)``.
    Returns: a `SpikeDataset`; times are float32 seconds (the stored float16 values
      exactly), labels and speakers int64.
    Raises: FileNotFoundError; `SpokenDigitsFormatError` (ValueError) naming the file
      and the dataset path for anything not in the layout (module docstring).
    """
    import h5py

    src = Path(path)
    h5 = resolve_h5(src, cache_dir)
    try:
        f = h5py.File(h5, "r")
    except OSError as err:
        raise SpokenDigitsFormatError(
            f"{src}: not a readable HDF5 file (dataset '{TIMES}' expected; "
            f"{type(err).__name__}: {err})") from err
    with f:
        for name in (TIMES, UNITS):
            if name in f and _vlen_base(f, name) is None:
                raise _fail(src, name, f"expected a variable-length (vlen) dataset, got "
                                       f"dtype {f[name].dtype}")
        raw_times, raw_units = _read(f, src, TIMES), _read(f, src, UNITS)
        labels = _read(f, src, LABELS)
        speakers = _read(f, src, SPEAKER, required=False)
        keys = _read(f, src, KEYS, required=False)
        meta: dict[str, np.ndarray] = {}
        if META_INFO in f and isinstance(f[META_INFO], h5py.Group):
            for name in f[META_INFO]:
                value = _read(f, src, f"{META_INFO}/{name}", required=False)
                if value is not None:
                    meta[name] = np.asarray(value)
        attrs = {k: _decode(v) for k, v in f.attrs.items()}
    times, t_counts = _flatten(src, TIMES, raw_times, "f")
    units, u_counts = _flatten(src, UNITS, raw_units, "i")
    n = len(t_counts)
    for name, arr in ((LABELS, labels), (SPEAKER, speakers)):
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.shape != (n,) or arr.dtype.kind not in "ui":
            raise _fail(src, name, f"expected ({n},) integers (one per sample of "
                                   f"'{TIMES}'), got shape {arr.shape} dtype {arr.dtype}")
    if len(u_counts) != n:
        raise _fail(src, UNITS, f"expected {n} samples (as '{TIMES}'), got {len(u_counts)}")
    bad = np.flatnonzero(t_counts != u_counts)
    if bad.size:
        i = int(bad[0])
        raise _fail(src, UNITS, f"sample {i} has {u_counts[i]} units but "
                                f"{t_counts[i]} times in '{TIMES}'")
    times = times.astype(np.float32)   # exact for float16; arithmetic happens later
    if times.size and not (np.isfinite(times).all() and times.min() >= 0):
        k = int(np.flatnonzero(~(np.isfinite(times) & (times >= 0)))[0])
        i = int(np.searchsorted(np.cumsum(t_counts), k, side="right"))
        raise _fail(src, TIMES, f"sample {i} has time {times[k]!r}: expected finite "
                                f"seconds >= 0")
    if units.size and (units.min() < 0 or units.max() >= num_channels):
        k = int(np.flatnonzero((units < 0) | (units >= num_channels))[0])
        i = int(np.searchsorted(np.cumsum(u_counts), k, side="right"))
        raise _fail(src, UNITS, f"sample {i} has unit {units[k]}: expected channels in "
                                f"[0, {num_channels})")
    labels = np.asarray(labels).astype(np.int64)
    if keys is not None:
        keys_arr = np.asarray(keys).reshape(-1)
        class_names = tuple(str(_decode(k)) if isinstance(k, bytes) else str(k)
                            for k in keys_arr)
    else:
        class_names = tuple(f"class-{k}" for k in range(int(labels.max()) + 1 if n else 0))
    if n and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise _fail(src, LABELS, f"labels span [{labels.min()}, {labels.max()}] but "
                                 f"'{KEYS}' names {len(class_names)} classes")
    return SpikeDataset(
        source=str(src), times=times, units=units.astype(np.uint16),
        offsets=np.concatenate([[0], np.cumsum(t_counts)]).astype(np.int64),
        labels=labels,
        speakers=(np.asarray(speakers).astype(np.int64) if speakers is not None
                  else np.full(n, -1, np.int64)),
        class_names=class_names, num_channels=int(num_channels), meta_info=meta,
        attrs=attrs)


# ---------------------------------------------------------------------------- writer
def write_shd(path: str | os.PathLike, times: Sequence[np.ndarray],
              units: Sequence[np.ndarray], labels: Sequence[int],
              speakers: Sequence[int] | None = None, *,
              class_names: Sequence[str] | None = None,
              meta_info: Mapping[str, np.ndarray] | None = None,
              attrs: Mapping[str, Any] | None = None, compression: str | None = "gzip"
              ) -> Path:
    """Write samples in SHD's layout; ``.h5``, ``.h5.gz`` or ``.h5.zip`` by the name.

    Args:
      path: output file (written atomically: a temporary file, then renamed).
      times: per sample, (n_i,) spike times in seconds (stored as vlen float16, so
        they are rounded to float16 as in SHD).
      units: per sample, (n_i,) channels (vlen uint16).
      labels: (N,) classes (uint16).
      speakers: (N,) speaker ids (uint16); default all 0.
      class_names: ``extra/keys`` (byte strings); default ``class-0`` ... for the
        largest label.
      meta_info: arrays for ``extra/meta_info/<name>`` (strings stored as bytes).
      attrs: root attributes (strings stored as bytes arrays / str).
      compression: HDF5 filter of the datasets (``"gzip"`` as in the FSDD file, None).
    Returns: the written path.
    """
    import h5py

    path = Path(path)
    n = len(labels)
    if len(times) != n or len(units) != n:
        raise ValueError(f"times, units and labels differ in length: {len(times)}, "
                         f"{len(units)}, {n}")
    speakers = np.zeros(n, np.uint16) if speakers is None else np.asarray(speakers)
    if speakers.shape != (n,):
        raise ValueError(f"speakers: expected shape ({n},), got {speakers.shape}")
    labels_arr = np.asarray(labels)
    if class_names is None:
        class_names = [f"class-{k}" for k in range(int(labels_arr.max()) + 1 if n else 0)]
    t_obj = np.empty(n, dtype=object)
    u_obj = np.empty(n, dtype=object)
    for i, (t, u) in enumerate(zip(times, units)):
        t, u = np.asarray(t).reshape(-1), np.asarray(u).reshape(-1)
        if t.shape != u.shape:
            raise ValueError(f"sample {i}: {t.size} times but {u.size} units")
        t_obj[i] = t.astype(np.float16)
        u_obj[i] = u.astype(np.uint16)

    def write_h5(target: Path) -> None:
        with h5py.File(target, "w") as f:
            kw = {"compression": compression} if compression else {}
            f.create_dataset(TIMES, (n,), dtype=h5py.vlen_dtype(np.float16), **kw)[...] = t_obj
            f.create_dataset(UNITS, (n,), dtype=h5py.vlen_dtype(np.uint16), **kw)[...] = u_obj
            f.create_dataset(LABELS, data=labels_arr.astype(np.uint16), **kw)
            f.create_dataset(SPEAKER, data=speakers.astype(np.uint16), **kw)
            f.create_dataset(KEYS, data=np.array([str(k).encode() for k in class_names]))
            group = f.create_group(META_INFO)
            for name, value in (meta_info or {}).items():
                value = np.asarray(value)
                if value.dtype.kind == "U":
                    value = np.char.encode(value, "utf-8")
                group.create_dataset(name, data=value)
            for name, value in (attrs or {}).items():
                f.attrs[name] = value

    # build the plain file beside the target, then rename / compress it into place
    fd_dir = path.parent
    fd_dir.mkdir(parents=True, exist_ok=True)
    tmp = fd_dir / f".{path.name}.{os.getpid()}.h5.tmp"
    try:
        write_h5(tmp)
        if path.name.endswith(".gz"):
            with open(tmp, "rb") as src:
                atomic_write(path, lambda f: _gzip_into(src, f))
        elif path.name.endswith(".zip"):
            member = strip_suffix(path.name) + ".h5"
            atomic_write(path, lambda f: _zip_into(tmp, member, f))
        else:
            with open(tmp, "rb") as done:  # on disk before the rename, as atomic_write
                os.fsync(done.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _gzip_into(src, dst) -> None:
    with gzip.GzipFile(fileobj=dst, mode="wb", mtime=0) as z:
        shutil.copyfileobj(src, z, 1 << 20)


def _zip_into(src: Path, member: str, dst) -> None:
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(src, member)


def write_dataset(path: str | os.PathLike, data: SpikeDataset, **kw) -> Path:
    """`write_shd` of a `SpikeDataset` (class names, meta_info kept; `kw` passed on)."""
    per = [data.sample(i) for i in range(len(data))]
    kw.setdefault("class_names", data.class_names)
    kw.setdefault("meta_info", dict(data.meta_info))
    return write_shd(path, [t for t, _ in per], [u for _, u in per], data.labels,
                     np.maximum(data.speakers, 0), **kw)
