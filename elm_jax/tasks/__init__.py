"""The task registry: every task the trainer can run, by name.

Built-in tasks: ``adding`` and ``delayed_recall`` (`elm_jax.tasks.synthetic`, small
generated tasks in one module), ``neuronio`` (`elm_jax.tasks.neuronio`), ``shd`` and
``shd_adding`` (`elm_jax.tasks.spoken_digits`), and ``listops``, ``pathfinder`` and
``pathx`` (`elm_jax.tasks.lra`), each task family in its own package.

Layout: one package per task family under ``elm_jax/tasks/`` holds everything about it
-- file formats and readers, generators, evaluation and metrics, the task definition
and presets, and its CLI subcommands (``cli.py`` with ``register(subparsers)``, picked
up by ``elm-jax``).  Dependencies run one way: ``elm_jax.cli`` -> `elm_jax.train` ->
`elm_jax.tasks` -> the model core; `elm_jax.tasks.run_config` holds the run
configuration (`TrainConfig`, `Preset`, ...) so that tasks never import the trainer.

Adding a task family needs no change to the trainer: write a package that builds a
`Task` (see `elm_jax.tasks.base` for the contract of the data, head, loss, metrics and
presets), calls `register_task` at import time, and add it to `TASK_MODULES`::

    # elm_jax/tasks/neuronio/task.py
    from elm_jax.tasks import register_task
    from elm_jax.tasks.base import Task
    from elm_jax.tasks.run_config import Preset, TrainConfig

    def neuronio_loss(pred, target):          # (batch, time, 2) -> (batch, time)
        ...                                   # 0.5 * BCE(spike) + 0.5 * MSE(soma)

    register_task(Task(
        name="neuronio", description="...", config_cls=NeuronIOConfig,
        make_data=NeuronIOData,               # (config, seed) -> TaskData
        head="per_step", loss=neuronio_loss, metrics={"soma_mse": ..., ...},
        presets={"paper": Preset(...), "small": Preset(...), "tiny": Preset(...)},
        default_preset="paper", best_metric="soma_mse", best_mode="min",
        io_dims=lambda cfg: (1278, 2),        # optional: dims without opening the data
        final_evaluation=neuronio_eval))      # optional: AUC etc. on the best params

A module that fails to import is reported (a warning, and in the error for an unknown
task name) without hiding the other tasks.

The registry imports the modules in `TASK_MODULES` and any modules named in the
environment variable ``ELM_JAX_TASK_MODULES`` (comma-separated), e.g. for tasks that
live outside this package.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings

from .base import Task, TaskData, head_outputs

#: Modules imported to populate the registry (the first registers its tasks through
#: its ``TASKS`` tuple, the others at import time).
TASK_MODULES = ("elm_jax.tasks.synthetic", "elm_jax.tasks.neuronio",
                "elm_jax.tasks.spoken_digits.presets", "elm_jax.tasks.lra.presets")

_REGISTRY: dict[str, Task] = {}
_FAILED: dict[str, str] = {}
_loaded = False


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add `task` to the registry (ValueError if the name is taken, unless `replace`)."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task expects an elm_jax.tasks.base.Task, got "
                        f"{type(task).__name__}")
    if task.name in _REGISTRY and not replace and _REGISTRY[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is already registered")
    _REGISTRY[task.name] = task
    return task


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import synthetic

    for task in synthetic.TASKS:
        register_task(task)
    extra = [m.strip() for m in os.environ.get("ELM_JAX_TASK_MODULES", "").split(",")
             if m.strip()]
    for name in (*TASK_MODULES[1:], *extra):
        if name in extra and importlib.util.find_spec(name) is None:
            raise ValueError(f"ELM_JAX_TASK_MODULES names {name!r}, which cannot be "
                             f"imported")
        try:
            importlib.import_module(name)
        except Exception as err:  # one broken task module must not hide the others
            _FAILED[name] = f"{type(err).__name__}: {err}"
            warnings.warn(f"task module {name} failed to import ({_FAILED[name]}); its "
                          f"tasks are unavailable", RuntimeWarning, stacklevel=2)


def get_task(name: str) -> Task:
    """The registered task `name` (ValueError listing the valid names otherwise)."""
    _load()
    if name not in _REGISTRY:
        failed = "".join(f"; task module {m} failed to import: {e}" for m, e in _FAILED.items())
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(_REGISTRY))}"
                         + failed)
    return _REGISTRY[name]


def list_tasks() -> list[Task]:
    """All registered tasks, sorted by name."""
    _load()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


__all__ = ["Task", "TaskData", "TASK_MODULES", "get_task", "head_outputs", "list_tasks",
           "register_task"]
