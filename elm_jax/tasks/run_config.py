"""Run configuration: `TrainConfig`, `ModelOptions`, `RunConfig` and ``--set`` overrides.

A run is fully described by a `RunConfig`: the task name and preset, the task's own
frozen options dataclass (``task.*``), the model's config plus the execution options
`ModelOptions` (both ``model.*``), and the `TrainConfig` (``train.*``).  The model is an
`ELMConfig` unless ``model.kind=lstm`` picks the LSTM baseline (`LSTMConfig`, set by
``model.lstm_hidden`` and ``model.lstm_chrono_range``; `build_model_config`); with
``model.tower_latent`` set (the Retrieval presets) either one becomes the encoder of a
two-tower pair classifier (`TwoTowerConfig`, head width ``model.tower_hidden``).
``--set`` keys are dotted paths into these, e.g. ``train.learning_rate=1e-3``,
``model.num_memory=50``, ``model.backend=hoisted``, ``task.seq_len=2000``; values are
parsed by the field's type and invalid keys or values raise `ValueError` listing the
valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Mapping

from ..config import ELMConfig
from ..models import (
    MODEL_KINDS,
    LSTMConfig,
    ModelConfig,
    TwoTowerConfig,
    model_config_from_dict,
)

OPTIMIZERS = ("adam", "adamw", "adamax")
SCHEDULES = ("cosine", "constant")
BEST_MODES = ("min", "max")
COMPUTE_DTYPES = ("float32", "bfloat16")
ON_NONFINITE = ("stop", "skip")

#: ELMConfig fields that the task fixes (the data's channels and the head's outputs).
TASK_FIXED_MODEL_FIELDS = ("num_input", "num_output")

#: ``model.*`` keys that pick the model kind and configure the LSTM (not ELMConfig
#: fields); presets may set them too, e.g. the LSTM size a task's paper used.
MODEL_SELECT_FIELDS: dict[str, Any] = {"kind": str, "lstm_hidden": int,
                                       "lstm_chrono_range": tuple[float, float] | None,
                                       "tower_latent": int | None, "tower_hidden": int}
_LSTM_FIELDS = {"lstm_hidden": "hidden", "lstm_chrono_range": "chrono_range"}
_TOWER_FIELDS = ("tower_latent", "tower_hidden")


def build_model_config(preset_model: Mapping[str, Any], overrides: Mapping[str, Any],
                       num_input: int, num_output: int) -> ModelConfig:
    """The model config of a run: a preset's model dict (ELMConfig fields, ``kind``,
    ``lstm_*`` and ``tower_*`` keys; no `ModelOptions` fields) updated by ``--set
    model.*`` overrides.

    With ``kind="lstm"`` the ELM fields of the preset are ignored, and an ELM field set
    explicitly on the command line is an error (and an ``lstm_*`` one for the ELM).
    With ``tower_latent`` set the model is a `TwoTowerConfig` whose encoder (ELM or
    LSTM) has ``tower_latent`` outputs and whose head has ``num_output`` classes.
    """
    merged = {**preset_model, **overrides}
    for name in TASK_FIXED_MODEL_FIELDS:
        merged.pop(name, None)
    tower = {name: merged.pop(name) for name in _TOWER_FIELDS if name in merged}
    latent = tower.get("tower_latent")
    if latent is None and "tower_hidden" in overrides:
        raise ValueError("--set model.tower_hidden applies to two-tower models only (this "
                         "task's model has no model.tower_latent)")
    encoder = _sequence_model(merged, overrides, num_input,
                              num_output if latent is None else latent)
    if latent is None:
        return encoder
    return TwoTowerConfig(encoder=encoder, num_output=num_output,
                          hidden=tower.get("tower_hidden", 150))


def _sequence_model(merged: dict[str, Any], overrides: Mapping[str, Any], num_input: int,
                    num_output: int) -> ELMConfig | LSTMConfig:
    kind = merged.pop("kind", "elm")
    if kind not in MODEL_KINDS:
        _fail("model", "kind", kind, f"one of {MODEL_KINDS}")
    lstm_kw = {_LSTM_FIELDS[k]: merged.pop(k) for k in list(merged) if k in _LSTM_FIELDS}
    if kind == LSTMConfig.kind:
        stray = sorted(k for k in overrides if k not in MODEL_SELECT_FIELDS)
        if stray:
            raise ValueError(f"--set model.{stray[0]} applies to the ELM, but this run has "
                             f"model.kind='lstm' (LSTM settings: model.lstm_hidden, "
                             f"model.lstm_chrono_range)")
        return LSTMConfig(num_input=num_input, num_output=num_output, **lstm_kw)
    stray = sorted(k for k in overrides if k in _LSTM_FIELDS)
    if stray:
        raise ValueError(f"--set model.{stray[0]} applies to model.kind=lstm only (this run "
                         f"has model.kind='elm')")
    return ELMConfig(num_input=num_input, num_output=num_output, **merged)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the trainer (immutable; ``--set train.FIELD=VALUE``).

    Attributes:
      seed: seed of the parameter init, the training data order and the dropout masks.
      steps: optimizer steps of the whole run (the cosine schedule spans them).
      batch_size: global batch size (split over the devices of the data mesh).
      eval_batch_size: batch size of validation/test (0: ``batch_size``).
      optimizer: ``"adam"``, ``"adamw"`` (decoupled weight decay) or ``"adamax"``.
      learning_rate: peak learning rate.
      weight_decay: decoupled weight decay of ``adamw`` (ignored by the others).
      b1, b2: Adam moment decay rates.
      schedule: ``"cosine"`` (decay over the whole run to ``final_lr_factor * lr``) or
        ``"constant"``.
      warmup_steps: linear warmup from 0 to the peak learning rate.
      final_lr_factor: end of the cosine decay as a fraction of the peak.
      grad_clip: clip the gradient's global norm to this value (0: no clipping).
      lr_groups: per-parameter-group learning-rate factors, ``"PATTERN=FACTOR,..."``;
        a pattern is a parameter path (``tau_m_raw``, ``w_s_raw``, ``mlp``, ``mlp/0``,
        ``readout/kernel``) or a glob over it (``*/bias``); the first match wins and
        other leaves use factor 1.  Frozen leaves (see `elm_jax.trainable_mask`) never
        change, whatever the factor.
      input_dropout: probability of zeroing each input entry during training
        (inverted dropout: kept entries are scaled by 1/(1-p)); 0 disables it.
      burn_in: time steps at the start of each sequence excluded from the loss of a
        per-step head (a warm-up of the memory state).
      eval_every: validate every this many steps (and at the end).
      eval_batches: validation batches per evaluation (0: the whole validation set).
      checkpoint_every: save a checkpoint every this many steps (and at the end).
      keep_checkpoints: how many recent checkpoints to keep (the best one is kept too).
      best_metric: validation metric that selects the best checkpoint ("" : the task's).
      best_mode: ``"min"`` or ``"max"`` for `best_metric` ("" : the task's).
      log_every: log the training loss every this many steps.
      plot_every: refresh the PNG curves every this many steps (0: at each validation).
      on_nonfinite: what a non-finite loss or non-finite parameters after an update do:
        ``"stop"`` (default) ends the run with status ``"diverged"`` naming the step
        (the last checkpoint, saved before it, is kept; nothing non-finite is saved);
        ``"skip"`` drops that update (parameters and optimizer state stay as they
        were) and counts it in ``skipped_steps`` of the train records and the report.
    """

    seed: int = 0
    steps: int = 1000
    batch_size: int = 32
    eval_batch_size: int = 0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    schedule: str = "cosine"
    warmup_steps: int = 0
    final_lr_factor: float = 0.0
    grad_clip: float = 1.0
    lr_groups: str = ""
    input_dropout: float = 0.0
    burn_in: int = 0
    eval_every: int = 100
    eval_batches: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    best_metric: str = ""
    best_mode: str = ""
    log_every: int = 10
    plot_every: int = 0
    on_nonfinite: str = "stop"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every",
                     "keep_checkpoints", "log_every"):
            _check_int(self, name, minimum=1)
        for name in ("seed", "eval_batch_size", "warmup_steps", "burn_in", "eval_batches",
                     "plot_every"):
            _check_int(self, name, minimum=0)
        for name in ("learning_rate", "weight_decay", "grad_clip", "final_lr_factor"):
            _check_float(self, name, minimum=0.0)
        if self.learning_rate <= 0:
            _fail("train", "learning_rate", self.learning_rate, "a number > 0")
        for name in ("b1", "b2"):
            _check_float(self, name, minimum=0.0)
            if getattr(self, name) >= 1:
                _fail("train", name, getattr(self, name), "a number in [0, 1)")
        _check_float(self, "input_dropout", minimum=0.0)
        if self.input_dropout >= 1:
            _fail("train", "input_dropout", self.input_dropout, "a probability in [0, 1)")
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check_choice(self, "schedule", SCHEDULES)
        _check_choice(self, "on_nonfinite", ON_NONFINITE)
        if self.best_mode:
            _check_choice(self, "best_mode", BEST_MODES)
        if self.warmup_steps >= self.steps and self.warmup_steps:
            _fail("train", "warmup_steps", self.warmup_steps,
                  f"fewer steps than train.steps={self.steps}")
        # parsed once, here (validation); the optimizer uses `lr_group_factors`
        object.__setattr__(self, "_lr_groups", parse_lr_groups(self.lr_groups))

    @property
    def lr_group_factors(self) -> tuple[tuple[str, float], ...]:
        """`lr_groups` parsed: ``((pattern, factor), ...)`` in order of precedence."""
        return self._lr_groups

    @property
    def global_eval_batch_size(self) -> int:
        return self.eval_batch_size or self.batch_size


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """How the model is executed (``--set model.FIELD=VALUE``, next to ELMConfig fields).

    `backend`, `input_path`, `unroll`, `remat` and `chunk_size` are passed to
    `elm_jax.apply` only when set (``None`` keeps `apply`'s default, e.g. the input path
    chosen by `elm_jax.input_paths`); an option that this version of `apply` does not
    accept raises a clear error.  ``compute_dtype="bfloat16"`` gives mixed
    precision: bfloat16 matmul operands, float32 parameters, state and accumulation.
    """

    backend: str | None = None
    input_path: str | None = None
    unroll: int | None = None
    remat: str | None = None
    chunk_size: int | None = None
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.compute_dtype not in COMPUTE_DTYPES:
            _fail("model", "compute_dtype", self.compute_dtype, f"one of {COMPUTE_DTYPES}")
        for name in ("unroll", "chunk_size"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=1, section="model")
        from ..input_paths import INPUT_PATHS

        if self.input_path is not None and self.input_path not in INPUT_PATHS:
            _fail("model", "input_path", self.input_path, f"one of {INPUT_PATHS}")

    def apply_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `elm_jax.apply` (checked against its signature)."""
        import inspect

        import jax.numpy as jnp

        from ..apply import apply

        accepted = set(inspect.signature(apply).parameters)
        kwargs: dict[str, Any] = {}
        for name in ("backend", "input_path", "unroll", "remat", "chunk_size"):
            value = getattr(self, name)
            if value is None:
                continue
            if name not in accepted:
                raise ValueError(f"model.{name}={value!r}: this version of elm_jax.apply has "
                                 f"no {name!r} option (it accepts {sorted(accepted)})")
            kwargs[name] = value
        if self.compute_dtype == "bfloat16":
            kwargs["compute_dtype"] = jnp.bfloat16
        return kwargs


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named set of hyperparameters of one task.

    Attributes:
      description: one line for ``elm-jax tasks``.
      task: the task's options (an instance of the task's ``config_cls``).
      model: ELMConfig fields (except ``num_input``/``num_output``, which the task sets),
        the `MODEL_SELECT_FIELDS` (``kind``, ``lstm_hidden``, ``lstm_chrono_range``) and
        `ModelOptions` fields.
      train: the `TrainConfig`.
    """

    description: str
    task: Any
    model: Mapping[str, Any]
    train: TrainConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run (saved in the workdir and every checkpoint)."""

    task_name: str
    preset: str
    task: Any
    model: ModelConfig
    options: ModelOptions
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"task_name": self.task_name, "preset": self.preset,
                "task": dataclasses.asdict(self.task), "model": self.model.to_dict(),
                "model_options": dataclasses.asdict(self.options),
                "train": dataclasses.asdict(self.train)}

    def flat(self) -> dict[str, Any]:
        """``{"task.seq_len": ..., "model.num_memory": ..., "train.seed": ...}``."""
        d = self.to_dict()
        out = {"task_name": d["task_name"]}
        for section, key in (("task", "task"), ("model", "model"),
                             ("model", "model_options"), ("train", "train")):
            for name, value in d[key].items():
                out[f"{section}.{name}"] = value
        return out


def config_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two `RunConfig.flat` dicts."""
    diff = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if _normalise(a) != _normalise(b):
            if key == "model.routing_table":
                diff.append("model.routing_table differs")
            else:
                diff.append(f"{key}: checkpoint {a!r} vs now {b!r}")
    return diff


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def run_config_from_dict(data: Mapping[str, Any], task_config_cls: type) -> RunConfig:
    """Inverse of `RunConfig.to_dict` (the task's options class comes from the registry)."""
    return RunConfig(task_name=data["task_name"], preset=data["preset"],
                     task=_from_dict(task_config_cls, data["task"]),
                     model=model_config_from_dict(data["model"]),
                     options=_from_dict(ModelOptions, data["model_options"]),
                     train=_from_dict(TrainConfig, data["train"]))


