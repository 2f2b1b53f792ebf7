"""Throughput (tokens/s) of `elm_jax.apply`, forward and training, per backend.

Model: the Long Range Arena ELM of the paper (Path-X setting: 8 one-hot inputs, 2
outputs, tau_s = 150, tau_m log-spaced over 1 .. 2e4, one hidden MLP layer of 2 d_m),
with d_m from the grid.  A token is one sample at one time step, so tokens/s =
batch * T / seconds per call.

* ``forward``: jitted ``apply(params, x)``;
* ``train``: one jitted Adam step (value_and_grad of the mean squared output over all
  tokens + the update; params and optimizer state donated).

Two parts:

* **headline**: training at d_m = 150, T = 16,384, batch 32 with several public
  settings, timed interleaved with a float32 2048^3 matmul (XLA and NumPy), so the
  fraction of the machine's matmul FLOP rate is measured under the same load;
* **grid**: T x d_m x batch for every backend (``deer`` only on small cells), compile
  times included, within a time budget: cells whose estimated time exceeds what is left
  are reported as skipped, never silently dropped; the largest cells run once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import common

NAME = "throughput"
HEADLINE_NAME = "headline_train_dm150"

HEADLINE_SETTINGS = {
    "scan (remat auto=chunk)": {"backend": "scan"},
    "scan, remat none": {"backend": "scan", "remat": "none"},
    "hoisted": {"backend": "hoisted"},
    "hoisted, remat none": {"backend": "hoisted", "remat": "none"},
    "hoisted, unroll 2": {"backend": "hoisted", "unroll": 2},
    "hoisted, autodiff backward": {"backend": "hoisted", "custom_backward": False},
    "associative": {"backend": "associative"},
}
GRID_BACKENDS = ("scan", "hoisted", "associative", "deer")
DEER_MAX_MEMORY, DEER_MAX_STEPS = 15, 1024


def deer_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("elm_jax.backends.deer") is not None


def lra_config(num_memory: int):
    """The LRA Path-X ELM with `num_memory` memory units."""
    from elm_jax.config import ELMConfig

    return ELMConfig(num_input=8, num_output=2, num_memory=num_memory, tau_s=150.0,
                     memory_tau_min=1.0, memory_tau_max=2e4)


def one_hot_inputs(batch: int, steps: int, num_input: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.eye(num_input, dtype=np.float32)[rng.integers(0, num_input, (batch, steps))]


def _mse(y):
    return (y * y).mean()


def build(config, options: dict, mode: str, batch: int, steps: int, seed: int = 0):
    """(zero-argument callable, compile seconds) for one cell and setting."""
    import jax

    from elm_jax.apply import apply
    from elm_jax.params import init_params

    params = init_params(jax.random.key(seed), config)
    x = jax.numpy.asarray(one_hot_inputs(batch, steps, config.num_input, seed))

    def forward(p, xs):
        return apply(p, xs, config, **options)

    if mode == "forward":
        compiled, seconds = common.compile_timed(jax.jit(forward), params, x)
        return (lambda: compiled(params, x)), seconds
    return common.build_train(forward, _mse, 2e-4, params, (x,))


def _matmul_refs(n: int) -> dict[str, Any]:
    from .matmul import make_matmul

    return {f"matmul xla {n}^3": make_matmul(n, "xla"),
            f"matmul numpy {n}^3": make_matmul(n, "numpy")}


def headline(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """Training at the headline cell with several settings + interleaved matmul."""
    dm, steps, batch = args.headline_dm, args.headline_steps, args.headline_batch
    config = lra_config(dm)
    flops = common.flops_per_token(config)
    tokens = batch * steps
    settings = {k: HEADLINE_SETTINGS[k] for k in args.headline_settings}
    fns: dict[str, Any] = {}
    compile_s: dict[str, float] = {}
    for name, options in settings.items():
        fns[name], compile_s[name] = build(config, options, "train", batch, steps)
        print(f"headline: compiled {name} in {compile_s[name]:.1f} s", flush=True)
    refs = _matmul_refs(args.matmul_n)
    fns.update(refs)
    quiet = common.wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    # target_s: the (short) matmul calls repeat to fill ~1 s, the training steps run once
    stats = common.measure_interleaved(fns, reps=args.headline_reps, target_s=1.0,
                                       budget_s=args.headline_budget)
    mm_flops = 2.0 * args.matmul_n ** 3
    mm_rates = {k: mm_flops / stats[k]["median_s"] / 1e9 for k in refs}
    mm_cpu_rates = {k: mm_flops / stats[k]["cpu_s"] / 1e9 for k in refs if stats[k]["cpu_s"]}
    ref_name = max(mm_rates, key=mm_rates.get)
    ref = mm_rates[ref_name]
    ref_cpu = max(mm_cpu_rates.values()) if mm_cpu_rates else None
    rows = []
    for name in settings:
        st = stats[name]
        work = flops["train"] * tokens
        rate = work / st["median_s"] / 1e9
        cpu_rate = work / st["cpu_s"] / 1e9 if st["cpu_s"] else None
        rows.append({"setting": name, "options": settings[name], "step_s": st["median_s"],
                     "times_s": st["times_s"], "reps": st["reps"],
                     "tokens_per_s": tokens / st["median_s"],
                     "us_per_time_step": st["median_s"] / steps * 1e6,
                     "model_gflops": rate, "fraction_of_matmul": rate / ref,
                     "cpu_s": st["cpu_s"], "own_cores": st["own_cores"],
                     "other_cores": st["other_cores"], "model_gflops_per_cpu_s": cpu_rate,
                     "fraction_of_matmul_per_cpu_s": cpu_rate / ref_cpu
                     if cpu_rate and ref_cpu else None,
                     "compile_s": compile_s[name]})
    # repetitions during which other processes stayed below --quiet-cores: the
    # fraction from the best quiet repetition of each (None if either had none)
    mm_quiet = [mm_flops / t / 1e9 for k in refs
                for t in common.quiet_times(stats[k], args.quiet_cores)]
    for r in rows:
        quiet_t = common.quiet_times(stats[r["setting"]], args.quiet_cores)
        r["quiet_reps"] = len(quiet_t)
        r["quiet_step_s"] = min(quiet_t) if quiet_t else None
        r["fraction_of_matmul_quiet"] = (flops["train"] * tokens / min(quiet_t) / 1e9
                                         / max(mm_quiet)) if quiet_t and mm_quiet else None
    best = max(rows, key=lambda r: r["fraction_of_matmul"])
    others = [st["other_cores"] for st in stats.values() if st["other_cores"] is not None]
    other = max(others) if others else None
    contended = other is not None and other > args.quiet_cores
    quiet_rows = [r for r in rows if r["fraction_of_matmul_quiet"] is not None]
    if quiet_rows:
        best_quiet = max(quiet_rows, key=lambda r: r["fraction_of_matmul_quiet"])
        fraction, reliable = best_quiet["fraction_of_matmul_quiet"], True
        basis = (f"judged on the repetitions during which other processes used < "
                 f"{args.quiet_cores} cores: {best_quiet['setting']} "
                 f"{100 * fraction:.0f} % of the best quiet matmul "
                 f"({max(mm_quiet):.0f} GFLOP/s)")
    else:
        fraction, reliable = best["fraction_of_matmul"], not contended
        basis = ("judged on the medians" + (
            f"; other processes used up to {other:.1f} cores meanwhile and no repetition was "
            f"quiet: under contention the 2-thread matmul slows down more than the ELM, "
            f"which biases the fraction upwards, so this is not a reliable result"
            if contended else ""))
    met = bool(fraction >= 0.5)
    verdict = ("met" if met else "not met") + f" ({basis})"
    result = {
        "cell": {"d_m": dm, "T": steps, "batch": batch, "mode": "train (value_and_grad + Adam)"},
        "config": config.to_dict(), "flops_per_token": flops, "flop_rule": common.FLOP_RULE,
        "train_flops_per_step": flops["train"] * tokens,
        "matmul_reference": {"rates_gflops": mm_rates, "used": ref_name, "gflops": ref,
                             "quiet_best_gflops": max(mm_quiet) if mm_quiet else None,
                             "rates_gflops_per_cpu_s": mm_cpu_rates,
                             "stats": {k: stats[k] for k in refs}},
        "rows": rows, "best": best["setting"], "wait_for_quiet": quiet,
        "other_cores_max": other, "contended": contended,
        "target": {"description": "training at d_m=150, T=16,384, batch 32 reaches >= 50% "
                                  "of the matmul FLOP rate of the same machine",
                   "fraction": fraction, "fraction_median": best["fraction_of_matmul"],
                   "fraction_per_cpu_s": best["fraction_of_matmul_per_cpu_s"],
                   "threshold": 0.5, "met": met, "reliable": reliable,
                   "verdict": verdict},
    }

    def pct(v):
        return f"{100 * v:.0f} %" if v is not None else "-"

    md = [common.header_md(f"Training throughput at d_m = {dm}, T = {steps:,}, batch {batch}",
                           info, args.command_str),
          f"Model FLOPs per token (forward): {flops['forward']:,.0f} = MLP {flops['mlp']:,.0f}"
          f" + routing {flops['routing_dense']:,.0f} + readout {flops['readout']:,.0f}; "
          f"training = 3 x forward = {flops['train']:,.0f} per token, "
          f"{flops['train'] * tokens / 1e9:.1f} GFLOP per step.",
          f"Matmul reference measured interleaved in the same run: {ref:.1f} GFLOP/s "
          f"({ref_name}; " + ", ".join(f"{k} {v:.1f}" for k, v in mm_rates.items()) + "). "
          "'per CPU-s' divides by the process's CPU time instead of wall time (both for "
          "the model and the matmul); 'other cores' is what other processes used meanwhile "
          "(median); 'quiet reps only' is the best repetition run while other processes "
          f"used < {args.quiet_cores} cores over the best such matmul repetition.\n",
          common.md_table([{
              "setting": r["setting"], "step": f"{r['step_s']:.2f} s",
              "tok": common.si(r["tokens_per_s"]), "us": f"{r['us_per_time_step']:.0f}",
              "gf": f"{r['model_gflops']:.1f}", "frac": pct(r["fraction_of_matmul"]),
              "fcpu": pct(r["fraction_of_matmul_per_cpu_s"]),
              "own": common.fmt(r["own_cores"], ".2f"),
              "fq": pct(r["fraction_of_matmul_quiet"]) + f" ({r['quiet_reps']})",
              "other": common.fmt(r["other_cores"], ".2f"),
              "compile": f"{r['compile_s']:.1f} s", "reps": r["reps"]} for r in rows],
              [("setting", "setting"), ("step", "train step"), ("tok", "tokens/s"),
               ("us", "µs per time step"), ("gf", "model GFLOP/s"),
               ("frac", "of matmul rate"), ("fcpu", "of matmul rate per CPU-s"),
               ("fq", "quiet reps only (n)"),
               ("own", "own cores"), ("other", "other cores"),
               ("compile", "compile"), ("reps", "reps")]),
          f"\n**Target >= 50 % of the matmul rate: {verdict}.** (Best by medians: "
          f"{best['setting']}, {pct(best['fraction_of_matmul'])}.)"]
    result["markdown"] = "\n".join(md)
    return result


def _cells(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    cells = [(dm, t, b) for dm in args.dm for t in args.T for b in args.batch]
    return sorted(cells, key=lambda c: (c[0], c[1] * c[2]))


def grid(args: argparse.Namespace) -> dict[str, Any]:
    """Every cell x backend x mode within the time budget; the backends of one cell and
    mode are compiled first and then timed interleaved."""
    backends = [b for b in args.backends if b != "deer" or deer_available()]
    notes = []
    if "deer" in args.backends and "deer" not in backends:
        notes.append("deer: backend module not present, not run")
    start = time.perf_counter()
    rates: dict[tuple, float] = {}  # (backend, mode, dm) -> measured model FLOP/s
    rows = []
    for dm, steps, batch in _cells(args):
        config = lra_config(dm)
        flops = common.flops_per_token(config)
        tokens = batch * steps
        for mode in args.modes:
            work = flops["train" if mode == "train" else "forward"] * tokens
            group: dict[str, tuple] = {}  # the backends of this cell, timed interleaved
            committed = 0.0
            for backend in backends:
                row = {"d_m": dm, "T": steps, "batch": batch, "backend": backend, "mode": mode}
                rows.append(row)
                if backend == "deer" and (dm > DEER_MAX_MEMORY or steps > DEER_MAX_STEPS):
                    row["status"] = (f"not run: deer only on small cells (d_m <= "
                                     f"{DEER_MAX_MEMORY}, T <= {DEER_MAX_STEPS})")
                    continue
                # the rate measured for this backend/mode at this d_m, else at the
                # nearest smaller d_m measured so far, else --default-gflops
                known = sorted((d, v) for (b, m, d), v in rates.items()
                               if (b, m) == (backend, mode) and d <= dm)
                rate = known[-1][1] if known else args.default_gflops * 1e9
                estimate = work / rate
                left = args.budget - (time.perf_counter() - start) - committed
                # compile (~5 s) + 1-3 calls
                if estimate * 2 + 5 > left:
                    row["status"] = (f"skipped: estimated {estimate:.0f} s per call exceeds the "
                                     f"time left ({max(left, 0):.0f} s of --budget "
                                     f"{args.budget:.0f} s)")
                    row["estimated_s"] = estimate
                    print(f"grid: {row}", flush=True)
                    continue
                try:
                    fn, compile_s = build(config, {"backend": backend}, mode, batch, steps)
                except Exception as err:  # report the failure in the table
                    row["status"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
                    print(f"grid: {row}", flush=True)
                    continue
                committed += estimate * 2
                group[backend] = (fn, compile_s, row, estimate)
            if not group:
                continue
            big = max(g[3] for g in group.values()) > args.single_rep_s
            try:
                stats = common.measure_interleaved(
                    {b: g[0] for b, g in group.items()}, reps=1 if big else args.reps,
                    target_s=0.0, warmup=not big, budget_s=args.single_rep_s * len(group))
            except Exception as err:
                for _, _, row, _ in group.values():
                    row["status"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
                continue
            for backend, (_, compile_s, row, _) in group.items():
                st = stats[backend]
                seconds = st["median_s"]
                rates[(backend, mode, dm)] = work / seconds
                row.update(status="ok", seconds=seconds, compile_s=compile_s,
                           other_cores=st["other_cores"], tokens_per_s=tokens / seconds,
                           us_per_time_step=seconds / steps * 1e6,
                           model_gflops=work / seconds / 1e9, reps=st["reps"],
                           first_call_only=big)
                print(f"grid: d_m={dm} T={steps} B={batch} {backend:11s} {mode:7s} "
                      f"{common.si(tokens / seconds, 'tok/s'):>12s} "
                      f"({seconds:.3f} s/call, compile {compile_s:.1f} s, {st['reps']} reps, "
                      f"other cores {common.fmt(st['other_cores'], '.1f')})", flush=True)
    return {"rows": rows, "backends": backends, "notes": notes,
            "budget_s": args.budget, "elapsed_s": time.perf_counter() - start}


def grid_markdown(result: dict[str, Any], peak: float | None) -> str:
    rows = result["rows"]
    backends = result["backends"]
    modes = sorted({r["mode"] for r in rows}, key=lambda m: m != "forward")
    cells = sorted({(r["d_m"], r["T"], r["batch"]) for r in rows})
    lines = []
    for mode in modes:
        table = []
        for dm, steps, batch in cells:
            entry = {"cell": f"{dm} / {steps:,} / {batch}"}
            for b in backends:
                r = next((r for r in rows if (r["d_m"], r["T"], r["batch"], r["backend"],
                                              r["mode"]) == (dm, steps, batch, b, mode)), None)
                if r is None:
                    entry[b] = "-"
                elif r.get("status") == "ok":
                    frac = f", {100 * r['model_gflops'] / peak:.0f} %" if peak else ""
                    contended = (r.get("other_cores") or 0.0) > common.QUIET_CORES
                    entry[b] = (f"{common.si(r['tokens_per_s'])} ({r['compile_s']:.1f} s"
                                f"{frac})" + ("¹" if r.get("first_call_only") else "")
                                + ("ᶜ" if contended else ""))
                elif r.get("status", "").startswith("skipped"):
                    entry[b] = "skipped²"
                elif r.get("status", "").startswith("not run"):
                    entry[b] = "n/a³"
                else:
                    entry[b] = "failed⁴"
            table.append(entry)
        lines += [f"\n### {mode}: tokens/s (compile time" + (", % of matmul peak" if peak
                                                              else "") + ")\n",
                  common.md_table(table, [("cell", "d_m / T / batch")] +
                                  [(b, b) for b in backends])]
    lines.append("\n¹ one call only (the first after compilation). ² skipped by the time "
                 "budget (see the JSON for the estimate). ³ deer runs on small cells only. "
                 "⁴ failed (the JSON has the error). ᶜ other processes used more than "
                 f"{common.QUIET_CORES} cores meanwhile (backends of a cell are timed "
                 "interleaved, so compare within a row).")
    return "\n".join(lines)


def grid_document(payload: dict[str, Any]) -> str:
    """The whole ``throughput.md`` from the grid payload (also rebuilds it from JSON)."""
    return (common.header_md("Throughput grid (tokens/s)", payload["machine"],
                             payload["command"]) +
            f"\n{payload['model']}. Backends with their defaults (scan: remat auto). "
            f"Time budget {payload['budget_s']:.0f} s, used {payload['elapsed_s']:.0f} s. "
            f"'% of matmul peak' divides the model FLOP rate by matmul_peak.json "
            f"({common.fmt(payload.get('matmul_peak_gflops'), '.0f')} GFLOP/s).\n" +
            "".join(f"\n* {n}" for n in payload["notes"]) +
            grid_markdown(payload, payload.get("matmul_peak_gflops")))


def plot_grid(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("status") == "ok"]
    modes = sorted({r["mode"] for r in result["rows"]}, key=lambda m: m != "forward")
    dms = sorted({r["d_m"] for r in result["rows"]})
    fig, axes = plt.subplots(len(modes), len(dms), figsize=(4 * len(dms), 3.2 * len(modes)),
                             squeeze=False)
    for i, mode in enumerate(modes):
        for j, dm in enumerate(dms):
            ax = axes[i][j]
            for k, backend in enumerate(result["backends"]):
                for batch, style in zip(sorted({r["batch"] for r in result["rows"]}),
                                        ("o--", "s-", "^:")):
                    rs = sorted((r for r in rows if (r["mode"], r["d_m"], r["backend"],
                                                     r["batch"]) == (mode, dm, backend, batch)),
                                key=lambda r: r["T"])
                    if rs:
                        ax.plot([r["T"] for r in rs], [r["tokens_per_s"] for r in rs], style,
                                color=f"C{k}", label=f"{backend} B={batch}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{mode}, d_m={dm}")
            ax.set_xlabel("T")
            ax.set_ylabel("tokens/s")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_headline(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh([r["setting"] for r in rows], [100 * r["fraction_of_matmul"] for r in rows])
    ax.axvline(50, color="k", ls="--", lw=1, label="target 50 %")
    ax.set_xlabel("model FLOP rate, % of the interleaved float32 matmul rate")
    c = result["cell"]
    ax.set_title(f"training, d_m={c['d_m']}, T={c['T']}, batch {c['batch']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _peak_from(out: str) -> float | None:
    import json

    path = Path(out) / "matmul_peak.json"
    if path.exists():
        try:
            return float(json.loads(path.read_text())["peak_gflops"])
        except (KeyError, ValueError, TypeError):
            return None
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine_info()
    common.print_machine(info)
    payload: dict[str, Any] = {"benchmark": NAME, "command": args.command_str,
                               "machine": info, "quick": bool(args.quick)}
    if args.part in ("headline", "both"):
        result = headline(args, info)
        result.update(benchmark=HEADLINE_NAME, command=args.command_str, machine=info,
                      quick=bool(args.quick))
        result["machine"]["load_average_end"] = common.load_average()
        md = result.pop("markdown")
        result["files"] = common.write_outputs(args.out, HEADLINE_NAME, result, md,
                                               lambda p: plot_headline(result, p))
        print(md, flush=True)
        payload["headline"] = {k: result[k] for k in ("cell", "best", "target", "rows",
                                                      "matmul_reference", "other_cores_max",
                                                      "contended", "flops_per_token")}
    if args.part in ("grid", "both"):
        result = grid(args)
        peak = _peak_from(args.out)
        payload.update(result)
        payload["matmul_peak_gflops"] = peak
        payload["flop_rule"] = common.FLOP_RULE
        payload["model"] = ("LRA Path-X ELM: 8 one-hot inputs, 2 outputs, tau_s 150, tau_m "
                            "1..2e4, MLP hidden 2 d_m; train = value_and_grad(mean y^2) + Adam")
        info["load_average_end"] = common.load_average()
        md = grid_document(payload)
        payload["files"] = common.write_outputs(args.out, NAME, payload, md,
                                                lambda p: plot_grid(result, p))
    return payload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", choices=("headline", "grid", "both"), default="both")
    p.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--dm", type=int, nargs="+", default=[15, 150, 500])
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--backends", nargs="+", default=list(GRID_BACKENDS),
                   choices=list(GRID_BACKENDS))
    p.add_argument("--modes", nargs="+", default=["forward", "train"],
                   choices=["forward", "train"])
    p.add_argument("--reps", type=int, default=3, help="repetitions per grid cell")
    p.add_argument("--budget", type=float, default=900.0,
                   help="seconds for the grid (cells that do not fit are reported skipped)")
    p.add_argument("--single-rep-s", type=float, default=4.0,
                   help="grid calls estimated longer than this run once")
    p.add_argument("--default-gflops", type=float, default=20.0,
                   help="model GFLOP/s assumed for a backend before it was measured")
    p.add_argument("--headline-dm", type=int, default=150)
    p.add_argument("--headline-steps", type=int, default=16384)
    p.add_argument("--headline-batch", type=int, default=32)
    p.add_argument("--headline-settings", nargs="+", default=list(HEADLINE_SETTINGS),
                   choices=list(HEADLINE_SETTINGS))
    p.add_argument("--headline-reps", type=int, default=3)
    p.add_argument("--headline-budget", type=float, default=150.0,
                   help="seconds of headline timing after which no new round starts")
    common.add_quiet_arguments(p, before="the headline timing")
    p.add_argument("--matmul-n", type=int, default=2048,
                   help="size of the interleaved reference matmul")


def quick_overrides(args: argparse.Namespace) -> None:
    args.T, args.dm, args.batch = [32], [4], [2]
    args.headline_dm, args.headline_steps, args.headline_batch = 4, 32, 2
    args.headline_settings = ["hoisted"]
    args.headline_reps, args.reps, args.matmul_n = 2, 2, 128
    args.budget, args.headline_budget = 60.0, 5.0
    args.backends = ["scan"]
