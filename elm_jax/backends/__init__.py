"""Implementations behind `elm_jax.apply(..., backend=...)` (see docs/backends.md).

* `mlp` -- the memory update's MLP and the activation table, shared by every backend.
* `options` -- `ScanOptions`, `HoistedOptions`, `DeerOptions` and the legacy-keyword rule.
* `scan` -- ``backend="scan"`` and its remat rules.
* `linear` -- diagonal linear recurrences (traces; the parallel ELM's memory), by
  `lax.scan` or `lax.associative_scan`.
* `hoisted` -- ``"hoisted"``/``"associative"``: the sequential memory core with
  everything else hoisted out of the loop, a custom backward, and the chunk/storage
  rules.
* `deer` -- experimental exact parallel evaluation by Newton iterations
  (`deer_memory`, `deer_apply`).

Names are imported lazily (the submodules import `elm_jax.core`, which imports `mlp`).
"""

from __future__ import annotations

import importlib

_NAMES = {
    "DeerInfo": "deer", "DeerNotConvergedError": "deer", "deer_apply": "deer",
    "deer_memory": "deer", "DeerOptions": "options", "HoistedOptions": "options",
    "ScanOptions": "options",
}

__all__ = ["DeerInfo", "DeerNotConvergedError", "DeerOptions", "HoistedOptions",
           "ScanOptions", "deer_apply", "deer_memory"]


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
