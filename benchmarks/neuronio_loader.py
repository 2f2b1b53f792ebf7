"""Throughput of the NeuronIO data loader (`elm_jax.tasks.neuronio.WindowSampler`).

Times `num_batches` batches of ``WindowSampler.iterate`` (background thread,
`prefetch` batches ahead; files loaded on the way included) from three sources:

* ``memory``: the files already loaded (`NeuronIOData`), i.e. windows cut from arrays;
* ``cache``: the files' `load_file` cache (built first with `prepare_cache`, not timed);
* ``pickle``: straight from the NeuronIO pickles (unpickling dominates);

(``cache`` and ``pickle`` keep one file in memory, so with several files every file
visit loads one; with a single file only the first visit does),

for each ``--input-formats`` (``dense`` int8 windows, ``events`` `SpikeEvents`).
Constructing a sampler (for ``events`` it scans every file for the window capacity) is
timed separately as ``setup_s``.  The data is ``--data`` (a NeuronIO file or folder) or,
without it, teacher files generated with `elm_jax.tasks.neuronio.teacher` into a
temporary folder (``--teacher-dir`` keeps them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from . import common

NAME = "neuronio_loader"
SOURCES = ("memory", "cache", "pickle")


def loader_throughput(sampler: Any, num_batches: int = 50, *, start: int = 0,
                      prefetch: int = 8) -> dict[str, float]:
    """Time `num_batches` batches of ``sampler.iterate`` (a `WindowSampler`; files loaded
    on the way included).

    Returns: ``{"batches_per_s", "windows_per_s", "seconds", "num_batches"}``.
    """
    t0 = time.perf_counter()
    count = 0
    for _ in sampler.iterate(start, start + num_batches, prefetch=prefetch):
        count += 1
    seconds = time.perf_counter() - t0
    return {"batches_per_s": count / seconds, "windows_per_s": count * sampler.batch_size / seconds,
            "seconds": seconds, "num_batches": count}


def _data_files(args: argparse.Namespace, scratch: Path) -> tuple[list[Path], dict[str, Any]]:
    """The NeuronIO files to read, and how they were obtained."""
    from elm_jax.tasks import neuronio as nio
    from elm_jax.tasks.neuronio import teacher

    if args.data:
        split = None if args.split == "all" else args.split
        return nio.find_files(args.data, split), {"data": str(args.data), "split": args.split}
    folder = Path(args.teacher_dir) if args.teacher_dir else scratch / "teacher"
    start = time.perf_counter()
    files = teacher.generate_dataset(
        folder, files_per_split={"train": args.teacher_files}, sims_per_file=args.teacher_sims,
        duration_ms=args.teacher_duration_ms, seed=args.seed)["train"]
    return files, {"teacher_dir": str(folder), "teacher_files": args.teacher_files,
                   "teacher_sims": args.teacher_sims,
                   "teacher_duration_ms": args.teacher_duration_ms,
                   "generate_s": time.perf_counter() - start}


def _sampler_sources(source: str, files: list[Path], cache_dir: Path) -> tuple[list, Any]:
    """(sources, cache_dir) of a `WindowSampler` reading `files` from `source`."""
    from elm_jax.tasks import neuronio as nio

    if source == "memory":
        return [nio.load_file(f, cache_dir=cache_dir) for f in files], None
    return files, (cache_dir if source == "cache" else None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from elm_jax.tasks import neuronio as nio

    info = common.machine_info()
    common.print_machine(info)
    rows = []
    with tempfile.TemporaryDirectory(prefix="neuronio_loader_") as tmp:
        files, data = _data_files(args, Path(tmp))
        cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"
        if {"memory", "cache"} & set(args.sources):
            nio.prepare_cache(files, cache_dir, workers=args.workers)
        for source in args.sources:
            for input_format in args.input_formats:
                row: dict[str, Any] = {"source": source, "input_format": input_format}
                start = time.perf_counter()
                sources, sampler_cache = _sampler_sources(source, files, cache_dir)
                sampler = nio.WindowSampler(sources, seed=args.seed, batch_size=args.batch_size,
                                            window=args.window, cache_dir=sampler_cache,
                                            max_files_in_memory=1, input_format=input_format)
                row["setup_s"] = time.perf_counter() - start
                row["batches_per_file"] = sampler.batches_per_file
                row.update(loader_throughput(sampler, args.num_batches, prefetch=args.prefetch))
                row["tokens_per_s"] = row["windows_per_s"] * args.window
                rows.append(row)
                print(f"loader: {source:6s} {input_format:6s} {row['batches_per_s']:8.1f} "
                      f"batches/s ({row['windows_per_s']:,.0f} windows/s; setup "
                      f"{row['setup_s']:.2f} s)", flush=True)
    info["load_average_end"] = common.load_average()
    setup = {"files": len(files), "batch_size": args.batch_size, "window": args.window,
             "num_batches": args.num_batches, "prefetch": args.prefetch, **data}
    payload = {"benchmark": NAME, "command": args.command_str, "machine": info,
               "quick": bool(args.quick), "setup": setup, "rows": rows}
    md = [common.header_md("NeuronIO data-loader throughput", info, args.command_str),
          f"`WindowSampler.iterate` over {len(files)} file(s), batch {args.batch_size} x "
          f"{args.window} ms, {args.num_batches} batches, prefetch {args.prefetch}.\n",
          common.md_table([{**r, "batches_per_s": f"{r['batches_per_s']:.1f}",
                            "windows_per_s": f"{r['windows_per_s']:,.0f}",
                            "tokens_per_s": common.si(r["tokens_per_s"]),
                            "setup_s": f"{r['setup_s']:.2f} s"} for r in rows],
                          [("source", "source"), ("input_format", "input"),
                           ("batches_per_s", "batches/s"), ("windows_per_s", "windows/s"),
                           ("tokens_per_s", "tokens/s"), ("setup_s", "sampler setup"),
                           ("batches_per_file", "batches per file visit")])]
    payload["files"] = common.write_outputs(args.out, NAME, payload, "\n".join(md))
    return payload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="NeuronIO file or folder (default: generate teacher files)")
    p.add_argument("--split", default="train", choices=["train", "valid", "test", "all"],
                   help="which files of --data")
    p.add_argument("--teacher-dir", help="where to generate the teacher files (kept); "
                                         "default a temporary folder")
    p.add_argument("--teacher-files", type=int, default=2)
    p.add_argument("--teacher-sims", type=int, default=8, help="simulations per file")
    p.add_argument("--teacher-duration-ms", type=int, default=6000)
    p.add_argument("--cache-dir", help="load_file cache folder (default: temporary)")
    p.add_argument("--workers", type=int, default=None, help="prepare_cache processes")
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    p.add_argument("--input-formats", nargs="+", default=["dense", "events"],
                   choices=["dense", "events"])
    p.add_argument("--num-batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--window", type=int, default=500, help="window length (ms)")
    p.add_argument("--prefetch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)


def quick_overrides(args: argparse.Namespace) -> None:
    args.teacher_files, args.teacher_sims, args.teacher_duration_ms = 1, 2, 1500
    args.num_batches, args.workers = 4, 1
