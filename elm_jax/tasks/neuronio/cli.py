"""``elm-jax neuronio-teacher`` and ``elm-jax neuronio-eval`` (registered by elm_jax.cli)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _files_per_split(text: str) -> int | dict[str, int]:
    """``"2"`` (each split) or ``"train=4,valid=1,test=1"``."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    counts: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"--files-per-split {text!r}: expected N or train=N,valid=N,test=N")
        counts[key.strip()] = int(value)
    return counts


def _cmd_teacher(args: argparse.Namespace) -> int:
    from .reader import find_files
    from .teacher import generate_dataset

    start = time.perf_counter()
    written = generate_dataset(args.out, kind=args.kind, files_per_split=args.files_per_split,
                               sims_per_file=args.sims_per_file, duration_ms=args.duration_ms,
                               seed=args.seed, teacher_seed=args.teacher_seed,
                               with_dvt=args.dvt)
    seconds = time.perf_counter() - start
    summary = {split: [str(p) for p in paths] for split, paths in written.items()}
    total = sum(len(p) for p in written.values()) * args.sims_per_file
    print(json.dumps(summary, indent=1))
    print(f"wrote {total} {args.kind} teacher simulations of {args.duration_ms} ms under "
          f"{args.out} in {seconds:.1f} s")
    find_files(args.out)  # the written layout must be discoverable
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ...checkpoints.model_dir import load_model
    from ...models import describe_model
    from .evaluation import ModelPredictor, evaluate_neuronio, write_report
    from .reader import find_files, load_file

    config, params = load_model(args.checkpoint)
    files = find_files(args.data_dir, args.split)
    data = [load_file(f, cache_dir=args.cache_dir) for f in files]
    start = time.perf_counter()
    metrics = evaluate_neuronio(
        ModelPredictor(config, params), data, window=args.window, burn_in=args.burn_in,
        batch_size=args.batch_size, plot_dir=args.plots,
        plot_title=f"{Path(args.checkpoint).name} ({describe_model(config)})")
    seconds = time.perf_counter() - start
    extra = {"evaluation": {"checkpoint": str(args.checkpoint), "files": [str(f) for f in files],
                            "window": args.window, "burn_in": args.burn_in,
                            "ignore_time_at_start_ms": 500, "spike_count_range": [0, 24],
                            "seconds": round(seconds, 2)}}
    write_report(args.out, metrics, extra)
    print(json.dumps(metrics, indent=1))
    print(f"wrote {args.out}" + (f" and plots in {args.plots}" if args.plots else ""))
    return 0


def register(subparsers) -> None:
    """Add the NeuronIO subcommands to the ``elm-jax`` parser."""
    p = subparsers.add_parser(
        "neuronio-teacher",
        help="write a NeuronIO-format dataset simulated by a built-in teacher neuron")
    p.add_argument("--out", required=True, help="dataset folder (full_ergodic_train_batch_k/, "
                                                "Data_test/ are created in it)")
    p.add_argument("--kind", default="dendritic", choices=("dendritic", "lif", "alif"),
                   help="teacher neuron (default dendritic: NMDA-like branches -> adaptive IF)")
    p.add_argument("--files-per-split", type=_files_per_split, default=1,
                   help="files per split: N, or train=N,valid=N,test=N (default 1 each)")
    p.add_argument("--sims-per-file", type=int, default=8, help="simulations per file")
    p.add_argument("--duration-ms", type=int, default=6000, help="simulation length (ms)")
    p.add_argument("--seed", type=int, default=0, help="input (data) seed")
    p.add_argument("--teacher-seed", type=int, default=0, help="seed of the teacher's weights")
    p.add_argument("--dvt", action="store_true",
                   help="also store per-segment voltages (dendriticVoltagesLowRes)")
    p.set_defaults(func=_cmd_teacher)

    p = subparsers.add_parser(
        "neuronio-eval", help="the published NeuronIO evaluation of a model directory")
    p.add_argument("--checkpoint", required=True,
                   help="elm_jax model directory (e.g. from `elm-jax convert`)")
    p.add_argument("--data-dir", required=True, help="NeuronIO file or folder")
    p.add_argument("--split", choices=("train", "valid", "test"),
                   help="only this split's folders (default: every file under --data-dir)")
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--plots", help="folder for PNG plots")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--burn-in", type=int, default=150)
    p.add_argument("--cache-dir", help="optional .npz cache folder for parsed files")
    p.set_defaults(func=_cmd_eval)
