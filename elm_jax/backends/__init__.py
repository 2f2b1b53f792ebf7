"""Implementations behind `elm_jax.apply(..., backend=...)`.

* `linear` -- diagonal linear recurrences (traces; the parallel ELM's memory), by
  `lax.scan` or `lax.associative_scan`.
* `hoisted` -- the sequential memory core with everything else hoisted out of the loop
  and a custom backward.
* `deer` -- experimental exact parallel evaluation by Newton iterations
  (`DeerOptions`, `deer_memory`, `deer_apply`).
"""

from .deer import DeerInfo, DeerNotConvergedError, DeerOptions, deer_apply, deer_memory

__all__ = ["DeerInfo", "DeerNotConvergedError", "DeerOptions", "deer_apply", "deer_memory"]
