"""Reading NeuronIO files: discovery, the strict protocol-2 unpickler, parsing into
`NeuronIOData` and the atomic ``.npz`` cache (format: `elm_jax.tasks.neuronio.formats`)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import itertools
import multiprocessing
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...fileio import atomic_write
from ...progress import StepProgress
from .formats import CACHE_FORMAT, FILE_GLOBS, SPLIT_FOLDERS, NeuronIOData, NeuronIOFormatError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
}


# ---------------------------------------------------------------------------- discovery
def _batch_number(path: Path) -> tuple[int, str]:
    m = re.search(r"_(\d+)$", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def _is_data_file(path: Path) -> bool:
    return (path.is_file() and not path.name.startswith(".")
            and path.suffix not in (".npz", ".tmp", ".json", ".md", ".txt"))


def _files_in(folder: Path) -> list[Path]:
    found: set[Path] = set()
    for pattern in FILE_GLOBS:
        found.update(p for p in folder.glob(pattern) if _is_data_file(p))
    return sorted(found)


def find_files(root: str | os.PathLike, split: str | None = None) -> list[Path]:
    """NeuronIO files under `root`.

    Args:
      root: a file (returned as is), or a folder searched recursively.
      split: ``None`` (every matching file under `root`), or ``"train"``, ``"valid"``,
        ``"test"``: only files inside the split's folders (`SPLIT_FOLDERS`), found at any
        depth under `root` (so ``root/full_ergodic_train_batch_2`` and
        ``root/train/full_ergodic_train_batch_2`` both work) or `root` itself.
    Returns: sorted paths (by folder batch number, then name).
    Raises: FileNotFoundError when `root` is missing or nothing matches.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"NeuronIO data path {root} does not exist")
    if root.is_file():
        return [root]
    if split is None:
        folders = sorted({p.parent for pattern in FILE_GLOBS for p in root.rglob(pattern)
                          if _is_data_file(p)}, key=lambda p: (str(p.parent), _batch_number(p)))
    else:
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split={split!r} is invalid: expected one of "
                             f"{sorted(SPLIT_FOLDERS)} or None")
        names = set(SPLIT_FOLDERS[split])
        candidates = [root] + [p for p in root.rglob("*") if p.is_dir()]
        folders = sorted((p for p in candidates if p.name in names), key=_batch_number)
    files = [f for folder in folders for f in _files_in(folder)]
    if not files:
        where = f"the {split} folders {list(SPLIT_FOLDERS[split])} under " if split else ""
        raise FileNotFoundError(f"no NeuronIO files matching {list(FILE_GLOBS)} in {where}{root}")
    return files


# ---------------------------------------------------------------------------- reading
class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise NeuronIOFormatError(
                f"{self._path}: refusing to load the global {module}.{name}: a NeuronIO file "
                f"only holds dicts, lists, numpy arrays and numpy scalars")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise NeuronIOFormatError(f"{self._path}: unexpected persistent id {pid!r} "
                                  f"(not a NeuronIO pickle)")


def read_neuronio_pickle(path: str | os.PathLike) -> dict:
    """Unpickle a NeuronIO file safely (protocol 2, latin1, restricted globals).

    Raises: FileNotFoundError, or `NeuronIOFormatError` naming the file for anything that
    is not a complete protocol-2 pickle of only dicts, lists, numbers, strings and numpy
    arrays / scalars.
    """
    path = Path(path)
    try:
        # a large buffer: the C unpickler then prefetches with peek() instead of calling
        # read() per opcode (2x faster on these files)
        with open(path, "rb", buffering=1 << 20) as f:
            head = f.read(2)
            if head[:1] != b"\x80" or len(head) < 2:
                raise NeuronIOFormatError(
                    f"{path}: not a NeuronIO file: expected a protocol-2 pickle (starting "
                    f"with bytes 80 02), got {head!r}")
            if head[1] != 2:
                raise NeuronIOFormatError(
                    f"{path}: not a NeuronIO file: pickle protocol {head[1]}, the original "
                    f"files are protocol 2")
            f.seek(0)
            obj = _RestrictedUnpickler(f, path).load()
            trailing = f.read(1)
    except FileNotFoundError:
        raise FileNotFoundError(f"NeuronIO file {path} does not exist") from None
    except NeuronIOFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError) as err:
        raise NeuronIOFormatError(f"{path}: corrupt or truncated NeuronIO pickle "
                                  f"({type(err).__name__}: {err})") from None
    if trailing:
        raise NeuronIOFormatError(f"{path}: unexpected data after the end of the pickle")
    return obj



def _require(mapping: Any, key: str, path: Path, where: str) -> Any:
    if not isinstance(mapping, dict):
        raise NeuronIOFormatError(f"{path}: {where} is a {type(mapping).__name__}, "
                                  f"expected a dict (not a NeuronIO file?)")
    if key not in mapping:
        raise NeuronIOFormatError(f"{path}: {where} has no key {key!r} (not a NeuronIO file?)")
    return mapping[key]


