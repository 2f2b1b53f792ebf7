"""Sparse spike-event inputs: the same (batch, time, num_input) input as a padded event list.

Spiking inputs are mostly zero (NeuronIO: about 0.2 % of the 1278 x T entries are
spikes), yet a dense input costs the routing matmul ``x @ R`` (num_input x num_branch
multiply-adds per token) and its weight gradient ``x^T g`` on every entry.  A
`SpikeEvents` batch stores only the non-zero entries, per sequence, padded to a fixed
``capacity`` so that shapes stay static under `jax.jit`:

    time[b, k], channel[b, k], value[b, k]    event k of sequence b
    x[b, time[b, k], channel[b, k]] += value[b, k]

Padding entries have ``value == 0`` (and any valid time/channel, 0 by convention), so
they add nothing.  The branch drive then costs one gather of a row of ``R`` and one
scatter-add per event (`branch_drive`), and its gradient with respect to ``R`` the
transposed pair, independent of ``num_input``.

`elm_jax.apply` accepts a `SpikeEvents` wherever it accepts a dense ``x``; the result
equals ``apply(params, events.to_dense(), ...)``.  Every leaf has the batch axis first,
so a batch shards over devices like a dense one.  Build events on the host
(`SpikeEvents.from_dense`, or directly from spike times as the NeuronIO sampler
does): converting inside a jitted function (``jnp.nonzero``) costs more than it saves.
Time and channel ranges are checked when a `SpikeEvents` is built from NumPy arrays;
inside `jax.jit` only shapes and dtypes can be checked.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpikeEvents:
    """A batch of sparse inputs (see the module docstring).

    Attributes:
      time: (batch, capacity) int32 time step of each event, in [0, num_steps).
      channel: (batch, capacity) int32 input channel of each event, in [0, num_input).
      value: (batch, capacity) float value added at (time, channel); 0 for padding.
      num_steps: static sequence length T.
      num_input: static number of input channels.
    """

    time: Any
    channel: Any
    value: Any
    num_steps: int = dataclasses.field(metadata={"static": True})
    num_input: int = dataclasses.field(metadata={"static": True})

    def __post_init__(self) -> None:
        # host (NumPy) arrays are range-checked when built; inside jit the leaves are
        # tracers and only the static checks of `check_events` apply
        _check_ranges(self, "events")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The dense shape (batch, num_steps, num_input)."""
        return (int(np.shape(self.value)[0]), self.num_steps, self.num_input)

    @property
    def capacity(self) -> int:
        """Events per sequence, padding included."""
        return int(np.shape(self.value)[1])

    @property
    def dtype(self):
        """The dtype of `value` (what a dense ``x`` would have)."""
        return self.value.dtype

    @classmethod
    def from_dense(cls, x: Any, capacity: int | None = None,
                   dtype: Any = np.float32) -> "SpikeEvents":
        """Events of the non-zero entries of a dense host array.

        Args:
          x: (batch, time, num_input) array (NumPy or anything convertible).
          capacity: events per sequence; default: the largest count in the batch.
            Raises ValueError if a sequence has more non-zero entries.
          dtype: dtype of `value`.
        Returns: a `SpikeEvents` holding NumPy arrays (``jnp.asarray`` or
          `jax.device_put` moves it).
        """
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x: expected shape (batch, time, num_input), got {x.shape}")
        batch, steps, num_input = x.shape
        b, t, c = np.nonzero(x)
        counts = np.bincount(b, minlength=batch)
        need = int(counts.max()) if batch else 0
        if capacity is None:
            capacity = max(need, 1)
        elif need > capacity:
            raise ValueError(f"capacity={capacity} is too small: sequence "
                             f"{int(counts.argmax())} has {need} non-zero entries")
        # rank of each event within its sequence (np.nonzero is sorted by b)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(b)) - starts[b]
        time, channel, value = _padding(batch, capacity, dtype)
        time[b, slot] = t
        channel[b, slot] = c
        value[b, slot] = x[b, t, c]
        return cls(time, channel, value, steps, num_input)

    @classmethod
    def from_lists(cls, events: list, num_steps: int, num_input: int,
                   capacity: int, dtype: Any = np.float32) -> "SpikeEvents":
        """Pack per-sequence event arrays into one padded batch.

        Args:
          events: one ``(time, channel, value)`` triple of 1-d arrays per sequence.
          num_steps, num_input: the dense shape of one sequence.
          capacity: events per sequence after padding; ValueError if one has more.
        Returns: a `SpikeEvents` holding NumPy arrays.
        """
        time, channel, value = _padding(len(events), capacity, dtype)
        for i, (t, c, v) in enumerate(events):
            n = len(t)
            if n > capacity:
                raise ValueError(f"capacity={capacity} is too small: sequence {i} has "
                                 f"{n} events")
            time[i, :n], channel[i, :n], value[i, :n] = t, c, v
        return cls(time, channel, value, num_steps, num_input)

    def to_dense(self) -> jax.Array:
        """The dense (batch, num_steps, num_input) array (duplicates are summed)."""
        batch = self.shape[0]
        rows = jnp.arange(batch)[:, None]
        dense = jnp.zeros(self.shape, jnp.asarray(self.value).dtype)
        return dense.at[rows, self.time, self.channel].add(self.value)


