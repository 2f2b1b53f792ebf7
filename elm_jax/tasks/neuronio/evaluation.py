"""The published NeuronIO evaluation (ELM paper, after Beniaguev et al. 2021).

Procedure (per file, as the reference ``compute_test_predictions``):

1. Ground truth soma: voltage capped at -55 mV minus -67.7 mV (mV, no 1/10 scale).
2. Each simulation of ``T`` ms is cut into ``int(2 + (T - W) / (W - B))`` windows of
   ``W`` = 500 ms with stride ``W - B`` (burn-in ``B`` = 150 ms), the last one
   zero-padded; window 0 gives ms ``[0, W)``, window ``k >= 1`` its steps ``[B, W)``
   (so the windows tile the simulation without overlap).
3. Spike output -> sigmoid (float32, like the reference); soma output x 10 (mV).
4. The soma prediction of the whole file is z-scored and rescaled to the ground truth's
   mean and std ("for comparability", as in Beniaguev's evaluation).

Then, over all files: keep simulations with 0-24 output spikes (counted in the binned
target), drop the first 500 ms, flatten, and compute ``AUC`` (ROC AUC), ``TP @ f FP``
(TPR at the ROC point whose FPR is nearest ``f``, index forced >= 1), ``AUC @ f FP``
(mean TPR over the part of a 20,000-point linear FPR grid below ``f``),
``soma_explained_variance_percent``, ``soma_RMSE`` and ``soma_MAE`` (mV).

The ROC curve follows scikit-learn's ``roc_curve`` exactly (ties share one point,
collinear points dropped with ``drop_intermediate=True``, a leading (0, 0) point), and
the AUC is the trapezoidal area under it, as in ``roc_auc_score``; the TP/AUC-at-FP
numbers depend on which points are dropped, so the dropping is replicated too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .formats import (IGNORE_TIME_FROM_START_MS, WINDOW_MS, Y_TRAIN_SOMA_SCALE, NeuronIOData,
                      soma_eval_target)
from .reader import find_files, load_file

__all__ = [
    "DEFAULT_FP_RATES", "roc_curve", "auc", "roc_auc", "tp_at_fp", "auc_at_fp",
    "explained_variance", "neuronio_metrics", "num_eval_windows", "predict_simulations",
    "evaluate_neuronio", "FilePredictions", "ModelPredictor", "write_report", "plot_simulation", "plot_roc",
]

#: False-positive rates of the published ``TP @ f FP`` / ``AUC @ f FP`` metrics.
DEFAULT_FP_RATES = (0.0025, 0.0100)
#: Simulations kept by the headline evaluation: 0 to 24 output spikes.
DEFAULT_SPIKE_COUNT_RANGE = (0, 24)
#: Burn-in of the published evaluation (ms).
DEFAULT_BURN_IN = 150

PredictFn = Callable[[np.ndarray], Any]


# ---------------------------------------------------------------------------- metrics
def roc_curve(y_true: np.ndarray, y_score: np.ndarray, *, drop_intermediate: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of binary labels (1 = positive) against scores, as scikit-learn's.

    Returns: ``(fpr, tpr, thresholds)``; one point per distinct score (ties share it),
    preceded by ``(0, 0)`` at threshold ``inf``; with `drop_intermediate`, points where
    both the false- and true-positive counts change linearly are removed.  FPR (TPR) is
    NaN when there are no negatives (positives).
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_score = np.asarray(y_score, np.float64).reshape(-1)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score differ in size: {y_true.size} vs {y_score.size}")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("y_score contains NaN or infinity")
    order = np.argsort(y_score, kind="stable")[::-1]
    score = y_score[order]
    positive = (y_true[order] == 1).astype(np.float64)
    last_of_value = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tps = np.cumsum(positive)[last_of_value]
    fps = 1.0 + last_of_value - tps
    thresholds = score[last_of_value]
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)),
                                    True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    thresholds = np.r_[np.inf, thresholds]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under a monotonic curve (scikit-learn's ``auc``)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    dx = np.diff(x)
    direction = 1.0
    if np.any(dx < 0):
        if np.all(dx <= 0):
            direction = -1.0
        else:
            raise ValueError("x is neither increasing nor decreasing")
    return float(direction * np.sum(dx * (y[1:] + y[:-1]) / 2.0))


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC (scikit-learn's ``roc_auc_score`` for binary labels); NaN with one class."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return auc(fpr, tpr)


def tp_at_fp(fpr: np.ndarray, tpr: np.ndarray, fp_rate: float) -> float:
    """TPR at the ROC point whose FPR is nearest `fp_rate` (index at least 1)."""
    index = max(1, int(np.argmin(np.abs(fpr - fp_rate))))
    return float(tpr[index])


def auc_at_fp(fpr: np.ndarray, tpr: np.ndarray, fp_rate: float, num_points: int = 20000
              ) -> float:
    """Mean TPR over the grid points of a ``num_points`` linear FPR grid on [0, 1] below
    the one nearest `fp_rate` (the published partial AUC, normalised by points)."""
    grid = np.linspace(0.0, 1.0, num=num_points)
    tpr_grid = np.interp(grid, fpr, tpr)
    index = min(max(1, int(np.argmin(np.abs(grid - fp_rate)))), tpr_grid.shape[0] - 1)
    return float(tpr_grid[:index].mean())


def explained_variance(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``1 - Var(y_true - y_pred) / Var(y_true)`` (scikit-learn's
    ``explained_variance_score``; 1.0 for a perfect constant, 0.0 if only y_true is
    constant)."""
    y_true = np.asarray(y_true, np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, np.float64).reshape(-1)
    diff = y_true - y_pred
    numerator = np.average((diff - np.average(diff)) ** 2)
    denominator = np.average((y_true - np.average(y_true)) ** 2)
    if denominator == 0:
        return 1.0 if numerator == 0 else 0.0
    return float(1.0 - numerator / denominator)


