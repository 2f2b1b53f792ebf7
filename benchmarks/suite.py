"""``python -m benchmarks all``: every benchmark in priority order, then ``summary.md/json``.

Order (what matters most runs first, so a run cut short still has it): matmul peak,
NeuronIO training-step ratios, the d_m = 150 / T = 16k training FLOP fraction, the
memory table, then the throughput grid with the time that is left of ``--total-budget``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from . import common


def _sub_args(module, args: argparse.Namespace, **overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    sub = parser.parse_args([])
    sub.quick, sub.out = args.quick, args.out
    for key, value in overrides.items():
        setattr(sub, key, value)
    if args.quick and hasattr(module, "quick_overrides"):
        module.quick_overrides(sub)
    sub.command_str = args.command_str
    return sub


def summary_markdown(s: dict[str, Any]) -> str:
    lines = [common.header_md("Benchmark summary", s["machine"], s["command"]), ""]
    rows = []
    nio = s.get("neuronio")
    if nio:
        e, best = nio["entries"], nio["best_jax"]
        rows.append({"what": "NeuronIO train step (d_m=15 Branch-ELM, batch 8, T=500)",
                     "result": f"JAX ELM ({best.split(':')[1]}) "
                               f"{common.si(e[best]['tokens_per_s'])} tok/s, "
                               f"{e[best]['step_s'] * 1e3:.1f} ms/step",
                     "target": "-", "met": "-"})
        if nio["ratios"].get("torch_baseline"):
            t, tb = nio["target"], e[nio["ratios"]["torch_baseline"]]
            others = ", ".join(f"{v['threads']} thread(s) {v['step_s'] * 1e3:.0f} ms"
                               for k, v in e.items() if v["kind"] == "torch_per_step")
            rows.append({"what": "  vs PyTorch per-step TorchScript design",
                         "result": f"{common.si(tb['tokens_per_s'])} tok/s "
                                   f"({tb['step_s'] * 1e3:.0f} ms/step, {tb['threads']} "
                                   f"thread(s), the faster of: {others}): "
                                   f"JAX **{t['ratio']:.1f}x** faster",
                         "target": ">= 50x", "met": "yes" if t["met"] else "**no**"})
        else:
            rows.append({"what": "  vs PyTorch per-step design", "result":
                         f"not run ({nio['torch']['error']})", "target": ">= 50x",
                         "met": "not measured"})
        for name, entry in e.items():
            if name.startswith("flax_lstm"):
                rows.append({"what": f"  vs Flax LSTM h={entry['hidden']} "
                                     f"({entry['params'] / 1e3:.0f}K params)",
                             "result": f"{common.si(entry['tokens_per_s'])} tok/s: JAX ELM "
                                       f"{entry['step_s'] / e[best]['step_s']:.1f}x faster",
                             "target": "-", "met": "-"})
    head = s.get("headline")
    if head:
        best = next(r for r in head["rows"] if r["setting"] == head["best"])
        c = head["cell"]
        t = head["target"]
        quiet = [r for r in head["rows"] if r.get("fraction_of_matmul_quiet") is not None]
        tokens = c["T"] * c["batch"]
        flops_step = head["flops_per_token"]["train"] * tokens
        if quiet and all(r.get("quiet_step_s") for r in quiet):
            best = max(quiet, key=lambda r: r["fraction_of_matmul_quiet"])
            step_s = best["quiet_step_s"]
            basis = (f"**{100 * best['fraction_of_matmul_quiet']:.0f} %** of the best float32 "
                     f"matmul in the same run ("
                     f"{common.fmt(head['matmul_reference'].get('quiet_best_gflops'), '.0f')} "
                     f"GFLOP/s; repetitions during which other processes were quiet)")
        else:
            step_s = best["step_s"]
            basis = (f"**{100 * best['fraction_of_matmul']:.0f} %** of the matmul rate "
                     f"interleaved in the same run ({head['matmul_reference']['gflops']:.0f} "
                     f"GFLOP/s, medians)")
        rows.append({"what": f"Training d_m={c['d_m']}, T={c['T']:,}, batch {c['batch']}",
                     "result": f"{best['setting']}: {step_s:.2f} s/step, "
                               f"{common.si(tokens / step_s)} tok/s, "
                               f"{flops_step / step_s / 1e9:.1f} model GFLOP/s = {basis}",
                     "target": ">= 50 %",
                     "met": ("yes" if t["met"] else "**no**") +
                            ("" if t.get("reliable", True) else " (unreliable: contended)")})
    mm = s.get("matmul")
    if mm:
        rows.append({"what": "float32 matmul peak", "result":
                     f"{mm['peak_gflops']:.0f} GFLOP/s ({mm['peak_source']})",
                     "target": "-", "met": "-"})
    mem = s.get("memory")
    if mem:
        t_max = max(r["T"] for r in mem["rows"])
        parts = [f"{r['setting']} {r['temp_bytes'] / 1e6:,.0f} MB" for r in mem["rows"]
                 if r["T"] == t_max and "temp_bytes" in r]
        rows.append({"what": f"Train-step temp memory, T={t_max:,}, d_m={mem['setup']['d_m']}, "
                             f"batch {mem['setup']['batch']}",
                     "result": "; ".join(parts), "target": "-", "met": "-"})
    grid = s.get("grid")
    if grid:
        ok = sum(r.get("status") == "ok" for r in grid["rows"])
        skipped = sum(str(r.get("status", "")).startswith("skipped") for r in grid["rows"])
        failed = sum(str(r.get("status", "")).startswith("failed") for r in grid["rows"])
        rows.append({"what": "Throughput grid (throughput.md)",
                     "result": f"{ok} measurements, {skipped} skipped by the time budget, "
                               f"{failed} failed", "target": "-", "met": "-"})
    lines.append(common.md_table(rows, [("what", "benchmark"), ("result", "result"),
                                        ("target", "target"), ("met", "met")]))
    lines.append(f"\nTotal time {s['elapsed_s'] / 60:.1f} min. FLOP rule: {common.FLOP_RULE}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from . import matmul, memory, neuronio, throughput

    info = common.machine_info()
    common.print_machine(info)
    start = time.perf_counter()
    summary: dict[str, Any] = {"benchmark": "summary", "command": args.command_str,
                               "machine": info, "quick": bool(args.quick)}
    steps = [
        ("matmul", matmul, {"wait_quiet": args.wait_quiet}),
        ("neuronio", neuronio, {"torch": args.torch, "wait_quiet": args.wait_quiet}),
        ("headline", throughput, {"part": "headline", "wait_quiet": args.wait_quiet}),
        ("memory", memory, {}),
    ]
    for key, module, overrides in steps:
        if key in args.skip:
            continue
        print(f"\n=== {key} ===", flush=True)
        result = module.run(_sub_args(module, args, **overrides))
        if key == "headline":
            result = result["headline"]
        summary[key] = result
    if "grid" not in args.skip:
        left = args.total_budget - (time.perf_counter() - start)
        print(f"\n=== grid (budget {max(left, 0):.0f} s) ===", flush=True)
        sub = _sub_args(throughput, args, part="grid")
        if not args.quick:
            sub.budget = max(left, 0.0)
        result = throughput.run(sub)
        summary["grid"] = {"rows": result.get("rows", []), "budget_s": sub.budget}
    summary["elapsed_s"] = time.perf_counter() - start
    summary["machine"]["load_average_end"] = common.load_average()
    md = summary_markdown(summary)
    common.write_outputs(args.out, "summary", summary, md)
    print(md, flush=True)
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--total-budget", type=float, default=1500.0,
                   help="seconds for the whole run; the grid gets what is left")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    common.add_quiet_arguments(p, before="the NeuronIO and headline timings",
                               quiet_cores=False)
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["matmul", "neuronio", "headline", "memory", "grid"])

