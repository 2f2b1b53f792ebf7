"""NeuronIO (Beniaguev, Segev & London 2021): the file format, its constants and the
in-memory form of a file (`NeuronIOData`).  Reading: `reader`; sampling: `sampler`.

The original file format.

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

import dataclasses
from typing import Any, Sequence

import numpy as np

from ...events import SpikeEvents

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


class NeuronIOFormatError(ValueError):
    """A NeuronIO file could not be read; the message names the file and the problem."""



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
