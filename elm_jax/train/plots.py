"""PNG curves of a run from its metrics records (matplotlib's Agg canvas without pyplot,
so it can run in a background thread)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from ..fileio import atomic_write


def _ema(values: list[float], alpha: float = 0.1) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else (1 - alpha) * acc + alpha * v
        out.append(acc)
    return out


def plot_curves(path: str | Path, records: Iterable[dict[str, Any]], title: str = "",
                reference: dict[str, float] | None = None) -> Path:
    """Training loss and validation metrics against the step, written atomically.

    Args:
      path: the PNG to write.
      records: metrics records (``{"kind", "step", ...}``, see `observe.MetricsLog`).
      title: figure title.
      reference: optional horizontal lines, e.g. ``{"mean predictor": 0.167}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = list(records)
    train = [r for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    val = [r for r in records if r.get("kind") == "val"]
    metric_names = sorted({k for r in val for k, v in r.items()
                           if k not in ("kind", "step") and _finite(v)})
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    ax = axes[0]
    if train:
        steps = [r["step"] for r in train]
        losses = [r["loss"] for r in train]
        ax.plot(steps, losses, lw=0.6, alpha=0.4, color="tab:blue", label="train loss")
        ax.plot(steps, _ema(losses), lw=1.5, color="tab:blue", label="train loss (EMA)")
    if val:
        ax.plot([r["step"] for r in val], [r.get("loss") for r in val], "o-", ms=3,
                color="tab:orange", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    _log_if_positive(ax, [r["loss"] for r in train] + [r.get("loss") for r in val])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    shown = [m for m in metric_names if m != "loss"] or ["loss"]
    values: list[float] = []
    for name in shown:
        pts = [(r["step"], r[name]) for r in val if _finite(r.get(name))]
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, label=f"validation {name}")
            values += [v for _, v in pts]
    for i, (label, value) in enumerate((reference or {}).items()):
        ax.axhline(value, ls=("--", ":", "-.")[i % 3], lw=1, color="gray", label=label)
        values.append(value)
    ax.set_xlabel("step")
    ax.set_ylabel("validation metric")
    if "accuracy" not in shown:
        _log_if_positive(ax, values)
    ax.grid(alpha=0.3)
    if values:
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, dpi=90, format="png"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _log_if_positive(ax, values: list) -> None:
    vals = [v for v in values if _finite(v)]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 20:
        ax.set_yscale("log")
