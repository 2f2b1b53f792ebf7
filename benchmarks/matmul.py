"""The FLOP rate this machine reaches on a large float32 matmul.

Times ``a @ b`` for square float32 matrices of a few sizes with XLA (``jax.jit``) and
with NumPy's BLAS, interleaved, and reports GFLOP/s = 2 n^3 / time.  The reference rate
("matmul peak") that the other benchmarks divide by is the best median rate over the
sizes and both libraries (the larger, i.e. the stricter, denominator).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from . import common

NAME = "matmul_peak"


def make_matmul(n: int, library: str, seed: int = 0):
    """A zero-argument callable computing one n x n x n float32 matmul."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    if library == "numpy":
        return lambda: a @ b
    import jax
    import jax.numpy as jnp

    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(lambda x, y: x @ y)
    common.block(mm(ja, jb))
    return lambda: mm(ja, jb)


def measure(sizes=(1024, 2048, 4096), libraries=("xla", "numpy"), reps: int = 5,
            target_s: float = 0.3, wait_quiet: float = 0.0) -> dict[str, Any]:
    """Interleaved timing of every (library, size); the best rate is the peak."""
    fns = {f"{lib}:{n}": make_matmul(n, lib) for lib in libraries for n in sizes}
    if wait_quiet > 0:
        common.wait_for_quiet(wait_quiet)
    stats = common.measure_interleaved(fns, reps=reps, target_s=target_s)
    rows = []
    for key, st in stats.items():
        lib, n = key.split(":")
        n = int(n)
        rows.append({"library": lib, "n": n, "median_s": st["median_s"],
                     "gflops": 2.0 * n ** 3 / st["median_s"] / 1e9,
                     "gflops_best_rep": 2.0 * n ** 3 / st["min_s"] / 1e9, "reps": st["reps"],
                     "own_cores": st["own_cores"], "other_cores": st["other_cores"]})
    best = max(rows, key=lambda r: r["gflops"])
    return {"rows": rows, "peak_gflops": best["gflops"],
            "peak_source": f"{best['library']} float32 {best['n']}^3 matmul (median)"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine_info()
    common.print_machine(info)
    sizes = (256, 512) if args.quick else tuple(args.sizes)
    result = measure(sizes=sizes, reps=2 if args.quick else args.reps,
                     target_s=0.05 if args.quick else 0.3, wait_quiet=args.wait_quiet)
    info["load_average_end"] = common.load_average()
    cores, mhz = info.get("cores_usable") or 1, info.get("cpu_mhz")
    theory = None
    if mhz and "avx512f" in info.get("cpu_flags", []):
        # 2 FMA units x 16 float32 lanes x 2 FLOPs per cycle per core (AVX-512 cores
        # with two 512-bit FMA pipes, e.g. Zen 5 / server Intel); nominal clock.
        theory = cores * 64 * mhz * 1e6 / 1e9
    payload = {"benchmark": NAME, "command": args.command_str, "machine": info,
               "quick": bool(args.quick), **result,
               "theoretical_peak_gflops_estimate": theory,
               "theoretical_rule": "cores x 64 FLOP/cycle (2 x 512-bit FMA) x reported MHz"
               if theory else None}
    md = [common.header_md("Matmul FLOP rate (float32)", info, args.command_str),
          common.md_table([{**r, "gflops": f"{r['gflops']:.1f}",
                            "own_cores": common.fmt(r["own_cores"], ".2f"),
                            "other_cores": common.fmt(r["other_cores"], ".2f"),
                            "gflops_best_rep": f"{r['gflops_best_rep']:.1f}",
                            "median_s": f"{r['median_s'] * 1e3:.2f} ms"}
                           for r in result["rows"]],
                          [("library", "library"), ("n", "n (n x n x n)"),
                           ("median_s", "median time"), ("gflops", "GFLOP/s (median)"),
                           ("gflops_best_rep", "GFLOP/s (best rep)"), ("reps", "reps"),
                           ("own_cores", "own cores"), ("other_cores", "other cores")]),
          f"\nPeak used by the other benchmarks: **{result['peak_gflops']:.1f} GFLOP/s** "
          f"({result['peak_source']})."]
    if theory:
        md.append(f"Nominal peak estimate: {theory:.0f} GFLOP/s ({payload['theoretical_rule']}).")

    def plot(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for lib in sorted({r["library"] for r in result["rows"]}):
            rs = sorted((r for r in result["rows"] if r["library"] == lib), key=lambda r: r["n"])
            ax.plot([r["n"] for r in rs], [r["gflops"] for r in rs], "o-", label=lib)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n (n x n x n float32 matmul)")
        ax.set_ylabel("GFLOP/s")
        ax.set_title("float32 matmul rate")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    payload["files"] = common.write_outputs(args.out, NAME, payload, "\n".join(md), plot)
    print(f"matmul peak: {result['peak_gflops']:.1f} GFLOP/s ({result['peak_source']})")
    return payload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096],
                   help="square matmul sizes n")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    common.add_quiet_arguments(p, quiet_cores=False)