def _from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; valid: {sorted(names)}")
    return cls(**dict(data))


# ---------------------------------------------------------------------------- --set
def valid_keys(task_config_cls: type) -> list[str]:
    """Every key accepted by ``--set`` for a task."""
    keys = [f"task.{f.name}" for f in dataclasses.fields(task_config_cls)]
    keys += [f"model.{f.name}" for f in dataclasses.fields(ELMConfig)
             if f.name not in TASK_FIXED_MODEL_FIELDS]
    keys += [f"model.{name}" for name in MODEL_SELECT_FIELDS]
    keys += [f"model.{f.name}" for f in dataclasses.fields(ModelOptions)]
    keys += [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)]
    return keys


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields."""
    module = __import__(cls.__module__, fromlist=["_"])
    return typing.get_type_hints(cls, globalns=vars(module))


def parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse ``--set`` text as `annotation` (int, float, bool, str, X | None, tuples)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{key}: cannot parse {text!r}")
    if annotation is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"--set {key}={text!r}: expected a boolean (true/false)")
    if annotation is int:
        try:
            value = float(text) if any(c in text.lower() for c in ".e") else int(text)
        except ValueError:
            raise ValueError(f"--set {key}={text!r}: expected an integer") from None
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"--set {key}={text!r}: expected an integer")
            value = int(value)
        return value
    if annotation is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--set {key}={text!r}: expected a number") from None
        if not math.isfinite(value):
            raise ValueError(f"--set {key}={text!r}: expected a finite number")
        return value
    if annotation is str:
        return text
    if origin is tuple:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = [v for v in text.split(",") if v.strip()]
        (inner, *_rest) = typing.get_args(annotation) or (str,)
        return tuple(parse_value(str(v), inner, key) for v in value)
    raise ValueError(f"--set {key}: fields of type {annotation} cannot be set from text")


def parse_overrides(items: list[str] | tuple[str, ...], task_config_cls: type
                    ) -> dict[str, dict[str, Any]]:
    """Parse ``["train.learning_rate=1e-3", ...]`` into ``{"train": {...}, ...}``.

    Sections: ``task`` (the task's options), ``model`` (ELMConfig fields, the
    `MODEL_SELECT_FIELDS` and `ModelOptions` fields, returned under ``"model"`` and ``"model_options"``),
    ``train`` (`TrainConfig`).  Raises ValueError listing the valid keys on a bad key.
    """
    valid = valid_keys(task_config_cls)
    hints = {"task": field_types(task_config_cls),
             "model": {**field_types(ELMConfig), **MODEL_SELECT_FIELDS},
             "model_options": field_types(ModelOptions), "train": field_types(TrainConfig)}
    out: dict[str, dict[str, Any]] = {"task": {}, "model": {}, "model_options": {},
                                      "train": {}}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. "
                             f"train.learning_rate=1e-3; valid keys: {', '.join(valid)}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            fixed = [f"model.{n}" for n in TASK_FIXED_MODEL_FIELDS]
            hint = (" (set by the task from its data)" if key in fixed else "")
            raise ValueError(f"--set {key}: unknown key{hint}; valid keys: {', '.join(valid)}")
        section, name = key.split(".", 1)
        if section == "model" and name in hints["model_options"]:
            section = "model_options"
        out[section][name] = parse_value(text, hints[section][name], key)
    return out


def parse_lr_groups(text: str) -> tuple[tuple[str, float], ...]:
    """``"tau_m_raw=0.1,mlp/*=2"`` -> ``(("tau_m_raw", 0.1), ("mlp/*", 2.0))``."""
    groups = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        pattern, sep, factor = part.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not sep or not pattern.strip() or not math.isfinite(value) or value < 0:
            raise ValueError(f"TrainConfig.lr_groups={text!r} is invalid: expected "
                             f"comma-separated PATTERN=FACTOR with a factor >= 0, e.g. "
                             f"'tau_m_raw=0.1,readout=2'")
        groups.append((pattern.strip(), value))
    return tuple(groups)


# ---------------------------------------------------------------------------- helpers
def _fail(section: str, name: str, value: Any, expected: str) -> None:
    raise ValueError(f"{section}.{name}={value!r} is invalid: expected {expected}")


def _check_int(obj: Any, name: str, minimum: int | None, section: str = "train") -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or \
            (minimum is not None and value < minimum):
        _fail(section, name, value, "an integer" + (f" >= {minimum}" if minimum is not None
                                                   else ""))


def _check_float(obj: Any, name: str, minimum: float, section: str = "train") -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < minimum:
        _fail(section, name, value, f"a finite number >= {minimum}")


def _check_choice(obj: Any, name: str, choices: tuple[str, ...], section: str = "train") -> None:
    value = getattr(obj, name)
    if value not in choices:
        _fail(section, name, value, f"one of {choices}")
