"""The ``elm-jax`` command line: ``convert``, ``predict``, ``demo``.

Run ``elm-jax -h`` or ``elm-jax COMMAND -h`` for the options of each command.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any

from .fileio import UnverifiedFilesWarning, atomic_write, atomic_write_text, strict_json
from .train.lock import WorkdirLocked

#: Modules that add subcommands: each defines ``register(subparsers)``, which adds its
#: parsers with ``set_defaults(func=...)``; a func returns the exit code.
COMMAND_MODULES = ("elm_jax.train.cli", "elm_jax.tasks.neuronio.cli")
#: Errors that are the user's (a bad argument, file or setting, a busy work directory):
#: one line on stderr and exit code 2, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, WorkdirLocked)
#: OSError numbers of the disk (full, read-only, no permission, over quota): also one
#: line and exit code 2.
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


def _cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoints.convert import load_torch_checkpoint
    from .checkpoints.model_dir import save_model
    from .params import count_params

    config, params = load_torch_checkpoint(args.torch_checkpoint, args.config)
    save_model(args.out, config, params, overwrite=args.overwrite,
               extra={"source": str(args.torch_checkpoint)})
    print(f"converted {args.torch_checkpoint} -> {args.out} "
          f"(variant={config.variant}, d_m={config.num_memory}, "
          f"{count_params(config)} trained parameters)")
    return 0


def _load_x(path: str, num_input: int):
    import numpy as np

    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"input file {path} does not exist") from None
    except (ValueError, OSError) as err:
        raise ValueError(f"input file {path} is not a readable .npy array: {err}") from None
    if isinstance(x, np.lib.npyio.NpzFile):
        names = list(x.files)
        x.close()
        raise ValueError(f"input file {path} is an .npz archive (arrays {names}); --input "
                         f"takes one .npy array, e.g. np.save('x.npy', np.load('{path}')"
                         f"['{names[0] if names else 'x'}'])")
    if x.ndim != 3 or x.shape[-1] != num_input:
        raise ValueError(f"input {path}: expected shape (batch, time, num_input={num_input}),"
                         f" got {x.shape} (for one sequence save x[None])")
    if 0 in x.shape[:2]:
        raise ValueError(f"input {path} has shape {x.shape}: expected at least one sequence "
                         f"and one time step")
    return x


def _check_finite(x, path: str, refuse: bool) -> None:
    """NaN/inf inputs propagate (through the memory) to every later output of their
    sequence: refuse them (``--check-finite``) or warn."""
    import numpy as np

    bad = ~np.isfinite(x)
    if not bad.any():
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    text = f"input {path} has {int(bad.sum())} NaN/inf entries (the first at index {first})"
    if refuse:
        raise ValueError(f"{text}; --check-finite refuses such inputs")
    print(f"elm-jax predict: warning: {text}: they propagate to the later outputs of their "
          f"sequences (--check-finite refuses such inputs)", file=sys.stderr)


def _with_suffix(path: str, suffix: str) -> Path:
    """`path` as NumPy saves it (``np.save`` / ``np.savez`` add a missing suffix)."""
    path = Path(path)
    return path if path.name.endswith(suffix) else path.with_name(path.name + suffix)


def _require_elm(config: Any, checkpoint: str, command: str) -> None:
    from .models import describe_model, model_kind

    if model_kind(config) != "elm":
        raise ValueError(f"elm-jax {command} shows an ELM's memory states; {checkpoint} holds "
                         f"an {describe_model(config)} (evaluate it with elm-jax eval)")


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .apply import apply
    from .checkpoints.model_dir import load_model

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    output = _with_suffix(args.output, ".npy")
    states_path = _with_suffix(args.states, ".npz") if args.states else None
    config, params = load_model(args.checkpoint)
    _require_elm(config, args.checkpoint, "predict")
    x = _load_x(args.input, config.num_input)
    _check_finite(x, args.input, refuse=args.check_finite)
    ys, memories = [], []
    for start in range(0, x.shape[0], args.batch_size):
        y, states = apply(params, x[start:start + args.batch_size], config,
                          return_states=True)
        ys.append(np.asarray(y))
        memories.append(np.asarray(states["memory"]))
    y = np.concatenate(ys)
    atomic_write(output, lambda f: np.save(f, y))
    written = [f"{output}: y {y.shape}"]
    if states_path is not None:
        memory = np.concatenate(memories)
        atomic_write(states_path, lambda f: np.savez(f, memory=memory))
        written.append(f"{states_path}: memory {memory.shape}")
    print("wrote " + "; ".join(written))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from .apply import apply
    from .checkpoints.model_dir import load_model
    from .config import ELMConfig
    from .params import count_params, init_params
    from .plots import plot_run
    from .tasks.neuronio.synthetic_input import neuronio_like_spikes

    if args.checkpoint:
        config, params = load_model(args.checkpoint)
        _require_elm(config, args.checkpoint, "demo")
        source = f"checkpoint {args.checkpoint}"
    else:
        config = ELMConfig.preset(args.preset)
        params = init_params(jax.random.key(args.seed), config)
        source = f"preset {args.preset}, random init (seed {args.seed})"
    x = neuronio_like_spikes(args.seed, 1, args.time, config.num_input)
    y, states = apply(params, x, config, return_states=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "demo_run.npz", x=x, y=np.asarray(y), memory=np.asarray(states["memory"]),
             branch_traces=np.asarray(states["branch_traces"]))
    plot_run(out / "demo_run.png", x[0], np.asarray(y[0]), np.asarray(states["memory"][0]),
             title=f"ELM ({config.variant}, d_m={config.num_memory}, "
                   f"{count_params(config)} params) - {source}")
    summary = {"source": source, "time_steps": args.time, "y_shape": list(y.shape),
               "y_finite": bool(np.isfinite(np.asarray(y)).all()),
               "files": [str(out / "demo_run.png"), str(out / "demo_run.npz")]}
    atomic_write_text(out / "demo_summary.json", strict_json(summary, indent=1))
    print(strict_json(summary, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elm-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a published PyTorch checkpoint (no torch needed)")
    p.add_argument("--torch-checkpoint", required=True, help="reference state dict (.pt)")
    p.add_argument("--config", required=True, help="reference model_config.json")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("predict", help="run a model directory over inputs from a .npy file")
    p.add_argument("--checkpoint", required=True, help="model directory (from convert/train)")
    p.add_argument("--input", required=True, help=".npy array (batch, time, num_input)")
    p.add_argument("--output", required=True, help=".npy file for y (batch, time, num_output)")
    p.add_argument("--states", help="optional .npz file for the memory trajectory")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--check-finite", action="store_true",
                   help="refuse inputs holding NaN or inf (default: a warning; they "
                        "propagate to the later outputs of their sequences)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("demo", help="run a model over NeuronIO-like input and plot it")
    p.add_argument("--preset", default="neuronio_branch_dm15",
                   help="ELMConfig preset when no --checkpoint is given")
    p.add_argument("--checkpoint", help="model directory to run instead of a preset")
    p.add_argument("--time", type=int, default=2000, help="time steps (ms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="demo", help="output directory")
    p.set_defaults(func=_cmd_demo)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)

    p = sub.add_parser("bench", help="moved: the benchmarks live in the repository's "
                                     "benchmarks/ folder (python -m benchmarks)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench_moved)
    return parser


def _cmd_bench_moved(args: argparse.Namespace) -> int:
    print("elm-jax bench: the benchmarks are not part of the installed package any more; "
          "from a clone of the repository run: python -m benchmarks --help", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``elm-jax`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except USER_ERRORS as err:
            print(f"elm-jax {args.command}: error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            if err.errno not in DISK_ERRNOS:
                raise
            # a full or read-only disk, a denied permission: one line, what was written
            # before stays intact (files are replaced atomically)
            print(f"elm-jax {args.command}: error: {err.strerror}: "
                  f"{err.filename or ''}".rstrip(": "), file=sys.stderr)
            return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings (an unverified model directory, ...) as one line on stderr."""
    if issubclass(category, UnverifiedFilesWarning):
        print(f"elm-jax: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line),
              file=sys.stderr, end="")


if __name__ == "__main__":
    sys.exit(main())
