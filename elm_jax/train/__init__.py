"""Training: a generic trainer for registered tasks (`elm_jax.tasks`).

* `resolve_run(task, preset, overrides)` -> ``(Task, RunConfig)``;
* `Trainer(task, run, workdir, resume=...).fit()` -> report dict;
* `make_optimizer` -- the Optax optimizer of a `TrainConfig`;
* ``elm-jax train | eval | tasks`` (`elm_jax.train.cli`).

The run configuration (`TrainConfig`, `ModelOptions`, `RunConfig`, `Preset`) lives in
`elm_jax.tasks.run_config` (tasks define presets; the trainer sits above the tasks).
"""

from ..tasks.run_config import ModelOptions, Preset, RunConfig, TrainConfig
from .optim import make_optimizer
from .trainer import Trainer, evaluate_params, read_run, resolve_run

__all__ = ["ModelOptions", "Preset", "RunConfig", "TrainConfig", "Trainer", "evaluate_params",
           "make_optimizer", "read_run", "resolve_run"]