def _spike_dict_events(spikes: Any, num_segments: int, duration: int, path: Path,
                       where: str) -> tuple[np.ndarray, np.ndarray]:
    """(segment, time) int64 arrays of a {segment: [times]} dict, validated."""
    if not isinstance(spikes, dict):
        raise NeuronIOFormatError(f"{path}: {where} is a {type(spikes).__name__}, expected a "
                                  f"dict segment -> spike times")
    try:
        values = list(spikes.values())
        counts = np.fromiter(map(len, values), np.int64, len(values))
        total = int(counts.sum())
        first = next((v[0] for v in values if len(v)), 0)
        # integers (the original numpy int64) are read as such; other numbers as float64
        # and checked to be whole below
        dtype = np.int64 if isinstance(first, (int, np.integer)) else np.float64
        times = np.fromiter(itertools.chain.from_iterable(values), dtype, total)
        segments = np.repeat(np.fromiter(spikes.keys(), np.float64, len(values)), counts)
    except (TypeError, ValueError) as err:
        raise NeuronIOFormatError(f"{path}: {where} holds non-numeric entries ({err})") from None
    for name, values_, upper in (("segment index", segments, num_segments),
                                 ("spike time", times, duration)):
        if values_.size and not (values_.min() >= 0 and values_.max() < upper
                                 and (values_.dtype.kind == "i"
                                      or np.all(values_ == np.floor(values_)))):
            bad = values_[(values_ != np.floor(values_)) | (values_ < 0) | (values_ >= upper)][0]
            raise NeuronIOFormatError(f"{path}: {where} has {name} {bad!r} outside the "
                                      f"integers [0, {upper})")
    return segments.astype(np.int64), times.astype(np.int64)


def _duration(params: dict, sims: list, path: Path) -> int:
    soma = _require(sims[0], "somaVoltageLowRes", path, "simulation 0")
    duration = int(np.asarray(soma).shape[-1])
    seconds = params.get("totalSimDurationInSec")
    if seconds is not None and abs(float(seconds) * 1000.0 - duration) > 0.5:
        raise NeuronIOFormatError(
            f"{path}: Params['totalSimDurationInSec']={seconds!r} disagrees with the "
            f"{duration} samples of somaVoltageLowRes")
    if duration <= 0:
        raise NeuronIOFormatError(f"{path}: empty somaVoltageLowRes")
    return duration


def parse_experiment(obj: Any, path: str | os.PathLike = "<memory>") -> NeuronIOData:
    """Convert an unpickled NeuronIO dict into `NeuronIOData` (validating it)."""
    path = Path(path)
    params = _require(obj, "Params", path, "the top-level object")
    results = _require(obj, "Results", path, "the top-level object")
    sims = _require(results, "listOfSingleSimulationDicts", path, "Results")
    if not isinstance(sims, list) or not sims:
        raise NeuronIOFormatError(f"{path}: Results['listOfSingleSimulationDicts'] must be a "
                                  f"non-empty list")
    segment_types = _require(params, "allSegmentsType", path, "Params")
    num_segments = len(segment_types)
    if num_segments <= 0 or 2 * num_segments > np.iinfo(np.int16).max:
        raise NeuronIOFormatError(f"{path}: implausible number of segments {num_segments}")
    duration = _duration(params, sims, path)
    channels = 2 * num_segments
    ptrs, chans = [], []
    y_spike = np.zeros((len(sims), duration), np.float32)
    soma = np.zeros((len(sims), duration), np.float32)
    num_out = np.zeros(len(sims), np.int64)
    total = 0
    for s, sim in enumerate(sims):
        where = f"simulation {s}"
        seg_e, t_e = _spike_dict_events(_require(sim, "exInputSpikeTimes", path, where),
                                        num_segments, duration, path, f"{where} exInputSpikeTimes")
        seg_i, t_i = _spike_dict_events(_require(sim, "inhInputSpikeTimes", path, where),
                                        num_segments, duration, path, f"{where} inhInputSpikeTimes")
        key = np.concatenate([t_e * channels + seg_e, t_i * channels + seg_i + num_segments])
        key.sort()
        key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key   # drop duplicates
        times = key // channels
        chans.append((key % channels).astype(np.int16))
        ptrs.append(total + np.searchsorted(times, np.arange(duration + 1)))
        total += key.size
        v = np.asarray(_require(sim, "somaVoltageLowRes", path, where))
        if v.shape != (duration,) or v.dtype.kind != "f":
            raise NeuronIOFormatError(f"{path}: {where} somaVoltageLowRes has shape {v.shape} "
                                      f"dtype {v.dtype}, expected float ({duration},)")
        if not np.all(np.isfinite(v)):
            raise NeuronIOFormatError(f"{path}: {where} somaVoltageLowRes is not finite")
        soma[s] = v
        out = np.asarray(_require(sim, "outputSpikeTimes", path, where))
        if out.dtype.kind not in "fiu" or out.ndim > 1:
            raise NeuronIOFormatError(f"{path}: {where} outputSpikeTimes has dtype {out.dtype}"
                                      f" shape {out.shape}, expected a 1-D float array")
        out = out.reshape(-1).astype(np.float64)
        index = (out - 0.5).astype(np.int64)        # int(t - 0.5), truncation as published
        if out.size and (not np.all(np.isfinite(out)) or index.min() < 0
                         or index.max() >= duration):
            raise NeuronIOFormatError(f"{path}: {where} outputSpikeTimes outside "
                                      f"[0, {duration + 0.5}) ms: {out.tolist()[:5]}...")
        y_spike[s, index] = 1.0
        num_out[s] = out.size
    return NeuronIOData(source=str(path), num_segments=num_segments,
                        event_ptr=np.stack(ptrs).astype(np.int64),
                        event_channel=np.concatenate(chans), y_spike=y_spike, soma_mv=soma,
                        num_output_spikes=num_out)


