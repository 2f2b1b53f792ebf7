"""``python -m benchmarks {throughput,neuronio,shd,neuronio-eval,memory,matmul,lra,all,gpu,
pathfinder-probe,loader,cell}``.

Run from the repository root (the benchmarks are not part of the installed package).
Each subcommand writes ``NAME.json``, ``NAME.md`` and (most) ``NAME.png`` under ``--out``
(default ``benchmarks/results``) and prints the machine and library versions.
``--quick`` runs a tiny configuration in seconds (a smoke test, not a measurement).
``cell`` hands its arguments to ``benchmarks/cell_step.py`` (its own options).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from typing import Callable

from .common import DEFAULT_OUT

PROG = "python -m benchmarks"

#: subcommand -> (module in this package, help)
SPECS = {
    "throughput": ("throughput", "tokens/s forward and training per backend, T, d_m, "
                                 "batch; the d_m=150 T=16k training FLOP fraction"),
    "neuronio": ("neuronio", "NeuronIO training step: JAX ELM vs the PyTorch per-step "
                             "design vs Flax LSTM"),
    "shd": ("shd", "SHD training step (the paper's ELM, 2-ms bins): JAX vs the PyTorch "
                   "per-step design"),
    "neuronio-eval": ("neuronio_eval", "time of the published NeuronIO evaluation of "
                                       "best_elm_neuron on the real simulations, before "
                                       "and after events input"),
    "memory": ("memory", "compiled temporary memory of a training step by remat mode "
                         "and T"),
    "matmul": ("matmul", "float32 matmul FLOP rate of this machine"),
    "lra": ("lra", "LRA: Path-X training step ELM vs Chrono-LSTM at T = 16,384, its "
                   "memory at the paper's batch, ListOps/Pathfinder input pipelines"),
    "all": ("suite", "everything above, in priority order, plus summary.md"),
    "gpu": ("gpu", "the prepared GPU check (JSON on stdout; for a GPU session)"),
    "pathfinder-probe": ("pathfinder_probe", "is generated Pathfinder-32 learnable: label "
                                             "balance, marker-distance shortcut, "
                                             "connectivity oracle, small ELM / LSTM "
                                             "trained on dots, no-distractor and "
                                             "standard images"),
    "loader": ("neuronio_loader", "NeuronIO data-loader throughput (WindowSampler "
                                  "batches/s from memory, cache files and pickles)"),
}
CELL = ("cell", "nn.RNN(ELMCell) step benchmark (benchmarks/cell_step.py; "
                "its own options, see: python -m benchmarks cell --help)")
SUBCOMMANDS = (*SPECS, CELL[0])


def _module(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def _describe(args: argparse.Namespace, sub: str) -> str:
    """The effective command line (every option with its value)."""
    parts = [PROG, sub]
    for key, value in sorted(vars(args).items()):
        if key in ("func", "command", "command_str") or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key == "torch":
                parts.append(flag if value else "--no-torch")
            elif value:
                parts.append(flag)
        elif isinstance(value, (list, tuple)):
            if value:
                parts.append(flag + " " + " ".join(shlex.quote(str(v)) for v in value))
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
        print(f"{PROG} {sub}: done in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
        return 0

    return run


def _run_cell(argv: list[str]) -> int:
    """``python -m benchmarks cell ...``: `benchmarks.cell_step.main(argv)`."""
    try:
        cell_step = _module("cell_step")
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.cell_step":
            raise
        print(f"{PROG} cell: benchmarks/cell_step.py is missing in this checkout",
              file=sys.stderr)
        return 2
    return int(cell_step.main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="BENCHMARK")
    for name, (module_name, help_text) in SPECS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--quick", action="store_true",
                       help="tiny configuration that runs in seconds (smoke test)")
        p.add_argument("--out", default=DEFAULT_OUT, help="results folder")
        _module(module_name).add_arguments(p)
        p.set_defaults(func=_runner(name, module_name))
    # listed for --help only: `main` passes everything after ``cell`` to cell_step.main
    sub.add_parser(CELL[0], help=CELL[1], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks SUB ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CELL[0]]:
        return _run_cell(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)
