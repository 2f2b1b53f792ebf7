"""The JAX internals elm_jax relies on (elm_jax/jax_compat.py) still exist and mean
what we use them for: a JAX release that renames them fails here, loudly."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from elm_jax.jax_compat import jit_cache_size, varying_axes


def test_jit_cache_size_counts_compilations():
    f = jax.jit(lambda a: a * 2)
    assert jit_cache_size(f) == 0
    f(jnp.ones(3))
    f(jnp.ones(3) * 5)
    assert jit_cache_size(f) == 1
    f(jnp.ones(4))
    assert jit_cache_size(f) == 2


def test_varying_axes_inside_and_outside_shard_map():
    assert varying_axes(jnp.ones(3)) == frozenset()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    seen = {}

    def body(a):
        seen["data"] = varying_axes(a)
        seen["const"] = varying_axes(jnp.zeros(3))
        return a

    jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("data"), out_specs=P("data")))(
        jnp.ones((2, 3)))
    assert seen["data"] == frozenset({"data"}), seen
    assert seen["const"] == frozenset(), seen
