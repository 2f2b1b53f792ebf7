"""What a task is: its data, head, loss, metrics and presets.

A `Task` couples

* ``config_cls`` -- a frozen dataclass of the task's own options (``--set task.*``),
  e.g. the sequence length;
* ``make_data(task_config, seed) -> TaskData`` -- the data (see `TaskData`);
* a **head**: ``"per_step"`` (a prediction at every time step, e.g. NeuronIO: spike
  logit and somatic voltage per ms) or ``"last_step"`` (one prediction from the last
  output, e.g. classification of a sequence); the ELM's linear readout with
  ``num_output = TaskData.num_output`` is the head's only parameters;
* a **loss** and **metrics**: names of built-ins (`LOSSES`, `METRICS`) or functions
  ``fn(pred, target) -> values`` with one value per prediction (shape
  ``pred.shape[:-1]``: ``(batch, time)`` for per-step heads, ``(batch,)`` for last-step
  heads).  The trainer averages them over the time steps after the burn-in and over
  the examples (weighted by ``batch["weight"]`` when present);
* named **presets** (`elm_jax.tasks.run_config.Preset`).

Batches are dicts of NumPy arrays with a fixed batch size:

* ``"x"``: (batch, time, num_input) inputs (float, int or bool), or the same input as
  an `elm_jax.SpikeEvents` (leaves batch-first; a fixed capacity keeps one compilation);
* ``"y"``: targets -- (batch, time, num_output) or (batch, time) integer classes for
  per-step heads; (batch, num_output) or (batch,) integer classes for last-step heads;
* ``"weight"`` (optional): (batch,) example weights, 0 for padding rows of the last
  evaluation batch;
* ``"length"`` (optional, last-step heads): (batch,) valid length of each sequence;
  the prediction is then the output at step ``length - 1``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import optax

from ..models import HEADS, last_outputs

Batch = dict[str, Any]
ElementwiseFn = Callable[[jax.Array, jax.Array], jax.Array]


@runtime_checkable
class TaskData(Protocol):
    """The data of a task instance (built by ``Task.make_data(task_config, seed)``).

    Attributes:
      num_input: input channels (the model's ``num_input``).
      num_output: outputs of the readout (the model's ``num_output``; the number of
        classes for a classification head).
      seq_len: time steps per sequence (for tokens/s).

    Training data must be a pure function of ``(seed, step)`` so that a resumed run
    sees exactly the batches of an uninterrupted one without saving iterator state;
    evaluation data is a fixed, ordered set per split.
    """

    num_input: int
    num_output: int
    seq_len: int

    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The training batch of optimizer step `step` (deterministic)."""
        ...

    def eval_batches(self, split: str, batch_size: int) -> Iterable[Batch]:
        """All batches of ``split`` (``"val"`` or ``"test"``), the last one padded to
        `batch_size` with ``weight`` 0 rows."""
        ...


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered task (see the module docstring and `elm_jax.tasks.register_task`).

    Attributes:
      name: registry name (``elm-jax train --task NAME``).
      description: one line for ``elm-jax tasks``.
      config_cls: frozen dataclass of the task's options.
      make_data: ``(task_config, seed) -> TaskData``.
      head: ``"per_step"`` or ``"last_step"``.
      loss: a name in `LOSSES` or an elementwise function.
      metrics: names in `METRICS` or ``{name: elementwise function}``; ``"loss"`` is
        always reported.
      presets: ``{name: Preset}``.
      default_preset: preset used when ``--preset`` is not given.
      best_metric, best_mode: the validation metric that selects the best checkpoint
        unless the preset's `TrainConfig` names another.
      plot_reference: horizontal lines drawn on the validation plot, ``{label: value}``.
      io_dims: optional ``task_config -> (num_input, num_output)`` so that resolving a
        run need not build the data (otherwise ``make_data`` is called once and its
        instance reused by the trainer).
      final_evaluation: optional task-specific evaluation run by the trainer after the
        test metrics, on the best parameters:
        ``fn(task_config, model_config, params, out_dir=PATH, split="test",
        apply_kwargs=dict) -> dict`` (`apply_kwargs`: the run's model options, to be
        passed to every `elm_jax.apply` call)
        (JSON-serialisable; stored in report.json under ``"final_evaluation"``; files
        go to ``WORKDIR/final_evaluation/``).
    """

    name: str
    description: str
    config_cls: type
    make_data: Callable[[Any, int], TaskData]
    head: str
    loss: str | ElementwiseFn
    metrics: tuple[str, ...] | Mapping[str, ElementwiseFn]
    presets: Mapping[str, Any]
    default_preset: str
    best_metric: str = "loss"
    best_mode: str = "min"
    plot_reference: Mapping[str, float] = dataclasses.field(default_factory=dict)
    io_dims: Callable[[Any], tuple[int, int]] | None = None
    final_evaluation: Callable[..., dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"Task {self.name!r}: head={self.head!r} is invalid: expected "
                             f"one of {HEADS}")
        if isinstance(self.loss, str) and self.loss not in LOSSES:
            raise ValueError(f"Task {self.name!r}: loss={self.loss!r} is invalid: expected "
                             f"one of {sorted(LOSSES)} or a function")
        for name, fn in self.metric_fns().items():
            if fn is None:
                raise ValueError(f"Task {self.name!r}: unknown metric {name!r}; built-in "
                                 f"metrics: {sorted(METRICS)}")
        if self.default_preset not in self.presets:
            raise ValueError(f"Task {self.name!r}: default_preset {self.default_preset!r} "
                             f"is not among its presets {sorted(self.presets)}")

    def loss_fn(self) -> ElementwiseFn:
        return LOSSES[self.loss] if isinstance(self.loss, str) else self.loss

    def metric_fns(self) -> dict[str, ElementwiseFn]:
        if isinstance(self.metrics, Mapping):
            return dict(self.metrics)
        return {name: METRICS.get(name) for name in self.metrics}


# ---------------------------------------------------------------------------- heads
def head_outputs(y: jax.Array, head: str, length: jax.Array | None = None) -> jax.Array:
    """Select the predictions of a head from the model outputs y (batch, time, out):
    all of them (``per_step``) or each sequence's last real step (``last_step``;
    `elm_jax.models.last_outputs`)."""
    return y if head == "per_step" else last_outputs(y, length)


# ---------------------------------------------------------------------------- losses
def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error averaged over the output axis."""
    return jnp.mean((pred - target.astype(pred.dtype)) ** 2, axis=-1)


