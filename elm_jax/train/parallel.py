"""Data parallelism with `jax.sharding`: a 1-D mesh over a ``"data"`` axis.

Batches are sharded along their first axis (``P("data")``), the train state is
replicated (``P()``); `jax.jit` inserts the gradient all-reduce.  The same code runs on
one device, several CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``),
several GPUs or TPU cores, and several hosts after `jax.distributed.initialize()`: each
process computes the same global batch (the data is a pure function of the step) and
`jax.make_array_from_callback` keeps the shards that live on its devices.

In a multi-process run every process runs the same trainer code; `barrier` and
`any_process` are the two host-side agreements it needs (no-ops with one process).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh over `devices` (default: every device of every process) named "data"."""
    devices = list(devices) if devices is not None else jax.devices()
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the "
                         f"data mesh; use a multiple of {n}")


def put_batch(batch: dict[str, Any], sharding: NamedSharding) -> dict[str, Any]:
    """Place a global host batch on the mesh, sharded along the batch axis.

    Every leaf is placed on its own, so a pytree value whose leaves all have the batch
    axis first (an `elm_jax.SpikeEvents` ``"x"``: ``time``, ``channel``, ``value`` of
    shape (batch, capacity)) shards like a dense array.
    """
    def put(value: Any) -> jax.Array:
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding,
                                            lambda index: value[index])

    return jax.tree_util.tree_map(put, dict(batch))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (the same name on all
    processes, else AssertionError naming it); a no-op in a one-process run."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process (every process must call it; a collective
    in a multi-process run, `flag` itself with one process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))
    return bool(np.any(flags))
