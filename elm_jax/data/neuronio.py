"""NeuronIO (Beniaguev, Segev & London 2021) in its original file format.

A NeuronIO file is a Python-2 pickle (protocol 2) of one dict::

    {"Params":  {..., "allSegmentsType": [...639...], "totalSimDurationInSec": 6, ...},
     "Results": {"listOfSingleSimulationDicts": [sim, sim, ...]}}

with, per simulation, ``exInputSpikeTimes`` / ``inhInputSpikeTimes`` (dict segment index
-> list of spike times in integer ms; only segments that spiked appear),
``outputSpikeTimes`` (float16 ms), ``somaVoltageLowRes`` (float16 mV, one sample per ms)
and more keys this module does not need (high-resolution traces, the optional
per-segment voltages ``dendriticVoltagesLowRes``).  Simulations per file and duration
are read from each file (the public files hold 128 x 6 s, the small real set in
``../shared`` 2 or 8, the teacher files whatever they were written with).

Layout of the dense input (the one the published models were trained on): channel
``k < S`` is the excitatory synapse on segment ``k`` (value +1 when it spikes), channel
``S + k`` the inhibitory synapse on segment ``k`` (value -1), ``S`` = number of segments
(639 -> 1278 channels).

Preprocessing, as published (the reference ELM loader):

* output spike target: ``y_spike[int(t - 0.5)] = 1`` for every output spike time ``t``
  (``int`` truncates; the times are float16, so spikes after 2048 ms sit on a 2-ms grid);
* soma: voltage capped at ``Y_SOMA_THRESHOLD`` (-55 mV, removes the spikes), minus
  ``Y_TRAIN_SOMA_BIAS`` (-67.7 mV), times ``Y_TRAIN_SOMA_SCALE`` (0.1) for training; the
  evaluation uses the capped and biased voltage in mV (`soma_eval_target`);
* training windows of 500 ms start uniformly in ``[500, T - 500)`` (the first 500 ms of
  every simulation are never trained on, nor is the final ms).

Files are held sparsely in memory (`NeuronIOData`: the spike events of each simulation
sorted by time, plus the targets), so a 128-simulation file costs ~50 MB instead of the
~1 GB of its dense input; windows are made dense on demand (`NeuronIOData.x_windows`)
or handed on sparse as `elm_jax.SpikeEvents` (`NeuronIOData.x_window_events`).
`load_file` can keep a ``.npz`` cache of that form (written atomically; `prepare_cache`
builds it for many files in parallel).  `WindowSampler` draws training batches as a pure
function of ``(seed, batch index)`` and streams them with a background thread.

Loading is strict: the pickle may only reference the globals that numpy arrays and
scalars need; anything else, a truncated or corrupt file, or a file without the NeuronIO
structure raises `NeuronIOFormatError` naming the file.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import itertools
import multiprocessing
import os
import pickle
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..events import SpikeEvents
from ..fileio import atomic_write

__all__ = [
    "Y_SOMA_THRESHOLD", "Y_TRAIN_SOMA_BIAS", "Y_TRAIN_SOMA_SCALE", "IGNORE_TIME_FROM_START_MS",
    "WINDOW_MS", "FILE_GLOBS", "SPLIT_FOLDERS", "NeuronIOFormatError", "NeuronIOData",
    "WindowSampler", "find_files", "read_neuronio_pickle", "load_file", "load_files",
    "prepare_cache", "parse_experiment",
    "soma_train_target", "soma_eval_target", "loader_throughput",
]

# ---------------------------------------------------------------------------- constants
#: Soma voltage is capped at this value (mV) before any use (removes the spikes).
Y_SOMA_THRESHOLD = -55.0
#: Subtracted from the capped soma voltage (mV).
Y_TRAIN_SOMA_BIAS = -67.7
#: Scale of the training soma target (the model predicts volts x 100, i.e. mV / 10).
Y_TRAIN_SOMA_SCALE = 0.1
#: Training windows never start in the first 500 ms; the evaluation ignores them too.
IGNORE_TIME_FROM_START_MS = 500
#: Training / evaluation window length (ms).
WINDOW_MS = 500

#: File-name patterns: the ELM loader's ``*sim__*`` and a sims/duration-agnostic form of
#: Beniaguev's ``*_128_simulationRuns*_6_secDuration_*``.
FILE_GLOBS = ("*sim__*", "*_simulationRuns*_secDuration*")
#: Folders of each split (published ELM split: train 2-10, validation 1, test Data_test).
SPLIT_FOLDERS = {
    "train": tuple(f"full_ergodic_train_batch_{k}" for k in range(2, 11)),
    "valid": ("full_ergodic_train_batch_1",),
    "test": ("Data_test",),
}

CACHE_FORMAT = "elm_jax.neuronio_cache/1"

# Globals a NeuronIO pickle may reference: numpy array / scalar / dtype reconstruction
# (numpy 1 writes numpy.core.*, numpy 2 numpy._core.*) and protocol-2 bytes from Python 3.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
}


class NeuronIOFormatError(ValueError):
    """A NeuronIO file could not be read; the message names the file and the problem."""


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


@dataclasses.dataclass(frozen=True, eq=False)
class NeuronIOData:
    """The simulations of one NeuronIO file, inputs held sparsely.

    Attributes:
      source: the file it came from (or a description).
      num_segments: dendritic segments ``S`` (the input has ``2 S`` channels).
      event_ptr: (sims, T + 1) int64; the input events of simulation ``s`` at ms ``t``
        are ``event_channel[event_ptr[s, t]:event_ptr[s, t + 1]]``.
      event_channel: (events,) int16 channel of every input event (sorted by simulation,
        time, channel; duplicates removed).
      y_spike: (sims, T) float32 output spike target (0/1, published binning).
      soma_mv: (sims, T) float32 raw soma voltage in mV (exactly the stored float16).
      num_output_spikes: (sims,) int64 number of stored output spike times (may exceed
        ``y_spike.sum(1)`` when two float16 times fall in one bin).
    """

    source: str
    num_segments: int
    event_ptr: np.ndarray
    event_channel: np.ndarray
    y_spike: np.ndarray
    soma_mv: np.ndarray
    num_output_spikes: np.ndarray

    @property
    def num_sims(self) -> int:
        return int(self.y_spike.shape[0])

    @property
    def duration_ms(self) -> int:
        return int(self.y_spike.shape[1])

    @property
    def num_input(self) -> int:
        return 2 * self.num_segments

    @property
    def num_events(self) -> int:
        return int(self.event_channel.shape[0])

    def _window_spikes(self, sims: Sequence[int], starts: Sequence[int], window: int
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per window ``[start, start + window)`` of simulation ``sim``: ``(t, channel)``,
        two (events,) int64 arrays, ``t`` relative to the window start, sorted by time
        (events outside ``[0, T)`` do not exist, so such steps stay empty)."""
        sims = np.asarray(sims, np.int64).reshape(-1)
        starts = np.asarray(starts, np.int64).reshape(-1)
        if sims.shape != starts.shape:
            raise ValueError(f"sims and starts differ in length: {sims.shape} vs {starts.shape}")
        if sims.size and (sims.min() < 0 or sims.max() >= self.num_sims):
            raise ValueError(f"{self.source}: simulation index out of range [0, {self.num_sims})")
        out = []
        T = self.duration_ms
        for s, t0 in zip(sims, starts):
            a, b = max(int(t0), 0), min(int(t0) + window, T)
            if b <= a:
                out.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
                continue
            ptr = self.event_ptr[s, a:b + 1]
            ch = self.event_channel[ptr[0]:ptr[-1]].astype(np.int64)
            out.append((np.repeat(np.arange(a - t0, b - t0), np.diff(ptr)), ch))
        return out

    def _signs(self, channel: np.ndarray) -> np.ndarray:
        """+1 for excitatory channels (< S), -1 for inhibitory ones, as int8."""
        return np.where(channel < self.num_segments, 1, -1).astype(np.int8)

    def x_windows(self, sims: Sequence[int], starts: Sequence[int], window: int) -> np.ndarray:
        """Dense signed inputs of windows ``[start, start + window)`` of simulations.

        Time steps outside ``[0, T)`` are zero (padding).  Returns (n, window, 2 S) int8
        with +1 for excitatory and -1 for inhibitory spikes.
        """
        spikes = self._window_spikes(sims, starts, window)
        out = np.zeros((len(spikes), window, self.num_input), np.int8)
        flat = out.reshape(-1)
        for i, (t, ch) in enumerate(spikes):
            flat[(i * window + t) * self.num_input + ch] = self._signs(ch)
        return out

    def x_window_events(self, sims: Sequence[int], starts: Sequence[int], window: int,
                        capacity: int | None = None) -> SpikeEvents:
        """The windows of `x_windows` as `SpikeEvents`, built from the stored events
        (no dense intermediate).

        Args:
          sims, starts: (n,) simulation and start (ms) of each window.
          window: window length (ms).
          capacity: events per window after padding; default the largest count among
            these windows (at least 1).  ValueError if a window has more.
        Returns: `SpikeEvents` of shape (n, window, 2 S) holding NumPy arrays: ``time``,
          ``channel`` (n, capacity) int32, ``value`` (n, capacity) int8 in {-1, 0, 1}
          (0 = padding); ``to_dense()`` equals ``x_windows(sims, starts, window)``.
        """
        spikes = self._window_spikes(sims, starts, window)
        if capacity is None:
            capacity = max([1] + [len(t) for t, _ in spikes])
        return SpikeEvents.from_lists([(t, ch, self._signs(ch)) for t, ch in spikes],
                                      window, self.num_input, capacity, dtype=np.int8)

    def window_event_counts(self, sims: Any, starts: Any, window: int) -> np.ndarray:
        """Input events in windows ``[start, start + window)`` of simulations `sims`.

        ``event_ptr`` is the cumulative event count per time step, so each count is one
        subtraction, ``event_ptr[s, t0 + window] - event_ptr[s, t0]`` (steps outside
        ``[0, T)`` hold no events).  `sims` and `starts` broadcast against each other;
        returns int64 counts of their broadcast shape.
        """
        T = self.duration_ms
        starts = np.asarray(starts, np.int64)
        lo = self.event_ptr[sims, np.clip(starts, 0, T)]
        hi = self.event_ptr[sims, np.clip(starts + window, 0, T)]
        return (hi - lo).astype(np.int64)

    def max_window_events(self, window: int, first_start: int = 0,
                          last_start: int | None = None) -> int:
        """The most input events in any window ``[t0, t0 + window)`` of any simulation,
        over starts ``first_start <= t0 <= last_start`` (default: every start of a window
        that lies inside ``[0, T)``; counts by `window_event_counts`).  Returns 0 when
        no start is in range.
        """
        T = self.duration_ms
        last = T - window if last_start is None else int(last_start)
        first, last = max(int(first_start), -window), min(last, T)
        if last < first or not self.num_sims:
            return 0
        counts = self.window_event_counts(np.arange(self.num_sims)[:, None],
                                          np.arange(first, last + 1)[None, :], window)
        return int(counts.max())

    def x_dense(self, sims: Sequence[int] | None = None) -> np.ndarray:
        """Dense signed inputs of whole simulations: (n, T, 2 S) int8."""
        sims = np.arange(self.num_sims) if sims is None else np.asarray(sims)
        return self.x_windows(sims, np.zeros(len(sims), np.int64), self.duration_ms)

    def subset(self, sims: Sequence[int]) -> "NeuronIOData":
        """A `NeuronIOData` of some simulations only (copies)."""
        sims = np.asarray(sims, np.int64)
        ptr = self.event_ptr[sims]
        channel = np.concatenate([self.event_channel[p[0]:p[-1]] for p in ptr]) \
            if len(sims) else self.event_channel[:0]
        lengths = ptr[:, -1] - ptr[:, 0]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(sims) else lengths
        new_ptr = ptr - ptr[:, :1] + offsets[:, None]
        return dataclasses.replace(self, event_ptr=new_ptr, event_channel=channel,
                                   y_spike=self.y_spike[sims], soma_mv=self.soma_mv[sims],
                                   num_output_spikes=self.num_output_spikes[sims])