def neuronio_metrics(y_spike: np.ndarray, spike_prob: np.ndarray, soma_true: np.ndarray,
                     soma_pred: np.ndarray, fp_rates: Sequence[float] = DEFAULT_FP_RATES
                     ) -> dict[str, float]:
    """The published metrics of already filtered predictions (any shapes; flattened).

    Returns keys ``TP @ f FP`` and ``AUC @ f FP`` for each f (formatted ``%.4f``),
    ``AUC``, ``soma_explained_variance_percent``, ``soma_RMSE``, ``soma_MAE``; spike
    metrics are NaN when the labels hold only one class.
    """
    fpr, tpr, _ = roc_curve(y_spike, spike_prob)
    defined = not (np.isnan(fpr).any() or np.isnan(tpr).any())
    out: dict[str, float] = {}
    for f in fp_rates:
        out[f"TP @ {f:.4f} FP"] = tp_at_fp(fpr, tpr, f) if defined else math.nan
        out[f"AUC @ {f:.4f} FP"] = auc_at_fp(fpr, tpr, f) if defined else math.nan
    out["AUC"] = auc(fpr, tpr) if defined else math.nan
    soma_true = np.asarray(soma_true, np.float64).reshape(-1)
    soma_pred = np.asarray(soma_pred, np.float64).reshape(-1)
    out["soma_explained_variance_percent"] = 100.0 * explained_variance(soma_true, soma_pred)
    out["soma_RMSE"] = float(np.sqrt(np.average((soma_true - soma_pred) ** 2)))
    out["soma_MAE"] = float(np.average(np.abs(soma_pred - soma_true)))
    return out


# ---------------------------------------------------------------------------- prediction
def num_eval_windows(duration: int, window: int, burn_in: int) -> int:
    """Windows per simulation, as published: ``int(2 + (T - W) / (W - B))`` (at least 1)."""
    return max(1, int(2 + (duration - window) / (window - burn_in)))