def _padding(batch: int, capacity: int, dtype: Any) -> tuple[np.ndarray, ...]:
    """All-padding host arrays: time, channel (batch, capacity) int32 zeros, value zeros."""
    return (np.zeros((batch, capacity), np.int32), np.zeros((batch, capacity), np.int32),
            np.zeros((batch, capacity), dtype))


def is_events(x: Any) -> bool:
    """True for a `SpikeEvents` batch."""
    return isinstance(x, SpikeEvents)


def check_events(events: SpikeEvents, num_input: int, name: str = "x") -> None:
    """Raise ValueError unless `events` is a consistent batch for `num_input` channels."""
    if events.num_input != num_input:
        raise ValueError(f"{name}.num_input: expected {num_input}, got {events.num_input}")
    if isinstance(events.num_steps, bool) or not isinstance(events.num_steps, int) \
            or events.num_steps < 1:
        raise ValueError(f"{name}.num_steps: expected an integer >= 1, "
                         f"got {events.num_steps!r}")
    shape = tuple(np.shape(events.value))
    if len(shape) != 2:
        raise ValueError(f"{name}.value: expected shape (batch, capacity), got {shape}")
    for field in ("time", "channel"):
        arr = getattr(events, field)
        if tuple(np.shape(arr)) != shape:
            raise ValueError(f"{name}.{field}: expected shape {shape} (as value), "
                             f"got {tuple(np.shape(arr))}")
        if not jnp.issubdtype(arr.dtype, jnp.integer):
            raise ValueError(f"{name}.{field}: expected an integer dtype, got {arr.dtype}")
    if not jnp.issubdtype(events.value.dtype, jnp.floating) and \
            not jnp.issubdtype(events.value.dtype, jnp.integer):
        raise ValueError(f"{name}.value: expected a float or integer dtype, "
                         f"got {events.value.dtype}")
    _check_ranges(events, name)


def _check_ranges(events: SpikeEvents, name: str) -> None:
    """ValueError if host (NumPy) `time`/`channel` leave [0, num_steps) / [0, num_input)."""
    for field, bound in (("time", events.num_steps), ("channel", events.num_input)):
        arr = getattr(events, field)
        if isinstance(arr, np.ndarray) and type(bound) is int and bound >= 1 and arr.size and \
                (arr.min() < 0 or arr.max() >= bound):
            raise ValueError(f"{name}.{field}: expected values in [0, {bound}), got "
                             f"[{arr.min()}, {arr.max()}]")


def branch_drive(events: SpikeEvents, matrix: jax.Array) -> jax.Array:
    """Time-major branch input ``x_t @ R`` from events.

    Args:
      events: `SpikeEvents` with shape (batch, T, num_input).
      matrix: (num_input, num_branch) ``R``.
    Returns: (T, batch, num_branch) in the dtype of `matrix`.
    """
    batch, steps, _ = events.shape
    value = jnp.asarray(events.value).astype(matrix.dtype)
    rows = jnp.take(matrix, events.channel, axis=0) * value[..., None]  # (B, K, nb)
    drive = jnp.zeros((steps, batch, matrix.shape[1]), matrix.dtype)
    return drive.at[events.time, jnp.arange(batch)[:, None]].add(rows)
