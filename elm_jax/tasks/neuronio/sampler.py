"""`WindowSampler`: seeded random training windows of NeuronIO files, streamed by a
background thread."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import queue
import threading
from typing import Any, Iterator, Sequence

import numpy as np


from .formats import (IGNORE_TIME_FROM_START_MS, NeuronIOData, WINDOW_MS, soma_train_target)
from .reader import load_file

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

    Speed: cutting windows from memory or from `cache_dir` files keeps well ahead of a
    training step, streaming straight from the pickles does not (unpickling dominates):
    give a `cache_dir` (built ahead with `prepare_cache`) for real training.  Measured
    rates: ``python -m benchmarks loader`` and docs/neuronio.md.
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
