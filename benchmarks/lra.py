"""LRA: the Path-X training step (ELM vs Chrono-LSTM at T = 16,384), the per-device
memory of the paper's batch, and the ListOps / Pathfinder input pipelines.

``python -m benchmarks lra`` measures, in one run on this machine:

* ``pathx``: the training step (forward, gradient, Adam update; cross-entropy on the
  last output) of the ``pathx paper`` ELM (d_m 150, tau_s 150, 8 grey levels) and of
  the ``pathx paper_lstm`` Chrono-LSTM (hidden 150), both built from the registered
  presets, at T = 16,384 and batch ``--batch`` (default 32), timed round-robin; the ELM
  both with the task's event input and with dense one-hot input.  Reports s/step,
  tokens/s and the ELM / LSTM ratio.
* ``memory``: the compile-time memory of the same training steps (``memory_analysis``:
  temporaries, arguments, outputs) at ``--memory-batches`` (default 4 and 8), a fit
  ``bytes = a + b * batch`` and its value at the paper's batch 768 on one device
  (divide the per-example part by the number of devices for data parallelism).
* ``pipeline``: host time to build one training batch (``train_batch``: reading,
  quantising / padding, one-hot events) for ListOps (T 2000) and Pathfinder-32 at the
  paper's batch 384 and the small presets' batch 32, next to the ELM training step of
  the small presets at their batch (the ratio the pipeline must beat: >= 10x).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from . import common

NAME = "lra"


def build_train_step(run: Any, x: Any, y: Any, length: Any) -> tuple[Any, float]:
    import jax
    import optax

    from elm_jax.models import init_model, predict

    def forward(p, xb):
        return predict(p, xb, run.model, "last_step", length, **run.options.apply_kwargs())

    def loss(logits, target):
        return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()

    params = init_model(jax.random.key(0), run.model)
    return common.build_train(forward, loss, run.train.learning_rate, params, (x, y))


def _pathx_inputs(batch: int, steps: int, levels: int, fmt: str):
    import numpy as np

    from elm_jax.tasks.lra.task import categorical_input

    rng = np.random.default_rng(0)
    ids = rng.integers(0, levels, (batch, steps))
    return (categorical_input(ids, levels, fmt), rng.integers(0, 2, batch).astype(np.int32),
            np.full(batch, steps, np.int32))


def measure_pathx(args: argparse.Namespace) -> dict[str, Any]:
    from elm_jax.models import count_model_params
    from elm_jax.train.trainer import resolve_run

    steppers, entries = {}, {}
    variants = {"elm_events": ("paper", "events"), "elm_dense": ("paper", "dense"),
                "chrono_lstm": ("paper_lstm", "dense")}
    for name, (preset, fmt) in variants.items():
        _, run = resolve_run("pathx", preset, [f"train.batch_size={args.batch}",
                                               f"task.input_format={fmt}"])
        x, y, length = _pathx_inputs(args.batch, args.T, run.model.num_input, fmt)
        stepper, compile_s = build_train_step(run, x, y, length)
        steppers[name] = stepper
        entries[name] = {"preset": f"pathx {preset}", "input": fmt,
                         "num_params": count_model_params(run.model),
                         "compile_s": compile_s}
        print(f"compiled {name} in {compile_s:.1f} s", flush=True)
    stats = common.measure_interleaved(steppers, reps=args.reps, target_s=0.0)
    for name, st in stats.items():
        entries[name].update(s_per_step=st["median_s"], times_s=st["times_s"],
                             tokens_per_s=args.batch * args.T / st["median_s"],
                             other_cores=st.get("other_cores"))
    lstm = entries["chrono_lstm"]["tokens_per_s"]
    ratios = {f"{k}_vs_lstm": v["tokens_per_s"] / lstm for k, v in entries.items()
              if k != "chrono_lstm"}
    return {"T": args.T, "batch": args.batch, "steps": entries, "ratios": ratios}


def measure_memory(args: argparse.Namespace) -> dict[str, Any]:
    from elm_jax.train.trainer import resolve_run

    out = {}
    for name, preset, fmt in (("elm_dense", "paper", "dense"), ("elm_events", "paper", "events"),
                              ("chrono_lstm", "paper_lstm", "dense")):
        points = []
        for batch in args.memory_batches:
            _, run = resolve_run("pathx", preset, [f"train.batch_size={batch}",
                                                   f"task.input_format={fmt}"])
            x, y, length = _pathx_inputs(batch, args.T, run.model.num_input, fmt)
            stepper, _ = build_train_step(run, x, y, length)
            mem = stepper.compiled.memory_analysis()
            total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                     + mem.output_size_in_bytes - mem.alias_size_in_bytes)
            points.append({"batch": batch, "temp_bytes": mem.temp_size_in_bytes,
                           "argument_bytes": mem.argument_size_in_bytes,
                           "output_bytes": mem.output_size_in_bytes,
                           "alias_bytes": mem.alias_size_in_bytes, "total_bytes": total})
        (b0, t0), (b1, t1) = [(p["batch"], p["total_bytes"]) for p in points[:2]]
        slope = (t1 - t0) / (b1 - b0)
        fixed = t0 - slope * b0
        out[name] = {"points": points, "bytes_per_example": slope, "fixed_bytes": fixed,
                     "paper_batch": 768, "bytes_at_768": fixed + slope * 768}
    return out


def measure_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from elm_jax.train.trainer import resolve_run, task_data

    rows = []
    for task_name in ("listops", "pathfinder"):
        task, run = resolve_run(task_name, "small", [])
        small = task_data(task, run.task, 0)
        x_batch = small.train_batch(0, run.train.batch_size)
        stepper, _ = build_train_step(run, x_batch["x"], x_batch["y"], x_batch["length"])
        step_s = common.measure_interleaved({"s": stepper}, reps=args.reps,
                                            target_s=0.0)["s"]["median_s"]
        for batch in (run.train.batch_size, 384):
            times = []
            for i in range(args.reps + 1):
                t0 = time.perf_counter()
                small.train_batch(i, batch)
                times.append(time.perf_counter() - t0)
            prep = float(np.median(times[1:]))
            rows.append({"task": task_name, "batch": batch, "T": small.seq_len,
                         "batch_prep_s": prep, "batches_per_s": 1 / prep,
                         "small_train_step_s": step_s if batch == run.train.batch_size
                         else None,
                         "ratio_step_over_prep": (step_s / prep
                                                  if batch == run.train.batch_size else None)})
    return {"rows": rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    info, record = common.start_record(NAME, args.command_str)
    if "pipeline" in args.parts:
        record["pipeline"] = measure_pipeline(args)
    if "pathx" in args.parts:
        record["pathx"] = measure_pathx(args)
    if "memory" in args.parts:
        record["memory"] = measure_memory(args)
    md = [common.header_md("LRA: Path-X step, memory, input pipelines", info,
                           args.command_str)]
    if "pathx" in record:
        px = record["pathx"]
        md.append(f"\nPath-X training step, T = {px['T']}, batch {px['batch']}:\n")
        md.append(common.md_table(
            [{"model": k, **v} for k, v in px["steps"].items()],
            [("model", "model"), ("num_params", "params"), ("input", "input"),
             ("s_per_step", "s/step"), ("tokens_per_s", "tokens/s")]))
        md.append("\nratios (tokens/s vs the Chrono-LSTM): " + ", ".join(
            f"{k} {v:.2f}x" for k, v in px["ratios"].items()))
    if "memory" in record:
        md.append("\nPath-X training-step memory (compile-time), fit a + b * batch:\n")
        md.append(common.md_table(
            [{"model": k, **v} for k, v in record["memory"].items()],
            [("model", "model"), ("bytes_per_example", "bytes/example"),
             ("fixed_bytes", "fixed bytes"), ("bytes_at_768", "bytes at batch 768")]))
    if "pipeline" in record:
        md.append("\nInput pipelines (host time per training batch):\n")
        md.append(common.md_table(record["pipeline"]["rows"],
                                  [("task", "task"), ("batch", "batch"), ("T", "T"),
                                   ("batch_prep_s", "prep s"),
                                   ("small_train_step_s", "small step s"),
                                   ("ratio_step_over_prep", "step / prep")]))
    common.write_outputs(args.out, NAME, record, "\n".join(md))
    return record


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--T", type=int, default=16384)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--memory-batches", type=int, nargs=2, default=[4, 8])
    p.add_argument("--parts", nargs="+", default=["pipeline", "pathx", "memory"],
                   choices=["pipeline", "pathx", "memory"])


def quick_overrides(args: argparse.Namespace) -> None:
    args.T, args.batch, args.reps, args.memory_batches = 64, 2, 1, [1, 2]
    args.parts = ["pathx", "memory"]
