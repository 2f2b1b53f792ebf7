"""Classification evaluation shared by the sequence-classification tasks (spoken digits,
Long Range Arena): predicted classes of a model over evaluation batches, accuracy with
per-class accuracy and the confusion matrix, and its plot."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

Batch = dict[str, Any]


@functools.lru_cache(maxsize=16)
def _logits_step(model_config: Any, apply_items: tuple) -> Any:
    """Jitted ``(params, x, length) -> logits at each sequence's last real step`` (the
    last step when ``length`` is None) of a model, compiled once per model configuration
    and `elm_jax.apply` options (not once per evaluation)."""
    import jax

    from ..models import predict

    kwargs = dict(apply_items)
    return jax.jit(lambda p, x, length: predict(p, x, model_config, "last_step", length,
                                                **kwargs))


def predict_classes(model_config: Any, params: Any, batches: Iterator[Batch],
                    apply_kwargs: dict[str, Any] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max class of the last output (at ``length - 1`` when the batch has
    ``length``) for every real row of `batches`.

    Args:
      model_config: the `elm_jax.ELMConfig` or `LSTMConfig` of `params`.
      batches: dicts with ``x`` (B, T, num_input) or `SpikeEvents`, ``y`` (B,),
        ``weight`` (B,) (rows of weight 0 are skipped), optionally ``length`` (B,)
        (valid steps of each padded sequence).
      apply_kwargs: `elm_jax.apply` options (backend, compute_dtype, ...).
    Returns: ``(predicted (n,) int64, target (n,) int64)``.
    """
    import jax

    step = _logits_step(model_config, tuple(sorted((apply_kwargs or {}).items())))
    preds, targets = [], []
    for batch in batches:
        logits = np.asarray(jax.device_get(step(params, batch["x"], batch.get("length"))))
        real = np.asarray(batch.get("weight", np.ones(len(batch["y"])))) > 0
        preds.append(logits.argmax(-1)[real])
        targets.append(np.asarray(batch["y"])[real])
    return (np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64),
            np.concatenate(targets).astype(np.int64) if targets else np.zeros(0, np.int64))


def classification_report(pred: np.ndarray, target: np.ndarray,
                          class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``accuracy``, ``num_examples``, ``per_class_accuracy`` ({name: accuracy, None
    for a class without examples}) and ``confusion_matrix`` (rows = true class,
    columns = predicted) of (n,) predicted and target classes."""
    k = len(class_names)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (target, np.clip(pred, 0, k - 1)), 1)
    totals = confusion.sum(1)
    per_class = {name: (float(confusion[i, i] / totals[i]) if totals[i] else None)
                 for i, name in enumerate(class_names)}
    return {"accuracy": float((pred == target).mean()) if target.size else float("nan"),
            "num_examples": int(target.size), "per_class_accuracy": per_class,
            "confusion_matrix": confusion.tolist()}


def plot_confusion(path: str | os.PathLike, confusion: np.ndarray,
                   class_names: tuple[str, ...] | list[str], title: str = "") -> Path:
    """Write the confusion matrix (rows true, columns predicted; colour = row fraction,
    numbers = counts) as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..fileio import atomic_write

    confusion = np.asarray(confusion)
    k = len(class_names)
    fig = Figure(figsize=(3.5 + 0.45 * k, 3.0 + 0.45 * k))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = np.maximum(confusion.sum(1, keepdims=True), 1)
    image = ax.imshow(confusion / rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if confusion[i, j] > 0.5 * rows[i, 0] else "black")
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: fig.savefig(f, dpi=100, format="png"))
