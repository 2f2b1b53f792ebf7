"""Time of the published NeuronIO evaluation of the best published model
(``../shared/reference/best_elm_neuron``) on the real simulations
(``../shared/data/neuronio_l5pc``, 18 simulations): before issue 14 (dense int8 windows,
dense routing matrix) and now (windows as `elm_jax.SpikeEvents`, input path by
`elm_jax.input_paths`).  Each setting runs twice, interleaved; the second (compiled)
run is the figure, and the metrics must agree.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from . import common

NAME = "neuronio_eval"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SETTINGS = {
    "before (dense windows, matrix path)": {"input_format": "dense",
                                            "apply_kwargs": {"input_path": "matrix"}},
    "now (events, auto path)": {},
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import elm_jax
    from elm_jax.tasks import neuronio as nio
    from elm_jax.tasks.neuronio import evaluation as ev

    info = common.machine_info()
    common.print_machine(info)
    ref = SHARED / "reference" / "best_elm_neuron"
    config, params = elm_jax.load_torch_checkpoint(ref / "neuronio_best_model_state.pt",
                                                   ref / "model_config.json")
    data = [nio.load_file(f) for f in nio.find_files(SHARED / "data" / "neuronio_l5pc")]
    results: dict[str, Any] = {name: {"seconds": []} for name in SETTINGS}
    predictors = {name: ev.ModelPredictor(config, params, **kw)
                  for name, kw in SETTINGS.items()}
    for _ in range(args.repeats):
        for name, predictor in predictors.items():
            start = time.perf_counter()
            metrics = ev.evaluate_neuronio(predictor, data, batch_size=args.batch_size)
            results[name]["seconds"].append(time.perf_counter() - start)
            results[name]["metrics"] = metrics
    names = list(SETTINGS)
    first, last = (results[n]["metrics"] for n in names)
    same = all(abs(first[k] - last[k]) <= 1e-5 * max(1.0, abs(first[k]))
               for k in ("AUC", "soma_RMSE", "soma_explained_variance_percent"))
    speedup = min(results[names[0]]["seconds"][1:]) / min(results[names[1]]["seconds"][1:])
    payload = {"benchmark": NAME, "command": args.command_str, "machine": info,
               "simulations": sum(d.num_sims for d in data), "results": results,
               "same_metrics": same, "speedup": speedup}
    rows = [{"name": n, "first": f"{r['seconds'][0]:.1f} s",
             "warm": f"{min(r['seconds'][1:]):.1f} s", "auc": f"{r['metrics']['AUC']:.7f}"}
            for n, r in results.items()]
    md = [common.header_md("NeuronIO evaluation of best_elm_neuron (18 real simulations)",
                           info, args.command_str),
          common.md_table(rows, [("name", "setting"), ("first", "first run (compiles)"),
                                 ("warm", "compiled run"), ("auc", "AUC")]),
          f"\nSpeed-up (compiled runs): **{speedup:.1f}x**; same metrics: {same}."]
    payload["files"] = common.write_outputs(args.out, NAME, payload, "\n".join(md))
    print("\n".join(md[1:]), flush=True)
    return payload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="runs per setting (>= 2)")


def quick_overrides(args: argparse.Namespace) -> None:
    """--quick has nothing smaller to run: the evaluation is the measurement."""
    args.repeats = 2
