"""The prepared GPU check: one script for a session that has an H100 (or any GPU).

Run on the device machine from the repository root (installs nothing; needs a CUDA
jax there)::

    python -m benchmarks gpu --out gpu_results          # ~5 min on an H100
    python -m benchmarks gpu --quick                    # tiny sizes, any device

It prints one JSON object on stdout (and writes ``gpu_check.json`` under ``--out``):

* ``sequential``: µs per time step and tokens/s at batch 32, T = 16,384, for the exact
  ELM (``backend`` ``scan`` and ``hoisted``, forward and training step) at d_m 15 / 150
  / 500, ``unroll`` 1 and 4 (scan forward);
* ``parallel``: the parallel ELM (``memory_feedback=False``) at T = 16,384, batch 32,
  d_m 150: ``associative`` (all associative scans) vs ``hoisted`` (sequential linear
  scans) vs ``scan`` (step loop), forward and training step, next to the exact ELM
  with ``scan``;
* ``memory``: compiled temporary bytes of the training step per setting
  (``memory_analysis``) and the device's peak bytes in use (``memory_stats``).

Every measurement is guarded: a failure is recorded with its error and the script goes
on; ``--budget`` stops starting new measurements after that many seconds.  The record
says which device ran it: numbers from a CPU run are not GPU numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import common

NAME = "gpu_check"
MEMORY_SETTINGS = {"scan, remat none": {"backend": "scan", "remat": "none"},
                   "scan, remat chunk": {"backend": "scan", "remat": "chunk"},
                   "hoisted": {"backend": "hoisted"},
                   "associative": {"backend": "associative"}}


def _device_info() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {"platform": jax.default_backend(), "devices": [d.device_kind for d in devs],
            "jax": common._version("jax"), "jaxlib": common._version("jaxlib"),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "is_gpu": jax.default_backend() in ("gpu", "cuda", "rocm")}


def _peak_bytes() -> int | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # CPU devices may not report
        return None
    return stats.get("peak_bytes_in_use")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    from .memory import train_step_memory
    from .throughput import build, lra_config

    start = time.perf_counter()
    record: dict[str, Any] = {"benchmark": NAME, "command": args.command_str,
                              "device": _device_info(), "machine": common.machine_info(),
                              "quick": bool(args.quick), "sequential": [], "parallel": [],
                              "memory": [], "skipped": []}
    steps, batch = args.T, args.batch

    def timed(section: str, label: dict[str, Any], config, options, mode) -> None:
        if time.perf_counter() - start > args.budget:
            record["skipped"].append({**label, "reason": "budget"})
            return
        entry = {**label, "options": options, "mode": mode}
        try:
            fn, compile_s = build(config, options, mode, batch, steps)
            st = common.measure_interleaved({"x": fn}, reps=args.reps, target_s=0.0)["x"]
            entry.update(compile_s=compile_s, seconds=st["median_s"], times_s=st["times_s"],
                         us_per_time_step=st["median_s"] / steps * 1e6,
                         tokens_per_s=batch * steps / st["median_s"])
        except Exception as err:
            entry["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        record[section].append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)

    for dm in args.dm:
        config = lra_config(dm)
        for backend in args.seq_backends:
            for mode in args.modes:
                timed("sequential", {"d_m": dm, "backend": backend}, config,
                      {"backend": backend}, mode)
        for unroll in args.unroll:
            timed("sequential", {"d_m": dm, "backend": "scan", "unroll": unroll}, config,
                  {"backend": "scan", "unroll": unroll}, "forward")
    parallel = lra_config(args.parallel_dm).replace(memory_feedback=False)
    exact = lra_config(args.parallel_dm)
    for backend in args.parallel_backends:
        for mode in args.modes:
            timed("parallel", {"d_m": args.parallel_dm, "model": "parallel ELM",
                               "backend": backend}, parallel, {"backend": backend}, mode)
    for mode in args.modes:
        timed("parallel", {"d_m": args.parallel_dm, "model": "exact ELM", "backend": "scan"},
              exact, {"backend": "scan"}, mode)
    for name in args.memory_settings:
        options = MEMORY_SETTINGS[name]
        if time.perf_counter() - start > args.budget:
            record["skipped"].append({"memory": name, "reason": "budget"})
            continue
        entry = {"setting": name, "d_m": args.parallel_dm, "T": steps, "batch": batch}
        try:
            entry.update(train_step_memory(exact, batch, steps, options))
        except Exception as err:
            entry["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        record["memory"].append(entry)
    record["device_peak_bytes_in_use"] = _peak_bytes()
    record["elapsed_s"] = time.perf_counter() - start
    if not record["device"]["is_gpu"]:
        record["note"] = "not a GPU run: these numbers are not GPU numbers"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(common._jsonable(record), indent=1) + "\n")
    print(json.dumps(common._jsonable(record)), flush=True)
    return record


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--T", type=int, default=16384)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dm", type=int, nargs="+", default=[15, 150, 500])
    p.add_argument("--parallel-dm", type=int, default=150)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--budget", type=float, default=360.0,
                   help="seconds after which no new measurement starts")
    p.add_argument("--seq-backends", nargs="+", default=["scan", "hoisted"],
                   choices=["scan", "hoisted", "associative"])
    p.add_argument("--parallel-backends", nargs="+", default=["associative", "hoisted", "scan"],
                   choices=["associative", "hoisted", "scan"])
    p.add_argument("--modes", nargs="+", default=["forward", "train"],
                   choices=["forward", "train"])
    p.add_argument("--unroll", type=int, nargs="*", default=[4],
                   help="extra scan-forward runs with these unroll factors")
    p.add_argument("--memory-settings", nargs="*", default=list(MEMORY_SETTINGS),
                   choices=list(MEMORY_SETTINGS))
    p.add_argument("--xla-flags", default="",
                   help="extra XLA_FLAGS, e.g. --xla_gpu_enable_command_buffer=+WHILE")


def quick_overrides(args: argparse.Namespace) -> None:
    args.T, args.batch, args.dm, args.parallel_dm, args.reps = 32, 2, [4], 4, 1
    args.seq_backends, args.parallel_backends, args.modes = ["hoisted"], ["associative"], ["train"]
    args.unroll, args.memory_settings = [], ["scan, remat chunk"]
