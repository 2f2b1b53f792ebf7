"""Temporary memory of one training step by remat mode / backend and sequence length.

For each setting the jitted Adam step (value_and_grad of the mean squared output + the
update, params and optimizer state donated) of the LRA Path-X ELM is compiled for
abstract inputs (nothing runs) and XLA's buffer assignment is read from
``compiled.memory_analysis()``: ``temp_size_in_bytes`` is the scratch memory the step
needs beyond its arguments and outputs (which are listed too).  On CPU this is exact for
the compiled program; a GPU's buffer assignment differs somewhat but the ratios between
remat modes are structural.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import common

NAME = "memory"

SETTINGS = {
    "scan, remat none": {"backend": "scan", "remat": "none"},
    "scan, remat step": {"backend": "scan", "remat": "step"},
    "scan, remat chunk": {"backend": "scan", "remat": "chunk"},
    "hoisted (custom backward)": {"backend": "hoisted"},
    "hoisted, remat none (stored activations)": {"backend": "hoisted", "remat": "none"},
    "hoisted, autodiff backward": {"backend": "hoisted", "custom_backward": False},
    "associative": {"backend": "associative"},
}


def train_step_memory(config, batch: int, steps: int, options: dict) -> dict[str, Any]:
    """Compile the training step for abstract shapes; return its memory analysis."""
    import jax
    import jax.numpy as jnp

    from elm_jax.apply import apply
    from elm_jax.params import init_params

    params = jax.eval_shape(lambda: init_params(jax.random.key(0), config))

    def forward(p, x):
        return apply(p, x, config, **options)

    step, optimizer = common.make_train_step(forward, lambda y: (y * y).mean(), 2e-4)
    opt_state = jax.eval_shape(optimizer.init, params)
    x = jax.ShapeDtypeStruct((batch, steps, config.num_input), jnp.float32)
    compiled, seconds = common.compile_timed(step, params, opt_state, x)
    mem = compiled.memory_analysis()
    return {"temp_bytes": int(mem.temp_size_in_bytes),
            "argument_bytes": int(mem.argument_size_in_bytes),
            "output_bytes": int(mem.output_size_in_bytes),
            "alias_bytes": int(getattr(mem, "alias_size_in_bytes", 0)),
            "compile_s": seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from elm_jax.apply import default_chunk_size
    from .throughput import lra_config

    info = common.machine_info()
    common.print_machine(info)
    config = lra_config(args.dm)
    settings = {k: SETTINGS[k] for k in args.settings}
    rows = []
    for steps in args.T:
        for name, options in settings.items():
            row = {"T": steps, "setting": name, "options": options}
            try:
                row.update(train_step_memory(config, args.batch, steps, options))
            except Exception as err:  # report, do not hide
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            rows.append(row)
            print(f"memory: T={steps} {name:28s} " + (
                f"temp {row['temp_bytes'] / 1e6:9.1f} MB (compile {row['compile_s']:.1f} s)"
                if "temp_bytes" in row else row["error"]), flush=True)
    # the stacked memory trajectory m (T x batch x d_m float32): what any backward keeps
    floor = {steps: steps * args.batch * args.dm * 4 for steps in args.T}
    info["load_average_end"] = common.load_average()
    payload = {"benchmark": NAME, "command": args.command_str, "machine": info,
               "quick": bool(args.quick),
               "setup": {"model": "LRA Path-X ELM", "d_m": args.dm, "batch": args.batch,
                         "chunk_size": {s: default_chunk_size(s) for s in args.T},
                         "remat_auto": "chunk from T >= 2048, none below"},
               "trajectory_bytes": floor, "rows": rows}
    table = []
    for name in settings:
        entry = {"setting": name}
        for steps in args.T:
            r = next(r for r in rows if r["T"] == steps and r["setting"] == name)
            entry[str(steps)] = (f"{r['temp_bytes'] / 1e6:,.0f} MB "
                                 f"({r['temp_bytes'] / floor[steps]:.1f}x)"
                                 if "temp_bytes" in r else "error")
        table.append(entry)
    md = [common.header_md(f"Training-step temporary memory (d_m = {args.dm}, batch "
                           f"{args.batch})", info, args.command_str),
          "Compiled temporary bytes of one Adam step (XLA buffer assignment, "
          "`memory_analysis().temp_size_in_bytes`); in brackets the multiple of the "
          "memory trajectory T x batch x d_m float32. Chunk size = "
          + ", ".join(f"{default_chunk_size(s)} at T={s:,}" for s in args.T)
          + "; `remat=\"auto\"` is chunk from T = 2,048 on, none below.\n",
          common.md_table(table, [("setting", "setting")] +
                          [(str(s), f"T = {s:,}") for s in args.T])]

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name in settings:
            rs = [r for r in rows if r["setting"] == name and "temp_bytes" in r]
            ax.plot([r["T"] for r in rs], [r["temp_bytes"] / 1e6 for r in rs], "o-",
                    label=name)
        ax.plot(list(floor), [v / 1e6 for v in floor.values()], "k:",
                label="trajectory T x B x d_m")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel("temporary MB")
        ax.set_title(f"train step temp memory, d_m={args.dm}, batch {args.batch}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    payload["files"] = common.write_outputs(args.out, NAME, payload, "\n".join(md), plot)
    print("\n".join(md[2:]), flush=True)
    return payload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--dm", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))


def quick_overrides(args: argparse.Namespace) -> None:
    args.T, args.dm, args.batch = [32, 64], 4, 2
    args.settings = ["scan, remat chunk"]