def soma_train_target(soma_mv: np.ndarray) -> np.ndarray:
    """Training soma target: ``(min(v, -55) - (-67.7)) * 0.1`` in float32 (as published)."""
    v = np.minimum(np.asarray(soma_mv, np.float32), np.float32(Y_SOMA_THRESHOLD))
    return (v - np.float32(Y_TRAIN_SOMA_BIAS)) * np.float32(Y_TRAIN_SOMA_SCALE)


def soma_eval_target(soma_mv: np.ndarray) -> np.ndarray:
    """Evaluation soma target in mV: ``min(v, -55) - (-67.7)`` in float64 (no scale)."""
    return np.minimum(np.asarray(soma_mv, np.float64), Y_SOMA_THRESHOLD) - Y_TRAIN_SOMA_BIAS


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
                  workers: int | None = None) -> list[Path]:
    """Parse files into `cache_dir` ahead of training, `workers` processes in parallel
    (default: the CPU count).  Unpickling costs ~0.1 s per simulation (a 128-simulation
    file ~15 s), a cached file loads in ~1 ms per simulation; streaming straight from the
    pickles keeps up with a training step only if a file parses faster than its
    ``batches_per_file`` steps run.  Returns the cache files (existing valid ones are
    kept)."""
    paths = [Path(p) for p in paths]
    cache_dir = Path(cache_dir)
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) <= 1:
        return [_cache_one(p, cache_dir) for p in paths]
    context = multiprocessing.get_context("spawn")   # no fork of a (multithreaded) JAX parent
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(paths)),
                                                mp_context=context) as pool:
        return list(pool.map(_cache_one, paths, [cache_dir] * len(paths)))


