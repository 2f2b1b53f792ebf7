"""SHD preprocessing as published, and the SHD / SHD-Adding batch samplers.

Binning (the ELM reference loader, data-formats.md section 2.2): time is cut into bins
of ``b`` ms over ``[0, duration)`` (``duration`` = 1 s); the edges are computed from
integers, ``edge_k = k * b / 1000`` s (float64), and spike ``t`` (float16 seconds, cast
to float64 first) lands in bin ``k`` with ``edge_k <= t < edge_{k+1}`` (NumPy's
``digitize(t, edges) - 1``).  Spikes at ``t >= duration`` are dropped; so are spikes
in the last, partial bin's overhang when ``b`` does not divide the duration (the
reference's float ``arange`` kept up to ``b`` ms past 1 s there).  Spikes in the same
bin and channel are **summed**, so a value can exceed 1.  ``T = ceil(duration / b)``:
1000, 500, 200, 100, 50, 20, 10 steps for b = 1, 2, 5, 10, 20, 50, 100 ms.

Everything downstream works on the binned entries of a batch (`BinnedEntries`: the
non-zero ``(row, time, channel, count)`` cells, one per cell), from which the model
input is built either dense, (batch, T, 700) float32, or as `elm_jax.SpikeEvents`
(time, channel, value = count; padding value 0).  Both are made from the same entries,
so ``events.to_dense()`` equals the dense batch exactly, dropout included.

* Input-spike dropout (the paper's 0.5; the notebook zeroes each input entry with
  probability ``p`` and does not rescale): every binned entry is dropped with
  probability ``dropout``.  Applied to training batches; `EpochSampler` /
  `AddingSampler` with ``eval_dropout=True`` apply it to evaluation batches too (the
  reference notebook did), seeded so evaluation stays deterministic.
* Splits: `validation_split` (the reference's seeded binomial 20 % mask of the train
  file), `speaker_split` (hold out one speaker: an unseen-speaker test).
* SHD: `EpochSampler`, batch ``i`` of epoch ``e`` a pure function of
  ``(seed, e, i)``: training shuffles each epoch and drops the remainder
  (``len // batch_size`` batches, as the reference); evaluation keeps the order and
  pads the last batch with ``weight`` 0 rows.
* SHD-Adding: `AddingSampler`, ``2 * batch_size`` samples drawn uniformly with
  replacement per batch, pair ``(a, b)`` concatenated in time (``2 T`` steps: 2 s),
  target ``(label_a mod 10) + (label_b mod 10)`` (19 classes); a fixed number of
  batches per epoch (`ADDING_NUM_BATCHES`: 2000 train, 500 validation, 2000 test);
  evaluation sets are the same every epoch (seeded, the epoch is ignored).

Batches are dicts in the trainer's convention (`elm_jax.tasks.base`):
``{"x": (B, T, 700) float32 or SpikeEvents, "y": (B,) int32 labels,
"weight": (B,) float32}``.

By default a sampler bins its whole split once (`BinnedSplit`, about a second for 2,000
samples) and a batch only gathers the stored entries; ``precompute=False`` bins each batch
on the fly (`bin_entries`) with the same result.

A sampler reads spikes through a *source*: anything with ``labels``, ``speakers``,
``__len__`` and ``spikes(indices) -> (times, units, counts)`` (`SpikeDataset`, or the
TFDS random-access source of `tfds_builder`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from ...events import SpikeEvents
from .formats import NUM_CHANNELS

DURATION_MS = 1000
#: Bin sizes of the paper's tables S11/S12 (any integer >= 1 works).
PUBLISHED_BIN_SIZES_MS = (1, 2, 4, 6, 8, 10, 20, 50, 100)
INPUT_FORMATS = ("events", "dense")
#: SHD-Adding batches per epoch (the reference notebook).
ADDING_NUM_BATCHES = {"train": 2000, "val": 500, "test": 2000}
ADDING_NUM_CLASSES = 19
#: Default rounding of a `SpikeEvents` capacity (fewer distinct shapes to compile).
CAPACITY_MULTIPLE = 64

Batch = dict[str, Any]


class SpikeSource(Protocol):
    """What the samplers read: per-sample labels/speakers and spikes by index."""

    labels: np.ndarray
    speakers: np.ndarray
    num_channels: int

    def __len__(self) -> int: ...

    def spikes(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(times (n,) float seconds, units (n,) int, counts (len(indices),))``."""
        ...


