"""Optax optimizers, learning-rate schedules and per-parameter-group learning rates."""

from __future__ import annotations

import fnmatch
from typing import Any, Callable

import jax
import optax

from ..models import ModelConfig, trainable_model_mask
from ..tasks.run_config import TrainConfig

FROZEN = "frozen"


def learning_rate_schedule(cfg: TrainConfig) -> Callable[[Any], Any]:
    """The learning rate as a function of the step.

    ``"cosine"``: cosine decay from the peak to ``final_lr_factor * peak`` over the whole
    run (``train.steps``), after an optional linear warmup from 0 (the warmup is part
    of the run).  ``"constant"``: the peak, after the optional warmup.
    """
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.final_lr_factor
    if cfg.schedule == "cosine":
        if cfg.warmup_steps:
            return optax.warmup_cosine_decay_schedule(0.0, peak, cfg.warmup_steps,
                                                      cfg.steps, end_value=end)
        return optax.cosine_decay_schedule(peak, cfg.steps, alpha=cfg.final_lr_factor)
    if cfg.warmup_steps:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, cfg.warmup_steps), optax.constant_schedule(peak)],
            [cfg.warmup_steps])
    return optax.constant_schedule(peak)


def leaf_path(path: tuple) -> str:
    """``("mlp", 0, "kernel")`` key path -> ``"mlp/0/kernel"``."""
    parts = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _matches(path: str, pattern: str) -> bool:
    return path == pattern or path.startswith(pattern + "/") or fnmatch.fnmatchcase(path, pattern)


def param_labels(params: Any, config: ModelConfig, cfg: TrainConfig) -> Any:
    """Label of every leaf: ``"frozen"`` (not trained), ``"group{i}"`` (the first
    ``lr_groups`` pattern it matches) or ``"default"``."""
    groups = cfg.lr_group_factors
    mask = trainable_model_mask(config, params)

    def label(path, trained):
        if not trained:
            return FROZEN
        name = leaf_path(path)
        for i, (pattern, _) in enumerate(groups):
            if _matches(name, pattern):
                return f"group{i}"
        return "default"

    return jax.tree_util.tree_map_with_path(label, mask)


def _base(cfg: TrainConfig, lr: Callable) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(lr, b1=cfg.b1, b2=cfg.b2)
    if cfg.optimizer == "adamw":
        return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)
    return optax.adamax(lr, b1=cfg.b1, b2=cfg.b2)


def make_optimizer(cfg: TrainConfig, config: ModelConfig, params: Any
                   ) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """The optimizer of a run and its base learning-rate schedule.

    Gradient clipping by global norm (``grad_clip`` > 0), then one optimizer per
    parameter group, each with the schedule scaled by its ``lr_groups`` factor; frozen
    leaves (``elm_jax.trainable_mask``; every LSTM leaf is trained) get `optax.set_to_zero` (no update, no decay).
    """
    schedule = learning_rate_schedule(cfg)
    groups = cfg.lr_group_factors
    labels = param_labels(params, config, cfg)
    used = set(jax.tree_util.tree_leaves(labels))
    transforms: dict[str, optax.GradientTransformation] = {
        FROZEN: optax.set_to_zero(), "default": _base(cfg, schedule)}
    for i, (pattern, factor) in enumerate(groups):
        name = f"group{i}"
        if name not in used:
            paths = [leaf_path(p) for p, _ in
                     jax.tree_util.tree_flatten_with_path(
                         trainable_model_mask(config, params))[0]]
            raise ValueError(f"train.lr_groups pattern {pattern!r} matches no trained "
                             f"parameter (or an earlier pattern took them all); parameter "
                             f"paths: {paths}")
        if factor == 0:
            transforms[name] = optax.set_to_zero()
        else:
            transforms[name] = _base(cfg, lambda step, f=factor: f * schedule(step))
    tx: optax.GradientTransformation = optax.multi_transform(transforms, labels)
    if cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx, schedule
