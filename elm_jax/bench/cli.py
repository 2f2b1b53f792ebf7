"""``elm-jax bench {throughput,neuronio,memory,matmul,all,gpu}``.

Each subcommand writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` under ``--out``
(default ``benchmarks/results``) and prints the machine and library versions.
``--quick`` runs a tiny configuration in seconds (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Callable

from .common import DEFAULT_OUT

SUBCOMMANDS = ("throughput", "neuronio", "memory", "matmul", "all", "gpu")


def _module(name: str):
    import importlib

    return importlib.import_module(f"elm_jax.bench.{name}")


def _describe(args: argparse.Namespace, sub: str) -> str:
    """The effective command line (every option with its value)."""
    parts = ["elm-jax", "bench", sub]
    for key, value in sorted(vars(args).items()):
        if key in ("func", "command", "bench_command", "command_str") or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key == "torch":
                parts.append(flag if value else "--no-torch")
            elif value:
                parts.append(flag)
        elif isinstance(value, (list, tuple)):
            if not value:
                continue
            parts.append(flag + (" " + " ".join(shlex.quote(str(v)) for v in value)
                                 if value else ""))
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _runner(sub: str, module_name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        module = _module(module_name)
        if args.quick and hasattr(module, "quick_overrides"):
            module.quick_overrides(args)
        args.command_str = _describe(args, sub)
        start = time.perf_counter()
        module.run(args)
        print(f"elm-jax bench {sub}: done in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
        return 0

    return run


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="tiny configuration that runs in seconds (smoke test)")
    p.add_argument("--out", default=DEFAULT_OUT, help="results folder")


def register(subparsers) -> None:
    """Add ``bench`` and its subcommands to the ``elm-jax`` parser."""
    bench = subparsers.add_parser(
        "bench", help="benchmarks (throughput, NeuronIO step, memory, matmul peak)",
        description=__doc__.splitlines()[0])
    sub = bench.add_subparsers(dest="bench_command", required=True)
    specs = {
        "throughput": ("throughput", "tokens/s forward and training per backend, T, d_m, "
                                     "batch; the d_m=150 T=16k training FLOP fraction"),
        "neuronio": ("neuronio", "NeuronIO training step: JAX ELM vs the PyTorch per-step "
                                 "design vs Flax LSTM"),
        "memory": ("memory", "compiled temporary memory of a training step by remat mode "
                             "and T"),
        "matmul": ("matmul", "float32 matmul FLOP rate of this machine"),
        "all": ("suite", "everything, in priority order, plus summary.md"),
        "gpu": ("gpu", "the prepared GPU check (JSON on stdout; for an H100 session)"),
    }
    for name, (module_name, help_text) in specs.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        _module(module_name).add_arguments(p)
        p.set_defaults(func=_runner(name, module_name))


def main(argv: list[str] | None = None) -> int:
    """``python -m elm_jax.bench.cli SUB ...`` (same as ``elm-jax bench SUB ...``)."""
    parser = argparse.ArgumentParser(prog="elm-jax")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