def _window_source(duration: int, window: int, burn_in: int) -> tuple[np.ndarray, np.ndarray]:
    """For every ms ``t`` of a simulation: (window index, step within that window)."""
    t = np.arange(duration)
    stride = window - burn_in
    k = np.where(t < window, 0, (t - burn_in) // stride)
    return k, t - k * stride


def _split_outputs(out: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"predict_fn returned {len(out)} arrays; expected (spike_logit, "
                             f"soma_scaled) or one (batch, time, 2) array")
        return np.asarray(out[0], np.float32), np.asarray(out[1], np.float32)
    out = np.asarray(out, np.float32)
    if out.ndim != 3 or out.shape[-1] < 2:
        raise ValueError(f"predict_fn returned shape {out.shape}; expected (batch, time, 2)")
    return out[..., 0], out[..., 1]


def _run_windows(fn: Callable[[np.ndarray], Any], data: NeuronIOData, sims: np.ndarray,
                 window: int, burn_in: int, batch_size: int, postprocess) -> list[np.ndarray]:
    """Run `fn` over every evaluation window of `sims` in fixed-size batches (the last
    one padded with empty windows, so a jitted fn compiles once) and stitch the results
    back to full simulations.  `postprocess(out)` returns a tuple of (batch, window, ...)
    arrays; the result is one (len(sims), T, ...) array per element."""
    T = data.duration_ms
    n_win = num_eval_windows(T, window, burn_in)
    pair_sim = np.repeat(sims, n_win)
    pair_start = np.tile(np.arange(n_win) * (window - burn_in), len(sims))
    capacity = _events_capacity(fn, data, window, int(pair_start.max()))
    outputs: list[list[np.ndarray]] | None = None
    for lo in range(0, pair_sim.size, batch_size):
        s, st = pair_sim[lo:lo + batch_size], pair_start[lo:lo + batch_size]
        # the last batch is filled up with copies of its first window (outputs dropped)
        pad = batch_size - s.size
        s_in, st_in = np.concatenate([s, np.repeat(s[:1], pad)]), \
            np.concatenate([st, np.repeat(st[:1], pad)])
        if capacity:
            x = data.x_window_events(s_in, st_in, window, capacity)
        else:
            x = data.x_windows(s_in, st_in, window)
        parts = postprocess(fn(x))
        if outputs is None:
            outputs = [[] for _ in parts]
        for acc, part in zip(outputs, parts):
            acc.append(np.asarray(part)[:s.size])
    k, j = _window_source(T, window, burn_in)
    stitched = []
    for acc in outputs:
        arr = np.concatenate(acc).reshape((len(sims), n_win, window) + acc[0].shape[2:])
        stitched.append(arr[:, k, j])
    return stitched


EVENT_CAPACITY_MULTIPLE = 1024


def _events_capacity(fn: Any, data: NeuronIOData, window: int, last_start: int) -> int:
    """Events per window to feed `fn` its windows as `elm_jax.SpikeEvents`, or 0 for
    dense arrays: events only when `fn` has a ``prefers_events(events_per_step)``
    method that says yes (`ModelPredictor` does); the capacity is the most events in any
    evaluation window, rounded up to a multiple of `EVENT_CAPACITY_MULTIPLE` (so files
    of similar activity share one compiled shape)."""
    prefers = getattr(fn, "prefers_events", None)
    if prefers is None:
        return 0
    need = max(1, data.max_window_events(window, 0, last_start))
    capacity = -(-need // EVENT_CAPACITY_MULTIPLE) * EVENT_CAPACITY_MULTIPLE
    return capacity if prefers(capacity / window) else 0


def _sigmoid32(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float32)
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-z))