# ---------------------------------------------------------------------------- caching
def _cache_path(path: Path, cache_dir: Path) -> Path:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{path.name}.{digest}.npz"


def _source_stamp(path: Path) -> np.ndarray:
    st = path.stat()
    return np.array([st.st_size, st.st_mtime_ns], np.int64)


def _read_cache(cache: Path, path: Path) -> NeuronIOData | None:
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["format"]) != CACHE_FORMAT or not np.array_equal(z["stamp"],
                                                                      _source_stamp(path)):
                return None
            return NeuronIOData(
                source=str(path), num_segments=int(z["num_segments"]),
                event_ptr=z["event_ptr"], event_channel=z["event_channel"],
                y_spike=z["y_spike"].astype(np.float32),
                soma_mv=z["soma_mv"].astype(np.float32),
                num_output_spikes=z["num_output_spikes"])
    except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
        return None


def _write_cache(cache: Path, path: Path, data: NeuronIOData) -> None:
    atomic_write(cache, lambda f: np.savez(
        f, format=np.array(CACHE_FORMAT), stamp=_source_stamp(path),
        num_segments=np.array(data.num_segments), event_ptr=data.event_ptr,
        event_channel=data.event_channel, y_spike=data.y_spike.astype(np.uint8),
        soma_mv=data.soma_mv.astype(np.float16), num_output_spikes=data.num_output_spikes))


def load_file(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
              ) -> NeuronIOData:
    """Read one NeuronIO file.

    Args:
      path: the pickle.
      cache_dir: optional folder for a ``.npz`` cache of the parsed file (valid while the
        source's size and mtime are unchanged; written to a temporary file and renamed, so
        a crash never leaves a half-written cache; an unreadable cache is rebuilt).
    Raises: FileNotFoundError, `NeuronIOFormatError` (naming the file).
    """
    path = Path(path)
    cache = _cache_path(path, Path(cache_dir)) if cache_dir is not None else None
    if cache is not None and cache.exists() and path.exists():
        data = _read_cache(cache, path)
        if data is not None:
            return data
    data = parse_experiment(read_neuronio_pickle(path), path)
    if cache is not None:
        _write_cache(cache, path, data)
    return data


def load_files(paths: Iterable[str | os.PathLike], *, cache_dir=None) -> list[NeuronIOData]:
    """`load_file` for several files."""
    return [load_file(p, cache_dir=cache_dir) for p in paths]


def _cache_one(path: Path, cache_dir: Path) -> Path:
    load_file(path, cache_dir=cache_dir)
    return _cache_path(path, cache_dir)


def prepare_cache(paths: Iterable[str | os.PathLike], cache_dir: str | os.PathLike, *,
                  workers: int | None = None, progress: bool = True) -> list[Path]:
    """Parse files into `cache_dir` ahead of training, `workers` processes in parallel
    (default: the CPU count).  Unpickling is far slower than loading the cache (see
    ``python -m benchmarks loader``); streaming straight from the pickles keeps up with a
    training step only if a file parses faster than its ``batches_per_file`` steps run.  Returns the cache files (existing valid ones are
    kept).  With `progress`, a line per file on stderr (``parsing NeuronIO: file 3/12
    (name) | ...``)."""
    paths = [Path(p) for p in paths]
    cache_dir = Path(cache_dir)
    workers = workers or os.cpu_count() or 1
    lines = StepProgress("parsing NeuronIO: file", len(paths), enabled=progress)
    if workers <= 1 or len(paths) <= 1:
        out = []
        for p in paths:
            out.append(_cache_one(p, cache_dir))
            lines.advance(p.name)
        return out
    context = multiprocessing.get_context("spawn")   # no fork of a (multithreaded) JAX parent
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(paths)),
                                                mp_context=context) as pool:
        futures = {pool.submit(_cache_one, p, cache_dir): p for p in paths}
        for done in concurrent.futures.as_completed(futures):
            done.result()
            lines.advance(futures[done].name)
        return [f.result() for f in futures]