# ---------------------------------------------------------------------------- binning
def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {low}")
    return int(value)


def num_bins(bin_ms: int, duration_ms: int = DURATION_MS) -> int:
    """Time steps ``T = ceil(duration_ms / bin_ms)`` of one binned sample."""
    bin_ms = _check_int("bin_ms", bin_ms)
    duration_ms = _check_int("duration_ms", duration_ms)
    return -(-duration_ms // bin_ms)


def bin_edges(bin_ms: int, duration_ms: int = DURATION_MS) -> np.ndarray:
    """(T + 1,) float64 edges in seconds, ``k * bin_ms / 1000`` from integers."""
    return np.arange(num_bins(bin_ms, duration_ms) + 1, dtype=np.int64) * bin_ms / 1000.0


def spike_bins(times: np.ndarray, bin_ms: int, duration_ms: int = DURATION_MS) -> np.ndarray:
    """Bin of each spike time (seconds): (n,) int64 in ``[0, T)``, or -1 for a spike at
    or after ``duration_ms`` (dropped).  Times are cast to float64 before comparing."""
    edges = bin_edges(bin_ms, duration_ms)
    t = np.asarray(times, np.float64)
    # the floor is at most one bin off the edges (rounding); fix it against them
    k = np.floor(t * (1000.0 / bin_ms)).astype(np.int64)
    np.clip(k, 0, edges.shape[0] - 2, out=k)
    k -= edges[k] > t
    k += edges[k + 1] <= t
    return np.where((t < duration_ms / 1000.0) & (t >= 0), k, -1)


@dataclasses.dataclass(frozen=True)
class BinnedEntries:
    """The non-zero cells of a binned batch, one entry per (row, time, channel).

    Attributes:
      row, time, channel: (n,) int64, sorted by row, then time, then channel.
      count: (n,) int64 spikes summed in the cell (>= 1).
      batch, num_steps, num_channels: the dense shape (batch, T, channels).
    """

    row: np.ndarray
    time: np.ndarray
    channel: np.ndarray
    count: np.ndarray
    batch: int
    num_steps: int
    num_channels: int

    def row_counts(self) -> np.ndarray:
        """(batch,) int64 entries per row."""
        return np.bincount(self.row, minlength=self.batch).astype(np.int64)

    def dropout(self, rate: float, rng: np.random.Generator) -> BinnedEntries:
        """Drop each entry with probability `rate` (input-spike dropout, no rescaling)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout={rate!r} is invalid: expected 0 <= dropout < 1")
        if rate == 0.0:
            return self
        keep = rng.random(self.row.shape[0], dtype=np.float32) >= rate
        return dataclasses.replace(self, row=self.row[keep], time=self.time[keep],
                                   channel=self.channel[keep], count=self.count[keep])

    def to_dense(self, dtype: Any = np.float32) -> np.ndarray:
        """(batch, T, channels) array of the counts."""
        out = np.zeros((self.batch, self.num_steps, self.num_channels), dtype)
        out[self.row, self.time, self.channel] = self.count
        return out

    def to_events(self, capacity: int | None = None, dtype: Any = np.float32,
                  multiple: int = CAPACITY_MULTIPLE) -> SpikeEvents:
        """The entries as `SpikeEvents` (value = count, 0 for padding).

        Args:
          capacity: events per row; ValueError if a row has more.  Default: the largest
            row rounded up to a multiple of `multiple` (at least `multiple`).
        """
        counts = self.row_counts()
        need = int(counts.max()) if self.batch else 0
        if capacity is None:
            capacity = max(multiple, -(-need // multiple) * multiple)
        elif need > capacity:
            raise ValueError(f"capacity={capacity} is too small: row {int(counts.argmax())} "
                             f"of the batch has {need} binned entries")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(self.row.shape[0]) - starts[self.row]
        time = np.zeros((self.batch, capacity), np.int32)
        channel = np.zeros((self.batch, capacity), np.int32)
        value = np.zeros((self.batch, capacity), dtype)
        time[self.row, slot] = self.time
        channel[self.row, slot] = self.channel
        value[self.row, slot] = self.count
        return SpikeEvents(time, channel, value, self.num_steps, self.num_channels)


def bin_entries(source: SpikeSource, indices: Any, bin_ms: int,
                duration_ms: int = DURATION_MS) -> BinnedEntries:
    """Bin samples into `BinnedEntries`.

    Args:
      source: a `SpikeSource` (e.g. `SpikeDataset`).
      indices: (B,) sample per row, or (B, S): S samples per row concatenated in time
        (segment ``s`` occupies steps ``[s T, (s + 1) T)``; S = 2 for SHD-Adding).
        Index -1 is an empty segment (padding rows).
      bin_ms, duration_ms: the binning (module docstring).
    Returns: entries of shape (B, S T, channels).
    """
    idx = np.asarray(indices, np.int64)
    if idx.ndim == 1:
        idx = idx[:, None]
    if idx.ndim != 2:
        raise ValueError(f"indices: expected shape (batch,) or (batch, segments), got "
                         f"{np.shape(indices)}")
    batch, segments = idx.shape
    steps = num_bins(bin_ms, duration_ms)
    channels = int(getattr(source, "num_channels", NUM_CHANNELS))
    flat = idx.reshape(-1)
    real = flat >= 0
    times, units, counts = source.spikes(flat[real])
    per = np.zeros(flat.shape[0], np.int64)
    per[real] = counts
    cell = np.repeat(np.arange(flat.shape[0], dtype=np.int64), per)   # row * S + segment
    k = spike_bins(times, bin_ms, duration_ms)
    keep = k >= 0
    row, seg = np.divmod(cell[keep], segments)
    key = (row * (segments * steps) + seg * steps + k[keep]) * channels \
        + np.asarray(units, np.int64)[keep]
    # spikes come time-sorted per sample, so the keys are nearly sorted: a stable
    # (merge) sort is ~2x faster than np.unique's quicksort here
    key = np.sort(key, kind="stable")
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    count = np.diff(np.append(starts, key.shape[0]))
    key = key[starts]
    rest, channel = np.divmod(key, channels)
    row, time = np.divmod(rest, segments * steps)
    return BinnedEntries(row, time, channel, count.astype(np.int64), batch,
                         segments * steps, channels)


def bin_dense(source: SpikeSource, indices: Any, bin_ms: int,
              duration_ms: int = DURATION_MS, dtype: Any = np.float32) -> np.ndarray:
    """Dense binned counts: (B, S T, channels) (see `bin_entries` for `indices`)."""
    return bin_entries(source, indices, bin_ms, duration_ms).to_dense(dtype)


def to_events(source: SpikeSource, indices: Any, bin_ms: int,
              duration_ms: int = DURATION_MS, capacity: int | None = None,
              dtype: Any = np.float32) -> SpikeEvents:
    """The binned samples as `SpikeEvents` (B, S T, channels); ``to_dense()`` equals
    `bin_dense` of the same arguments."""
    return bin_entries(source, indices, bin_ms, duration_ms).to_events(capacity, dtype)


def entries_per_sample(source: SpikeSource, bin_ms: int, duration_ms: int = DURATION_MS,
                       indices: Any = None, chunk: int = 512) -> np.ndarray:
    """Binned (non-zero) cells of each sample: (len(indices),) int64 (all samples by
    default); the exact `SpikeEvents` size each sample needs."""
    idx = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
    out = np.zeros(idx.shape[0], np.int64)
    for lo in range(0, idx.shape[0], chunk):
        part = idx[lo:lo + chunk]
        out[lo:lo + chunk] = bin_entries(source, part, bin_ms, duration_ms).row_counts()
    return out


class BinnedSplit:
    """The binned entries of every sample of a split, computed once (compressed rows).

    A batch then only gathers stored entries (no binning, no sorting): at 2-ms bins
    about 4x less work per batch than `bin_entries`, and independent of the bin size.
    Memory: 6 bytes per binned entry (the 2,000-sample FSDD file: ~50 MB at 2 ms).

    Args:
      source, indices (default all), bin_ms, duration_ms: as `bin_entries`.
    Attributes: ``per_sample`` (len(indices),) int64 entries of each sample.
    """

    def __init__(self, source: SpikeSource, indices: Any = None, bin_ms: int = 2,
                 duration_ms: int = DURATION_MS, chunk: int = 512):
        idx = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
        idx = np.unique(idx)
        self.bin_ms, self.duration_ms = bin_ms, duration_ms
        self.num_steps = num_bins(bin_ms, duration_ms)
        self.num_channels = int(getattr(source, "num_channels", NUM_CHANNELS))
        self.position = np.full(len(source), -1, np.int64)
        self.position[idx] = np.arange(idx.shape[0])
        times, channels, counts, per = [], [], [], []
        for lo in range(0, idx.shape[0], chunk):
            e = bin_entries(source, idx[lo:lo + chunk], bin_ms, duration_ms)
            times.append(e.time.astype(np.int32))
            channels.append(e.channel.astype(np.int16))
            counts.append(e.count.astype(np.int32))
            per.append(e.row_counts())
        self.per_sample = np.concatenate(per) if per else np.zeros(0, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.per_sample)]).astype(np.int64)
        time = np.concatenate(times) if times else np.zeros(0, np.int32)
        count = np.concatenate(counts) if counts else np.zeros(0, np.int32)
        # the smallest dtypes that hold them: 6 bytes per entry in practice
        self.time = time.astype(np.int16) if self.num_steps < 2 ** 15 else time
        self.count = count.astype(np.uint16) if count.max(initial=0) < 2 ** 16 else count
        self.channel = np.concatenate(channels) if channels else np.zeros(0, np.int16)

    def entries(self, indices: Any) -> BinnedEntries:
        """`bin_entries` of `indices` ((B,) or (B, S), -1 = empty), from the store."""
        idx = np.asarray(indices, np.int64)
        if idx.ndim == 1:
            idx = idx[:, None]
        batch, segments = idx.shape
        flat = idx.reshape(-1)
        pos = np.where(flat >= 0, self.position[np.maximum(flat, 0)], -2)
        if (pos == -1).any():
            raise ValueError("BinnedSplit.entries: a sample outside the stored split")
        lo = np.where(pos >= 0, self.offsets[np.maximum(pos, 0)], 0)
        n = np.where(pos >= 0, self.per_sample[np.maximum(pos, 0)], 0)
        cell = np.repeat(np.arange(flat.shape[0], dtype=np.int64), n)
        take = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
        row, seg = np.divmod(cell, segments)
        # samples are disjoint in time within a row and sorted inside: already ordered
        return BinnedEntries(row, self.time[take] + seg * self.num_steps,  # int64
                             self.channel[take].astype(np.int64),
                             self.count[take].astype(np.int64), batch,
                             segments * self.num_steps, self.num_channels)


# ---------------------------------------------------------------------------- splits
def validation_split(source_or_n: SpikeSource | int, fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The reference split: ``default_rng(seed).binomial(1, fraction, N)`` marks the
    validation samples.  Returns ``(train_indices, val_indices)``, sorted int64."""
    n = source_or_n if isinstance(source_or_n, (int, np.integer)) else len(source_or_n)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} is invalid: expected 0 <= fraction <= 1")
    mask = np.random.default_rng(seed).binomial(1, fraction, size=int(n)).astype(bool)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def speaker_split(source: SpikeSource, speaker: int, indices: Any = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Hold out one speaker: ``(indices of the other speakers, indices of speaker)``
    among `indices` (default all samples)."""
    idx = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
    spk = np.asarray(source.speakers)[idx]
    if (spk < 0).any():
        raise ValueError("speaker_split: the data has no speaker ids (extra/speaker)")
    present = sorted(set(spk.tolist()))
    if speaker not in present:
        raise ValueError(f"speaker={speaker!r} is invalid: the speakers present are "
                         f"{present}")
    held = spk == speaker
    return idx[~held], idx[held]


# ---------------------------------------------------------------------------- samplers
class _Sampler:
    """Shared parts of `EpochSampler` and `AddingSampler` (batch assembly)."""

    segments = 1

    def __init__(self, source: SpikeSource, indices: Any = None, *, batch_size: int = 8,
                 bin_ms: int = 2, duration_ms: int = DURATION_MS, train: bool = True,
                 seed: int = 0, input_format: str = "events", dropout: float = 0.0,
                 eval_dropout: bool = False, capacity: int | str | None = None,
                 capacity_multiple: int = CAPACITY_MULTIPLE, dtype: Any = np.float32,
                 num_batches: int | None = None, precompute: bool = True):
        self.source = source
        self.indices = (np.arange(len(source)) if indices is None
                        else np.asarray(indices, np.int64).reshape(-1))
        if self.indices.size and (self.indices.min() < 0
                                  or self.indices.max() >= len(source)):
            raise ValueError(f"indices: expected sample indices in [0, {len(source)})")
        self.batch_size = _check_int("batch_size", batch_size)
        self.bin_ms = _check_int("bin_ms", bin_ms)
        self.duration_ms = _check_int("duration_ms", duration_ms)
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format={input_format!r} is invalid: expected one of "
                             f"{INPUT_FORMATS}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid: expected 0 <= dropout < 1")
        self.train = bool(train)
        self.seed = int(seed)
        self.input_format = input_format
        self.dropout = float(dropout) if (self.train or eval_dropout) else 0.0
        self.capacity_multiple = _check_int("capacity_multiple", capacity_multiple)
        self.dtype = dtype
        self.num_steps = self.segments * num_bins(bin_ms, duration_ms)
        self.num_input = int(getattr(source, "num_channels", NUM_CHANNELS))
        self.binned = (BinnedSplit(source, self.indices, bin_ms, duration_ms)
                       if precompute else None)
        self.capacity: int | None = None
        if input_format == "events":
            if capacity is None or capacity == "split":
                self.capacity = self._capacity_bound()
            elif capacity != "batch":
                self.capacity = _check_int("capacity", capacity)
        self.num_batches = self._count_batches(num_batches)

    def _count_batches(self, num_batches: int | None) -> int:  # pragma: no cover
        raise NotImplementedError

    def _capacity_bound(self) -> int:
        """A capacity no batch can exceed: S times the largest per-sample entry count
        of the split (pairs are drawn with replacement, so a row can hold the largest
        sample twice), rounded up to `capacity_multiple` (one compilation per run)."""
        per = (self.binned.per_sample if self.binned is not None else
               entries_per_sample(self.source, self.bin_ms, self.duration_ms, self.indices))
        need = self.segments * int(per.max(initial=0))
        m = self.capacity_multiple
        return max(m, -(-need // m) * m)

    def _assemble(self, rows: np.ndarray, labels: np.ndarray, weight: np.ndarray,
                  dropout_key: list[int]) -> Batch:
        entries = (self.binned.entries(rows) if self.binned is not None
                   else bin_entries(self.source, rows, self.bin_ms, self.duration_ms))
        if self.dropout:
            entries = entries.dropout(self.dropout, np.random.default_rng(dropout_key))
        if self.input_format == "events":
            x = entries.to_events(self.capacity, self.dtype, self.capacity_multiple)
        else:
            x = entries.to_dense(self.dtype)
        return {"x": x, "y": labels.astype(np.int32), "weight": weight.astype(np.float32)}

    # subclasses: _count_batches, batch_indices(epoch, i), batch(epoch, i)
    def batch(self, epoch: int, i: int) -> Batch:  # pragma: no cover - overridden
        raise NotImplementedError

    def batches(self, epoch: int = 0, start: int = 0, prefetch: int = 0) -> Iterator[Batch]:
        """Batches ``start, ..., num_batches - 1`` of `epoch`; with ``prefetch > 0``
        made by a background thread up to `prefetch` batches ahead (NumPy releases
        the GIL in the heavy parts, so batching overlaps a training step)."""
        made = (self.batch(epoch, i) for i in range(start, self.num_batches))
        return prefetched(made, prefetch) if prefetch > 0 else made

    def batch_at(self, step: int) -> Batch:
        """The batch of global step `step`: batch ``step % num_batches`` of epoch
        ``step // num_batches`` (a pure function of `step`, for resumable training)."""
        epoch, i = divmod(_check_int("step", step, 0), self.num_batches)
        return self.batch(epoch, i)

    def __len__(self) -> int:
        return self.num_batches

    def _check_batch(self, epoch: int, i: int) -> None:
        _check_int("epoch", epoch, 0)
        if not 0 <= i < self.num_batches:
            raise IndexError(f"batch {i} is out of range [0, {self.num_batches})")


class EpochSampler(_Sampler):
    """SHD batches: every sample of the split once per epoch (module docstring).

    Args:
      source: a `SpikeSource`.
      indices: the split's sample indices (default all), e.g. from `validation_split`.
      batch_size, bin_ms, duration_ms: batch size and binning (paper: 8, 2 ms, 1000).
      train: True shuffles per epoch (``default_rng([seed, epoch])``), applies
        `dropout` and yields ``len // batch_size`` full batches; False keeps the order
        and yields ``ceil(len / batch_size)`` batches, the last padded with empty rows
        of ``weight`` 0 and label 0.
      seed: shuffling and dropout seed.
      input_format: ``"events"`` (`SpikeEvents`) or ``"dense"`` ((B, T, 700)).
      dropout: input-spike dropout rate (paper 0.5) for training batches.
      eval_dropout: also apply it when ``train=False`` (the reference notebook did),
        seeded per batch so evaluation stays deterministic.
      capacity: events only: an int; ``"split"``/None (default): the exact bound over
        the split (`entries_per_sample`, rounded up to `capacity_multiple`), so every
        batch has one shape; ``"batch"``: each batch's own largest row rounded up.
      dtype: dtype of dense values / event values (counts).
      precompute: bin the whole split once at construction (`BinnedSplit`; batches
        then only gather, several times faster) instead of binning every batch.
    Attributes: ``num_batches``, ``num_steps`` (T), ``num_input`` (700), ``capacity``,
      ``binned`` (the `BinnedSplit` or None).
    """

    def _count_batches(self, num_batches: int | None) -> int:
        if num_batches is not None:
            raise ValueError("EpochSampler covers its split once per epoch; num_batches "
                             "is an AddingSampler option")
        n = self.indices.shape[0]
        count = n // self.batch_size if self.train else -(-n // self.batch_size)
        if count < 1:
            raise ValueError(f"the split holds {n} samples: too few for one batch of "
                             f"{self.batch_size}")
        return count

    def batch_indices(self, epoch: int, i: int) -> np.ndarray:
        """(batch_size,) sample indices of batch `i` of `epoch` (-1 for padding)."""
        self._check_batch(epoch, i)
        order = self.indices
        if self.train:
            order = order[np.random.default_rng([self.seed, epoch]).permutation(order.size)]
        rows = order[i * self.batch_size:(i + 1) * self.batch_size]
        return np.concatenate([rows, np.full(self.batch_size - rows.size, -1, np.int64)])

    def batch(self, epoch: int, i: int) -> Batch:
        """Batch `i` of `epoch` (deterministic; see the class docstring)."""
        rows = self.batch_indices(epoch, i)
        real = rows >= 0
        labels = np.where(real, np.asarray(self.source.labels)[np.maximum(rows, 0)], 0)
        key = [self.seed, 1, epoch if self.train else 0, i]
        return self._assemble(rows, labels, real.astype(np.float32), key)


class AddingSampler(_Sampler):
    """SHD-Adding batches (module docstring): rows are two samples back to back
    (``2 T`` steps), target ``(label_a mod 10) + (label_b mod 10)``.

    Args: as `EpochSampler`, plus
      num_batches: batches per epoch; default `ADDING_NUM_BATCHES` ``"train"`` (2000)
        for ``train=True``, else ``"test"`` (2000) -- pass 500 for validation.
      train: True draws new pairs every epoch (``default_rng([seed, epoch, i])``) and
        applies `dropout`; False draws the same pairs every epoch (a fixed evaluation
        set).  Every row has ``weight`` 1.
    """

    segments = 2

    def _count_batches(self, num_batches: int | None) -> int:
        if self.indices.size == 0:
            raise ValueError("AddingSampler: the split holds no samples")
        if num_batches is None:
            num_batches = ADDING_NUM_BATCHES["train" if self.train else "test"]
        return _check_int("num_batches", num_batches)

    def batch_indices(self, epoch: int, i: int) -> np.ndarray:
        """(batch_size, 2) sample indices ``(a, b)`` of each row of batch `i`."""
        self._check_batch(epoch, i)
        key = [self.seed, epoch, i] if self.train else [self.seed, i]
        draw = np.random.default_rng(key).integers(0, self.indices.size, 2 * self.batch_size)
        return self.indices[draw].reshape(2, self.batch_size).T

    def batch(self, epoch: int, i: int) -> Batch:
        """Batch `i` of `epoch` (deterministic; see the class docstring)."""
        pairs = self.batch_indices(epoch, i)
        labels = np.asarray(self.source.labels)[pairs]
        target = labels[:, 0] % 10 + labels[:, 1] % 10
        key = [self.seed, 1, epoch if self.train else 0, i]
        return self._assemble(pairs, target, np.ones(self.batch_size, np.float32), key)


def prefetched(items: Iterator[Any], size: int) -> Iterator[Any]:
    """Iterate `items`, each made by one worker thread up to `size` items ahead; an
    exception in the producer is re-raised here; closing the generator cancels the
    items not yet started."""
    items = iter(items)
    end = object()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="spoken-digits")
    ahead: collections.deque = collections.deque(
        pool.submit(next, items, end) for _ in range(max(1, int(size))))
    try:
        while True:
            item = ahead.popleft().result()
            if item is end:
                return
            ahead.append(pool.submit(next, items, end))
            yield item
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def loader_throughput(sampler: _Sampler, num_batches: int = 20, epoch: int = 0) -> float:
    """Batches per second `sampler` prepares on this host (batches ``0 ..
    num_batches - 1`` of `epoch`, after one warm-up batch); the issue asks for >= 10x
    the training step rate."""
    import time

    num_batches = min(_check_int("num_batches", num_batches), sampler.num_batches)
    sampler.batch(epoch, 0)
    start = time.perf_counter()
    for i in range(num_batches):
        sampler.batch(epoch, i)
    return num_batches / max(time.perf_counter() - start, 1e-9)