def predict_simulations(predict_fn: PredictFn, data: NeuronIOData, *, window: int = WINDOW_MS,
                        burn_in: int = DEFAULT_BURN_IN, batch_size: int = 32,
                        sims: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whole-simulation predictions by overlapping windows (steps 2-3 of the procedure).

    Args:
      predict_fn: ``x (batch, window, 2S) int8 -> (spike_logit, soma_scaled)`` (each
        (batch, window)) or one (batch, window, 2) array of raw model outputs.
      data: the file's simulations.
      sims: which simulations (default all).
    Returns: spike probability and soma prediction in mV (x 10, not realigned), both
      (sims, T) float64.
    """
    if not 0 <= burn_in < window:
        raise ValueError(f"burn_in={burn_in} is invalid: expected 0 <= burn_in < window={window}")
    sims = np.arange(data.num_sims) if sims is None else np.asarray(sims, np.int64)

    def post(out):
        logit, soma = _split_outputs(out)
        return _sigmoid32(logit), soma * np.float32(1.0 / Y_TRAIN_SOMA_SCALE)

    prob, soma = _run_windows(predict_fn, data, sims, window, burn_in, batch_size, post)
    return prob.astype(np.float64), soma.astype(np.float64)


def _realign(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    std = pred.std()
    z = (pred - pred.mean()) / (std if std > 0 else 1.0)
    return target.std() * z + target.mean()


@dataclasses.dataclass
class FilePredictions:
    """Predictions of one file: all arrays (sims, T) float64, soma in mV (realigned)."""

    source: str
    y_spike: np.ndarray
    spike_prob: np.ndarray
    soma_true: np.ndarray
    soma_pred: np.ndarray


def _as_data(item: Any) -> list[NeuronIOData]:
    if isinstance(item, NeuronIOData):
        return [item]
    if isinstance(item, (str, os.PathLike)):
        return [load_file(p) for p in find_files(item)]
    if isinstance(item, dict) and {"x", "y_spike", "soma_mv"} <= set(item):
        return [_data_from_arrays(item["x"], item["y_spike"], item["soma_mv"])]
    if isinstance(item, (list, tuple)):
        return [d for sub in item for d in _as_data(sub)]
    raise TypeError(f"cannot evaluate on {type(item).__name__}: expected a path, a "
                    f"NeuronIOData, a dict(x=, y_spike=, soma_mv=) or a list of them")


def _data_from_arrays(x: np.ndarray, y_spike: np.ndarray, soma_mv: np.ndarray) -> NeuronIOData:
    """Wrap dense arrays x (sims, T, 2S) in {-1,0,1}, y_spike (sims, T), soma_mv (sims, T)."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] % 2:
        raise ValueError(f"x: expected (sims, time, 2*segments), got {x.shape}")
    sims, T, C = x.shape
    s, t, c = np.nonzero(x)
    counts = np.bincount(s * T + t, minlength=sims * T).reshape(sims, T)
    ptr = np.concatenate([np.zeros((sims, 1), np.int64), np.cumsum(counts, 1)], 1)
    ptr += np.r_[0, np.cumsum(counts.sum(1))[:-1]][:, None]
    y_spike = np.asarray(y_spike, np.float32)
    return NeuronIOData(source="<arrays>", num_segments=C // 2, event_ptr=ptr,
                        event_channel=c.astype(np.int16), y_spike=y_spike,
                        soma_mv=np.asarray(soma_mv, np.float32),
                        num_output_spikes=y_spike.sum(1).astype(np.int64))


def evaluate_neuronio(predict_fn: PredictFn, data: Any, *, window: int = WINDOW_MS,
                      burn_in: int = DEFAULT_BURN_IN,
                      ignore_time_at_start_ms: int = IGNORE_TIME_FROM_START_MS,
                      spike_count_range: tuple[int, int] = DEFAULT_SPIKE_COUNT_RANGE,
                      fp_rates: Sequence[float] = DEFAULT_FP_RATES, batch_size: int = 32,
                      plot_dir: str | os.PathLike | None = None,
                      memory_fn: Callable[[np.ndarray], Any] | None = None,
                      plot_title: str = "", verbose: bool = False,
                      return_predictions: bool = False) -> Any:
    """The published NeuronIO evaluation of a model (see the module docstring).

    Args:
      predict_fn: ``x (batch, window, 2S) int8 -> (spike_logit, soma_scaled)`` or a
        (batch, window, 2) array of raw model outputs (logit, soma x 0.1); e.g. a
        `ModelPredictor`.  It is always called with `batch_size` windows.
      data: a NeuronIO file or folder (every file under it), a `NeuronIOData`, a dict
        ``x=, y_spike=, soma_mv=`` of dense arrays, or a list of these.
      window, burn_in, ignore_time_at_start_ms, spike_count_range, fp_rates: the
        published settings (500, 150, 500, (0, 24), (0.0025, 0.01)).
      plot_dir: if given, save ``neuronio_eval_simulation.png`` (predicted vs true soma,
        spike probability and, with a memory function, memory units over the kept
        simulation with the most spikes) and ``neuronio_eval_roc.png`` there.
      memory_fn: ``x -> (batch, window, d_m)`` memory trajectories for the plot; taken
        from ``predict_fn.memory`` when absent.
      return_predictions: also return the per-file `FilePredictions`.
    Returns: the metrics dict (see `neuronio_metrics`) plus ``num_simulations`` and
      ``num_simulations_evaluated``; ``(metrics, predictions)`` if `return_predictions`.
    """
    datasets = _as_data(data)
    if not datasets:
        raise ValueError("no NeuronIO simulations to evaluate")
    files: list[FilePredictions] = []
    for d in datasets:
        prob, soma = predict_simulations(predict_fn, d, window=window, burn_in=burn_in,
                                         batch_size=batch_size)
        truth = soma_eval_target(d.soma_mv)
        files.append(FilePredictions(d.source, d.y_spike.astype(np.float64), prob, truth,
                                     _realign(soma, truth)))
        if verbose:
            print(f"predicted {d.num_sims} simulations of {d.source}")
    lo, hi = spike_count_range
    kept = [(f, (f.y_spike.sum(1) >= lo) & (f.y_spike.sum(1) <= hi)) for f in files]
    skip = ignore_time_at_start_ms

    def gather(name: str) -> np.ndarray:
        return np.concatenate([getattr(f, name)[m, skip:].reshape(-1) for f, m in kept])

    metrics: dict[str, Any] = neuronio_metrics(gather("y_spike"), gather("spike_prob"),
                                               gather("soma_true"), gather("soma_pred"),
                                               fp_rates)
    metrics["num_simulations"] = int(sum(f.y_spike.shape[0] for f in files))
    metrics["num_simulations_evaluated"] = int(sum(m.sum() for _, m in kept))
    if verbose:
        print(json.dumps(metrics, indent=1))
    if plot_dir is not None:
        memory_fn = memory_fn or getattr(predict_fn, "memory", None)
        _plots(Path(plot_dir), datasets, files, kept, skip, memory_fn, window, burn_in,
               batch_size, metrics, fp_rates, plot_title)
    return (metrics, files) if return_predictions else metrics


# ---------------------------------------------------------------------------- model glue
INPUT_FORMATS = ("auto", "dense", "events")


class ModelPredictor:
    """`predict_fn` of a model: ``x -> (batch, time, 2)`` raw outputs via
    `elm_jax.models.apply_model`, plus `memory(x)` for the plots (both jitted, one
    compile per shape; an LSTM has no memory units: ``memory`` is None and the plots
    leave them out, and it is fed dense windows).

    `input_format` says how the evaluation feeds it windows: ``"events"`` as
    `elm_jax.SpikeEvents` cut from the stored spikes, ``"dense"`` as int8 arrays, or
    ``"auto"`` (default): events when `elm_jax.input_paths.input_path_costs` rates the
    cheapest event path below the cheapest dense one (for the NeuronIO models: always).
    The outputs are the same either way (to float32 rounding).
    """

    def __init__(self, config, params, *, compute_dtype=None, apply_kwargs=None,
                 input_format: str = "auto"):
        import jax

        from ...apply import apply
        from ...models import apply_model, model_kind

        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format={input_format!r} is invalid: expected one of "
                             f"{INPUT_FORMATS}")
        self.config = config
        self.params = params
        self.input_format = input_format
        # the run's model options (backend, compute_dtype, ...) as `elm_jax.apply` keywords
        kwargs = dict(apply_kwargs or {})
        if compute_dtype is not None:
            kwargs["compute_dtype"] = compute_dtype

        self.is_elm = model_kind(config) == "elm"

        def outputs(p, x):
            return apply_model(p, x, config, **kwargs)

        def memory(p, x):
            return apply(p, x, config, return_states=True, **kwargs)[1]["memory"]

        self._outputs = jax.jit(outputs)
        if self.is_elm:
            self._memory = jax.jit(memory)
        else:
            self.memory = None  # no memory units to plot

    def prefers_events(self, events_per_step: float) -> bool:
        """Whether windows with up to `events_per_step` events per step should come as
        `elm_jax.SpikeEvents` (see the class docstring)."""
        if self.input_format != "auto":
            return self.input_format == "events"
        if not self.is_elm:
            return False
        from ...input_paths import input_path_costs

        dense = input_path_costs(self.config)
        events = input_path_costs(self.config, events_per_step)
        return min(events.values()) < min(dense.values())

    def __call__(self, x: Any) -> np.ndarray:
        return np.asarray(self._outputs(self.params, x))

    def memory(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._memory(self.params, x))


