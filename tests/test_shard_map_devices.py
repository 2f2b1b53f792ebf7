"""`apply` inside `jax.shard_map` on a real 4-device mesh (forced host devices, in a
subprocess): per-shard outputs and the gradients of replicated parameters, summed over
the shards (through the custom backward too), equal the 1-device computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import TEST_XLA_FLAGS

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import json
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh
    import elm_jax
    from helpers import make_config, random_params, sharded_outputs_and_grads, sin_loss

    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    config = make_config("random", "branch_elm", 1, "silu")
    params = random_params(config, seed=21)
    x = np.random.default_rng(22).integers(-1, 2, size=(8, 23, config.num_input)).astype(
        np.float64)
    out = {}
    for backend in sys.argv[1].split(","):
        for events in (False, True):
            xs = elm_jax.SpikeEvents.from_dense(x, dtype=np.float64) if events else jnp.asarray(x)

            def f(p, xb):
                return elm_jax.apply(p, xb, config, backend=backend)

            loss = sin_loss(f)
            y, grads = sharded_outputs_and_grads(f, params, xs, mesh)
            want_y = elm_jax.apply(params, xs, config, backend=backend)
            want_g = jax.grad(loss)(params, xs)
            dg = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                     zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want_g)))
            gmax = max(float(jnp.max(jnp.abs(b))) for b in jax.tree_util.tree_leaves(want_g))
            out[f"{backend}/{'events' if events else 'dense'}"] = {
                "y": float(jnp.max(jnp.abs(y - want_y))), "grad": dg, "grad_scale": gmax,
                "shards": len(y.sharding.device_set)}
    print("RESULT " + json.dumps(out))
""")


def _run(backends: tuple[str, ...]) -> None:
    env = {**os.environ,
           "XLA_FLAGS": f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(
               [str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(backends)], env=env, capture_output=True,
                            text=True, timeout=600, cwd=TESTS)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    cases = json.loads(line[len("RESULT "):])
    assert len(cases) == 2 * len(backends)
    for name, case in cases.items():
        assert case["shards"] == 4, (name, case)
        assert case["y"] < 1e-12, (name, case)
        # gradients are sums over 4 shards: equal to the 1-device gradient to rounding
        assert case["grad_scale"] > 1e-3 and case["grad"] < 1e-10, (name, case)


def test_four_device_shard_map_equals_one_device():
    # CI: the hoisted backend (custom backward); the slow variant adds the plain scan
    # and the associative scan
    _run(("hoisted",))


@pytest.mark.slow
def test_four_device_shard_map_equals_one_device_every_backend():
    _run(("scan", "hoisted", "associative"))
