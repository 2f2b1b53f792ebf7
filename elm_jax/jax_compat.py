"""The few places where elm_jax reads JAX internals, kept in one module.

Each function here relies on a private or recently renamed JAX attribute.
`tests/test_jax_compat.py` checks every one against the installed JAX, so a JAX release
that renames them fails that test loudly instead of silently changing behaviour
(e.g. `varying_like` becoming a no-op inside `jax.shard_map`).
"""

from __future__ import annotations

from typing import Any

import jax


def varying_axes(a: Any) -> frozenset:
    """The manual mesh axes (inside `jax.shard_map`) that array `a` varies over.

    Empty outside `shard_map`.  Reads the abstract value's ``manual_axis_type.varying``
    (jax >= 0.9) or, on older releases, its ``vma`` set.
    """
    aval = jax.typeof(a)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.9
    if manual is not None:
        return frozenset(getattr(manual, "varying", ()))
    return frozenset(getattr(aval, "vma", ()))  # older spelling


def jit_cache_size(fn: Any) -> int:
    """How many times the `jax.jit`-wrapped `fn` has been compiled (its cache entries).

    Uses the private ``_cache_size`` of JAX's jitted functions; raises
    `NotImplementedError` naming the attribute when the installed JAX lacks it.
    """
    size = getattr(fn, "_cache_size", None)
    if size is None:
        raise NotImplementedError(
            f"jit_cache_size: {type(fn).__name__} has no _cache_size (JAX {jax.__version__} "
            f"changed its jitted-function internals; update elm_jax/jax_compat.py)")
    return int(size())