# ---------------------------------------------------------------------------- sampling
Batch = tuple[Any, np.ndarray, np.ndarray]  # (x: ndarray or SpikeEvents, y_spike, y_soma)
INPUT_FORMATS = ("dense", "events")


class WindowSampler:
    """Random training windows as published, batch ``i`` a pure function of (seed, i).

    Batches come in chunks of `batches_per_file` consecutive indices that share one
    file (so streaming from disk loads one file per chunk, like the reference loader).
    Chunk ``c`` uses file ``perm_e[c mod F]`` where ``perm_e`` is a seeded permutation of
    the ``F`` files for pass ``e = c // F`` (every file once per pass; the reference picks
    files with replacement).  Within a batch: `batch_size` simulations drawn without
    replacement (with replacement if the file holds fewer), window starts uniform in
    ``[ignore_start_ms, T - window)``, both from ``np.random.default_rng([seed, i])``.

    A batch is ``(x (B, window, 2S) int8 in {-1, 0, 1}, y_spike (B, window) float32,
    y_soma (B, window) float32 scaled as for training)``; with ``input_format="events"``
    ``x`` is the same input as an `elm_jax.SpikeEvents` (``value`` int8 +-1, 0 for
    padding) cut straight from the stored events, with the sampler's fixed `capacity`.

    Args:
      sources: paths of NeuronIO files, or loaded `NeuronIOData`.
      seed: the sampling seed.
      batch_size, window, ignore_start_ms: as published (8, 500, 500).
      batches_per_file: batches drawn per file visit; default
        ``int(file_load_fraction * sims * T / (batch_size * window))`` of the first file
        (57 for 128 x 6 s files and batch 8 with the published fraction 0.3), at least 1.
      cache_dir: `load_file` cache for paths.
      max_files_in_memory: loaded files kept (least recently used dropped).
      input_format: ``"dense"`` (default) or ``"events"`` (see above).
      capacity: ``"events"`` only: events per window after padding, the same for every
        batch so that a jitted step compiles once.  Default: the most events in any
        window the sampler can draw, i.e. the maximum over files and simulations of
        `NeuronIOData.max_window_events` over starts ``[ignore_start_ms, T - window)``
        (an exact upper bound; construction then loads every file once, fast with a
        `cache_dir`).  A given capacity skips that scan; a batch with a window holding
        more events raises ValueError naming the capacity.

    State: none besides the file cache; `iterate(start)` resumes at any batch index, so
    a trainer checkpoints just the next index.

    Speed (shared 2-core CPU, batch 8): ~25-45x the windows a jitted d_m=15 training
    step consumes when cut from memory, ~11-15x when streaming `cache_dir` files (the
    step never waited: 0.01 s over 40 steps), but only ~0.15-0.25x straight from the pickles
    (unpickling ~0.1 s per simulation dominates); so give a `cache_dir` (built ahead with
    `prepare_cache`) for real training.
    """

    def __init__(self, sources: Sequence[str | os.PathLike | NeuronIOData], *, seed: int = 0,
                 batch_size: int = 8, window: int = WINDOW_MS,
                 ignore_start_ms: int = IGNORE_TIME_FROM_START_MS,
                 batches_per_file: int | None = None, file_load_fraction: float = 0.3,
                 cache_dir: str | os.PathLike | None = None, max_files_in_memory: int = 2,
                 input_format: str = "dense", capacity: int | None = None):
        if isinstance(sources, (str, os.PathLike, NeuronIOData)):
            sources = [sources]
        if not sources:
            raise ValueError("WindowSampler needs at least one NeuronIO file")
        for name, value in (("batch_size", batch_size), ("window", window)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: expected an integer >= 1")
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format={input_format!r} is invalid: expected one of "
                             f"{INPUT_FORMATS}")
        if capacity is not None and (isinstance(capacity, bool)
                                     or not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity={capacity!r} is invalid: expected an integer >= 1 "
                             f"or None")
        self.input_format = input_format
        self.sources = list(sources)
        self.seed = int(seed)
        self.batch_size = batch_size
        self.window = window
        self.ignore_start_ms = int(ignore_start_ms)
        self.cache_dir = cache_dir
        self._lru: collections.OrderedDict[int, NeuronIOData] = collections.OrderedDict()
        self._max_files = max(1, int(max_files_in_memory))
        self._lock = threading.Lock()
        self._loading: dict[int, concurrent.futures.Future] = {}
        first = self.file(0)
        if batches_per_file is None:
            batches_per_file = int(file_load_fraction * first.num_sims * first.duration_ms
                                   / (batch_size * window))
        self.batches_per_file = max(1, int(batches_per_file))
        self.capacity: int | None = None
        if input_format == "events":
            self.capacity = capacity if capacity is not None else self._capacity_bound()

    def _capacity_bound(self) -> int:
        """Most events in any window `batch` can draw from any file (at least 1)."""
        bound = 1
        for k in range(self.num_files):
            data = self.file(k)
            last = data.duration_ms - self.window - 1   # starts < T - window (see batch)
            count = data.max_window_events(self.window, self.ignore_start_ms, last)
            bound = max(bound, count)
        return bound

    @property
    def num_files(self) -> int:
        return len(self.sources)

    def file(self, k: int) -> NeuronIOData:
        """File ``k`` (loaded on first use, kept in a small LRU cache; thread-safe, a file
        being loaded by another thread is waited for, not loaded twice)."""
        src = self.sources[k]
        if isinstance(src, NeuronIOData):
            return src
        with self._lock:
            if k in self._lru:
                self._lru.move_to_end(k)
                return self._lru[k]
            pending = self._loading.get(k)
            if pending is None:
                pending = self._loading[k] = concurrent.futures.Future()
                owner = True
            else:
                owner = False
        if not owner:
            return pending.result()
        try:
            data = load_file(src, cache_dir=self.cache_dir)
        except BaseException as err:
            with self._lock:
                del self._loading[k]
            pending.set_exception(err)
            raise
        with self._lock:
            self._lru[k] = data
            while len(self._lru) > self._max_files:
                self._lru.popitem(last=False)
            del self._loading[k]
        pending.set_result(data)
        return data

    def file_index(self, index: int) -> int:
        """Which file batch `index` comes from."""
        chunk = index // self.batches_per_file
        epoch, slot = divmod(chunk, self.num_files)
        perm = np.random.default_rng([self.seed, 1, epoch]).permutation(self.num_files)
        return int(perm[slot])

    def batch(self, index: int) -> Batch:
        """Batch number `index` (deterministic)."""
        if index < 0:
            raise ValueError(f"batch index {index} is invalid: expected >= 0")
        data = self.file(self.file_index(index))
        span = data.duration_ms - self.window - self.ignore_start_ms
        if span <= 0:
            raise ValueError(f"{data.source}: simulations of {data.duration_ms} ms are too short "
                             f"for {self.window}-ms windows after {self.ignore_start_ms} ms")
        rng = np.random.default_rng([self.seed, 0, index])
        sims = rng.choice(data.num_sims, size=self.batch_size,
                          replace=data.num_sims < self.batch_size)
        starts = self.ignore_start_ms + rng.integers(0, span, size=self.batch_size)
        if self.input_format == "events":
            x = data.x_window_events(sims, starts, self.window, self.capacity)
        else:
            x = data.x_windows(sims, starts, self.window)
        cols = starts[:, None] + np.arange(self.window)
        y_spike = data.y_spike[sims[:, None], cols]
        y_soma = soma_train_target(data.soma_mv[sims[:, None], cols])
        return x, y_spike, y_soma

    def iterate(self, start: int = 0, stop: int | None = None, *, prefetch: int = 8
                ) -> Iterator[Batch]:
        """Yield batches ``start, start + 1, ...`` (until `stop`), made in a background
        thread `prefetch` batches ahead; the next chunk's file is loaded ahead too."""
        indices = itertools.count(start) if stop is None else range(start, stop)
        if prefetch < 1:
            yield from map(self.batch, indices)
            return
        q: queue.Queue = queue.Queue(maxsize=prefetch)
        halt = threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

        def produce() -> None:
            try:
                for i in indices:
                    if halt.is_set():
                        return
                    if i % self.batches_per_file == 0 or i == start:
                        nxt = (i // self.batches_per_file + 1) * self.batches_per_file
                        pool.submit(self.file, self.file_index(nxt))
                    item = self.batch(i)
                    while not halt.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                q.put(StopIteration)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
                q.put(err)

        worker = threading.Thread(target=produce, daemon=True, name="neuronio-sampler")
        worker.start()
        try:
            while True:
                item = q.get()
                if item is StopIteration:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            try:
                worker.join(timeout=5)
                pool.shutdown(wait=False, cancel_futures=True)
            except Exception:  # noqa: BLE001 - finalised during interpreter shutdown
                pass


def loader_throughput(sampler: WindowSampler, num_batches: int = 50, *, start: int = 0,
                      prefetch: int = 8) -> dict[str, float]:
    """Time `num_batches` batches of `sampler.iterate` (files loaded on the way included).

    Returns: ``{"batches_per_s", "windows_per_s", "seconds", "num_batches"}``.
    """
    t0 = time.perf_counter()
    count = 0
    for _ in sampler.iterate(start, start + num_batches, prefetch=prefetch):
        count += 1
    seconds = time.perf_counter() - t0
    return {"batches_per_s": count / seconds, "windows_per_s": count * sampler.batch_size / seconds,
            "seconds": seconds, "num_batches": count}
