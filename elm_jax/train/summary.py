"""The end-of-run summary `elm-jax train` prints: the final metrics and where the
outputs went (the full report stays in ``WORKDIR/report.json``)::

    adding / tiny: completed at step 300/300 (323 parameters, 00:04 wall time, 390.3k tok/s)

                                best model  final model
      validation mse (step 300)  0.0158751
      test loss                  0.0155813    0.0155813
      test mse                   0.0155813    0.0155813

      report       /tmp/x/report.json
      metrics log  /tmp/x/metrics.jsonl
      plots        /tmp/x/curves.png
      ...
"""

from __future__ import annotations

import math
from typing import Any

from ..progress import format_duration

#: Labels of the report's ``outputs`` (in the order shown).
OUTPUT_LABELS = {"report": "report", "metrics": "metrics log", "curves": "plots",
                 "final_evaluation": "evaluation plots", "best_model": "best model",
                 "final_model": "final model", "checkpoints": "checkpoints",
                 "tensorboard": "tensorboard"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return str(value)


def metric_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(name, best model, final model)`` of the headline numbers: the best validation
    value, the test metrics of the best and final parameters, the numbers of the task's
    final evaluation (of the best parameters)."""
    rows: list[tuple[str, str, str]] = []
    best = report.get("best_val")
    if best:
        rows.append((f"validation {best['metric']} (step {best['step']})",
                     _number(best["value"]), ""))
    final = report.get("test_final") or {}
    for name, value in (report.get("test") or {}).items():
        if _is_number(value):
            rows.append((f"test {name}", _number(value),
                         _number(final[name]) if _is_number(final.get(name)) else ""))
    for name, value in (report.get("final_evaluation") or {}).items():
        if _is_number(value):      # numbers only: no file lists or nested tables
            rows.append((f"test {name} (final evaluation)", _number(value), ""))
    return rows


def summary_table(report: dict[str, Any]) -> str:
    """The terminal summary of a `Trainer.fit` report (no file lists)."""
    head = (f"{report.get('task')} / {report.get('preset')}: {report.get('status')} at step "
            f"{report.get('step')}/{report.get('steps')}")
    facts = [f"{report['num_params']} parameters"] if "num_params" in report else []
    if report.get("wall_time_s") is not None:
        facts.append(f"{format_duration(report['wall_time_s'])} wall time")
    if report.get("tokens_per_s"):
        facts.append(f"{report['tokens_per_s'] / 1e3:.1f}k tok/s")
    if report.get("resumed_from"):
        facts.append(f"resumed from step {report['resumed_from']}")
    lines = [head + (f" ({', '.join(facts)})" if facts else "")]
    rows = metric_rows(report)
    if rows:
        rows = [("", "best model", "final model"), *rows]
        w = [max(len(row[i]) for row in rows) for i in range(3)]
        lines.append("")
        lines += [f"  {a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}".rstrip() for a, b, c in rows]
    outputs = report.get("outputs") or {}
    shown = [(OUTPUT_LABELS[k], outputs[k]) for k in OUTPUT_LABELS if k in outputs]
    if shown:
        width = max(len(label) for label, _ in shown)
        lines += [""] + [f"  {label:<{width}}  {path}" for label, path in shown]
    if report.get("status") == "interrupted":
        lines += ["", "  continue with the same command plus --resume"]
    return "\n".join(lines)