def write_report(path: str | os.PathLike, metrics: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> Path:
    """Write the metrics as JSON (NaN as null), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in metrics.items()}
    if extra:
        clean.update(extra)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(clean, indent=1) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_simulation(path: str | os.PathLike, y_spike: np.ndarray, spike_prob: np.ndarray,
                    soma_true: np.ndarray, soma_pred: np.ndarray,
                    memory: np.ndarray | None = None, x: np.ndarray | None = None,
                    title: str = "") -> Path:
    """PNG of one simulation: input raster (optional), true vs predicted soma (mV above
    -67.7), spike probability with the true spikes, memory units (optional)."""
    plt = _pyplot()
    rows = [r for r, present in (("x", x is not None), ("soma", True), ("spike", True),
                                 ("memory", memory is not None)) if present]
    ratios = {"x": 1.5, "soma": 2.0, "spike": 1.3, "memory": 1.7}
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 2.2 * len(rows) + 0.6), sharex=True,
                             gridspec_kw={"height_ratios": [ratios[r] for r in rows]})
    axes = dict(zip(rows, np.atleast_1d(axes)))
    t = np.arange(len(soma_true))
    if x is not None:
        te, ce = np.nonzero(x > 0)
        ti, ci = np.nonzero(x < 0)
        axes["x"].scatter(te, ce, s=0.05, c="tab:red", rasterized=True)
        axes["x"].scatter(ti, ci, s=0.05, c="tab:blue", rasterized=True)
        axes["x"].set_ylabel("input (exc red,\ninh blue)")
    ax = axes["soma"]
    ax.plot(t, soma_true, lw=0.8, c="k", label="true (capped at -55 mV)")
    ax.plot(t, soma_pred, lw=0.8, c="tab:orange", label="predicted (realigned)")
    ax.set_ylabel("soma - (-67.7) [mV]")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes["spike"]
    ax.plot(t, spike_prob, lw=0.7, c="tab:green", label="predicted spike probability")
    spikes = np.flatnonzero(y_spike)
    ax.vlines(spikes, 0, 1, colors="k", lw=0.8, label=f"true spikes (n={spikes.size})")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("P(spike)")
    ax.legend(loc="upper right", fontsize=8)
    if memory is not None:
        axes["memory"].plot(t, memory, lw=0.6)
        axes["memory"].set_ylabel(f"memory units\n(d_m = {memory.shape[-1]})")
    axes[rows[-1]].set_xlabel("time (ms)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_roc(path: str | os.PathLike, y_spike: np.ndarray, spike_prob: np.ndarray,
             fp_rates: Sequence[float] = DEFAULT_FP_RATES, title: str = "") -> Path:
    """PNG of the ROC curve (log FPR axis) with the TP-at-FP points marked."""
    plt = _pyplot()
    fpr, tpr, _ = roc_curve(y_spike, spike_prob)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(np.maximum(fpr, 1e-6), tpr, lw=1.2)
    for f in fp_rates:
        ax.plot([f], [tp_at_fp(fpr, tpr, f)], "o", label=f"TP @ {f:.4f} FP")
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _plots(plot_dir: Path, datasets: list[NeuronIOData], files: list[FilePredictions],
           kept, skip: int, memory_fn, window: int, burn_in: int, batch_size: int,
           metrics: dict[str, Any], fp_rates: Sequence[float], title: str) -> None:
    plot_dir.mkdir(parents=True, exist_ok=True)
    # the evaluated simulation with the most output spikes (any simulation if none kept)
    candidates = [(f.y_spike[s].sum(), i, s) for i, (f, m) in enumerate(kept)
                  for s in (np.flatnonzero(m) if m.any() else range(len(m)))]
    _, i, s = max(candidates)
    f, d = files[i], datasets[i]
    memory = None
    if memory_fn is not None:
        memory = _run_windows(memory_fn, d, np.array([s]), window, burn_in, batch_size,
                              lambda out: (np.asarray(out, np.float32),))[0][0]
    head = (f"AUC {metrics['AUC']:.4f}, soma RMSE {metrics['soma_RMSE']:.3f} mV - "
            f"{Path(f.source).name} simulation {s}")
    plot_simulation(plot_dir / "neuronio_eval_simulation.png", f.y_spike[s], f.spike_prob[s],
                    f.soma_true[s], f.soma_pred[s], memory=memory, x=d.x_dense([s])[0],
                    title=f"{title}\n{head}" if title else head)
    y = np.concatenate([g.y_spike[m, skip:].reshape(-1) for g, m in kept])
    p = np.concatenate([g.spike_prob[m, skip:].reshape(-1) for g, m in kept])
    if y.size and 0 < y.sum() < y.size:
        plot_roc(plot_dir / "neuronio_eval_roc.png", y, p, fp_rates,
                 title=title or f"AUC {metrics['AUC']:.4f}")
