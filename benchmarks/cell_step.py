"""Step cost of ``nn.RNN(ELMCell)`` on a released NeuronIO model, per-step prepare vs
constants prepared once per sequence (``python benchmarks/cell_step.py``).

Variants, all timed in this one process on the same parameters and input:

* ``cell_step_prepare`` -- the cell before the prepare/step_prepared split: every step
  calls ``elm_jax.step`` (parameter checks, routing-matrix scatter, exp/sigmoid per
  step), kept here only as the baseline.
* ``ELMCell`` -- the library's cell in ``nn.RNN``.
* ``scan_prepared_once`` -- ``elm_jax.prepare`` once, then ``lax.scan`` over
  ``elm_jax.step_prepared`` (what a cell with prepared constants would run).

It also reports whether the routing-matrix scatter sits inside the compiled forward
loop (XLA's loop-invariant code motion hoists it when it does not).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import elm_jax


class _StepPrepareCell(elm_jax.ELMCell):
    """The per-step-prepare cell (elm_jax.step in every call): the baseline."""

    @nn.compact
    def __call__(self, carry, inputs):
        params = self.param("elm", lambda key: elm_jax.init_params(key, self.config,
                                                                   self.param_dtype))
        return elm_jax.step(params, carry, inputs, self.config)


def _rnn_fn(cell_cls, config):
    rnn = nn.RNN(cell_cls(config))
    return lambda p, x: rnn.apply({"params": {"cell": {"elm": p}}}, x)


def _prepared_fn(config):
    def run(p, x):
        dyn = elm_jax.prepare(p, config)
        state = elm_jax.initial_state(config, (x.shape[0],), x.dtype)

        def body(s, x_t):
            return elm_jax.step_prepared(dyn, s, x_t, config)

        return jnp.swapaxes(jax.lax.scan(body, state, jnp.swapaxes(x, 0, 1))[1], 0, 1)
    return run


def _median_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _scatter_in_loop(fn, args) -> bool:
    """Whether a scatter is reached from a while-loop body of the compiled forward
    (following the computations each body calls)."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    blocks = {block.split(" ", 1)[0].lstrip("%"): block
              for block in re.split(r"\n(?=\S)", text)}
    refs = r"(?:body|calls|to_apply|condition|branch_computations)=\{?%?([\w.\-]+)"
    todo, seen = set(re.findall(r"body=%?([\w.\-]+)", text)), set()
    while todo:
        name = todo.pop()
        seen.add(name)
        block = blocks.get(name, "")
        if "scatter(" in block:
            return True
        todo |= set(re.findall(refs, block)) - seen
    return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="neuronio_branch_dm15")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv=None) -> int:
    measure(build_parser().parse_args(argv))
    return 0


def measure(args: argparse.Namespace) -> dict:
    """Time every variant; print and return the result."""
    config = elm_jax.PRESETS[args.preset]
    params = elm_jax.init_params(jax.random.key(0), config)
    x = jnp.asarray(np.random.default_rng(0).normal(
        size=(args.batch, args.steps, config.num_input)).astype(np.float32))
    variants = {"cell_step_prepare": _rnn_fn(_StepPrepareCell, config),
                "ELMCell": _rnn_fn(elm_jax.ELMCell, config),
                "scan_prepared_once": _prepared_fn(config)}
    reference = np.asarray(jax.jit(variants["cell_step_prepare"])(params, x))
    rows = {}
    for name, fn in variants.items():
        np.testing.assert_allclose(np.asarray(jax.jit(fn)(params, x)), reference,
                                   rtol=1e-5, atol=1e-5)
        grad = jax.jit(jax.grad(lambda p, x, fn=fn: jnp.sum(fn(p, x) ** 2)))
        fwd_ms = _median_ms(jax.jit(fn), (params, x), args.repeats)
        grad_ms = _median_ms(grad, (params, x), args.repeats)
        rows[name] = {"forward_ms_per_step": fwd_ms / args.steps,
                      "forward_grad_ms_per_step": grad_ms / args.steps,
                      "scatter_in_forward_loop": _scatter_in_loop(fn, (params, x))}
    result = {"preset": args.preset, "batch": args.batch, "steps": args.steps,
              "platform": jax.default_backend(), "jax": jax.__version__,
              "date": datetime.date.today().isoformat(), "variants": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.preset}, batch {args.batch}, T = {args.steps}, "
              f"{result['platform']}, {result['date']} (ms per step, median of "
              f"{args.repeats})")
        for name, row in rows.items():
            print(f"  {name:20s} forward {row['forward_ms_per_step']:.4f}  forward+grad "
                  f"{row['forward_grad_ms_per_step']:.4f}  scatter in loop: "
                  f"{row['scatter_in_forward_loop']}")
    return result


if __name__ == "__main__":
    main()
