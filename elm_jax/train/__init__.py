"""Training: a generic trainer for registered tasks (`elm_jax.tasks`).

* `resolve_run(task, preset, overrides)` -> ``(Task, RunConfig)``;
* `Trainer(task, run, workdir, resume=...).fit()` -> report dict;
* `TrainConfig`, `ModelOptions`, `RunConfig`, `Preset` -- frozen configuration;
* ``elm-jax train | eval | tasks`` (`elm_jax.train.cli`).

Names are imported lazily so that task modules can import `elm_jax.train.config`
without pulling in the trainer.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "config", "ModelOptions": "config", "RunConfig": "config",
    "Preset": "config", "resolve_run": "trainer", "Trainer": "trainer",
    "evaluate_params": "trainer", "read_run": "trainer", "make_optimizer": "optim",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