def cross_entropy(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Softmax cross-entropy of logits `pred` against integer class `target`."""
    return optax.softmax_cross_entropy_with_integer_labels(pred, target.astype(jnp.int32))


def binary_cross_entropy(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Sigmoid cross-entropy of logits against {0, 1} targets, averaged over outputs."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(pred, target.astype(pred.dtype)),
                    axis=-1)


def accuracy(pred: jax.Array, target: jax.Array) -> jax.Array:
    """1 where the arg-max class equals the integer target, else 0."""
    return (jnp.argmax(pred, axis=-1) == target.astype(jnp.int32)).astype(jnp.float32)


LOSSES: dict[str, ElementwiseFn] = {"mse": mse, "cross_entropy": cross_entropy,
                                    "bce": binary_cross_entropy}
METRICS: dict[str, ElementwiseFn] = {"mse": mse, "accuracy": accuracy,
                                     "cross_entropy": cross_entropy,
                                     "bce": binary_cross_entropy}


def reduce_per_example(values: jax.Array, head: str, burn_in: int) -> jax.Array:
    """Per-example means of elementwise values: (batch, time) -> (batch,) after the
    burn-in for per-step heads; (batch,) unchanged for last-step heads."""
    if head == "last_step":
        return values
    time = values.shape[1]
    if burn_in >= time:
        raise ValueError(f"train.burn_in={burn_in} leaves no time step of {time} in the loss")
    return jnp.mean(values[:, burn_in:], axis=1)
