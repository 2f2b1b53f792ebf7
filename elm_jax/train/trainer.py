"""The generic trainer: any registered task, jit-compiled steps, resumable, observable.

`resolve_run` turns ``(task, preset, --set overrides)`` into a `RunConfig`; `Trainer`
runs it in a work directory::

    WORKDIR/run.json         resolved config, seed, library versions, git revision, resumes
    WORKDIR/checkpoints/     Orbax checkpoints (latest N + best by the validation metric)
    WORKDIR/best_model/      model directory of the best parameters (elm-jax predict/eval)
    WORKDIR/final_model/     model directory of the final parameters
    WORKDIR/metrics.jsonl    train / val / test records
    WORKDIR/tb/              TensorBoard event files
    WORKDIR/curves.png       training and validation curves (refreshed during training)
    WORKDIR/report.json      test metrics, parameter count, wall time, throughput, outputs
    WORKDIR/.lock            held while a process trains the run (`elm_jax.train.lock`):
                             a second process on the same workdir is refused
                             (process I > 0 of a multi-process run holds .lock.I)

Exact resumption: the training batch of step ``s`` is ``TaskData.train_batch(s)`` and
the dropout key is ``fold_in(key, s)``, so a run restored from the checkpoint of step
``s`` continues exactly as the uninterrupted run did.  SIGINT/SIGTERM finish the
current step, save a checkpoint and stop (a second SIGINT aborts at once).

Several processes (``elm-jax train --distributed``, `jax.distributed.initialize`): every
process runs this trainer on the same global batches (`put_batch` keeps its shards);
Orbax saves (checkpoints, ``best_model``, ``final_model``) are made by all processes,
the other files (run.json, metrics.jsonl, TensorBoard, plots, report.json, manifests)
by process 0 alone; a lock refused to one process stops all of them, and a signal to
any process stops all at the same step (they agree at each logged step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..checkpoints.model_dir import load_model, save_model
from ..events import is_events
from ..fileio import atomic_write_text, strict_json
from ..jax_compat import jit_cache_size
from ..models import count_model_params, describe_model, init_model, predict
from ..tasks import get_task
from ..tasks.base import Task, reduce_per_example
from ..tasks.run_config import (
    ModelOptions,
    RunConfig,
    build_model_config,
    config_diff,
    parse_overrides,
    run_config_from_dict,
)
from .checkpointing import RunCheckpoints
from .lock import LOCK_NAME, WorkdirLock, WorkdirLocked
from .observe import MetricsLog, Progress
from .optim import make_optimizer
from .parallel import (
    any_process,
    barrier,
    batch_sharding,
    check_batch_size,
    make_mesh,
    put_batch,
    replicated,
)
from .plots import plot_curves

RUN_FORMAT = "elm_jax.run/1"
#: Test hook: seconds to sleep after each training step (slows a run down so that a
#: test can interrupt it); not part of the run's configuration.
STEP_DELAY_ENV = "ELM_JAX_DEBUG_STEP_DELAY"
EXIT_INTERRUPTED = 3
#: Exit code of ``elm-jax train`` when the run diverged (non-finite loss or parameters).
EXIT_DIVERGED = 4
#: Key of the train step's "loss and parameters are finite" flag (not logged).
FINITE_KEY = "finite"


# ---------------------------------------------------------------------------- config
def resolve_run(task_name: str, preset: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> tuple[Task, RunConfig]:
    """The task and the full `RunConfig` of ``--task/--preset/--set``.

    Raises ValueError listing the valid choices for an unknown task, preset or key, and
    naming the field for an invalid value.
    """
    task = get_task(task_name)
    preset = preset or task.default_preset
    if preset not in task.presets:
        raise ValueError(f"unknown preset {preset!r} for task {task.name!r}; valid presets: "
                         f"{', '.join(task.presets)}")
    p = task.presets[preset]
    parsed = parse_overrides(list(overrides), task.config_cls)
    task_cfg = dataclasses.replace(p.task, **parsed["task"])
    option_names = {f.name for f in dataclasses.fields(ModelOptions)}
    model_kw = {k: v for k, v in p.model.items() if k not in option_names}
    options = ModelOptions(**{**{k: v for k, v in p.model.items() if k in option_names},
                              **parsed["model_options"]})
    train = dataclasses.replace(p.train, **parsed["train"])
    num_input, num_output = _io_dims(task, task_cfg, train.seed)
    model = build_model_config(model_kw, parsed["model"], num_input, num_output)
    train = dataclasses.replace(train, best_metric=train.best_metric or task.best_metric,
                                best_mode=train.best_mode or task.best_mode)
    valid_metrics = ["loss", *task.metric_fns()]
    if train.best_metric not in valid_metrics:
        raise ValueError(f"train.best_metric={train.best_metric!r} is invalid for task "
                         f"{task.name!r}: expected one of {valid_metrics}")
    return task, RunConfig(task_name=task.name, preset=preset, task=task_cfg, model=model,
                           options=options, train=train)


def check_model_options(run: RunConfig) -> None:
    """Check ``model.backend``, ``unroll``, ``remat`` and ``chunk_size`` the way
    `elm_jax.apply` will (ValueError naming the setting), without tracing anything, so
    that a bad option is refused before a work directory is written."""
    from ..apply import resolve_backend
    from ..backends.options import resolve_options
    from ..models import model_kind, sequence_model

    model = sequence_model(run.model)  # a two-tower's options go to its encoder
    if model_kind(model) != "elm":
        return  # the ELM's execution options do not apply (the LSTM ignores them)
    kwargs = run.options.apply_kwargs()
    try:
        backend = resolve_backend(kwargs.get("backend", "auto"), model)
        resolve_options(backend, **{k: kwargs[k] for k in ("unroll", "remat", "chunk_size")
                                    if k in kwargs})
    except (ValueError, TypeError) as err:
        raise ValueError(f"model.{err}") from None


_DATA_CACHE: dict[tuple, Any] = {}


def task_data(task: Task, task_cfg: Any, seed: int) -> Any:
    """``task.make_data(task_cfg, seed)``, reusing the last instance built (data can be
    expensive to open, and `resolve_run` and `Trainer.fit` both need it)."""
    key = (task.name, id(task), task_cfg, seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = task.make_data(task_cfg, seed)
    return _DATA_CACHE[key]


def _io_dims(task: Task, task_cfg: Any, seed: int) -> tuple[int, int]:
    if task.io_dims is not None:
        num_input, num_output = task.io_dims(task_cfg)
    else:
        data = task_data(task, task_cfg, seed)
        num_input, num_output = data.num_input, data.num_output
    return int(num_input), int(num_output)


# ---------------------------------------------------------------------------- steps
def _loss_terms(task: Task, run: RunConfig, params: Any, batch: dict, x: jax.Array,
                fns: dict) -> dict[str, jax.Array]:
    pred = predict(params, x, run.model, task.head, batch.get("length"),
                   **run.options.apply_kwargs())
    return {name: reduce_per_example(fn(pred, batch["y"]), task.head, run.train.burn_in)
            for name, fn in fns.items()}


def _input_dropout(x: Any, key: jax.Array, rate: float) -> Any:
    """Zero each input entry with probability `rate`, scale the rest by 1 / (1 - rate).

    For an `elm_jax.SpikeEvents` ``x`` each event is dropped independently (the same
    distribution as dense dropout of its non-zero entries, with other random draws;
    duplicate events of one entry are dropped separately).
    """
    if is_events(x):
        value = jnp.asarray(x.value).astype(jnp.float32)
        keep = jax.random.bernoulli(key, 1.0 - rate, value.shape)
        return dataclasses.replace(x, value=jnp.where(keep, value / (1.0 - rate), 0.0))
    x = x.astype(jnp.float32)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point entry of `tree` is finite (a scalar bool)."""
    flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
             if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def make_train_step(task: Task, run: RunConfig, tx: optax.GradientTransformation,
                    schedule: Any, mesh: jax.sharding.Mesh):
    """The jit-compiled ``(state, batch) -> (state, metrics)`` (state donated).

    ``metrics[FINITE_KEY]`` says whether the loss and the updated parameters are finite;
    with ``train.on_nonfinite="skip"`` a non-finite update is dropped inside the step
    (the returned parameters and optimizer state are the previous ones)."""
    cfg = run.train
    dropout_key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    loss_el = task.loss_fn()

    def loss_fn(params, batch, key):
        x = batch["x"]
        if cfg.input_dropout > 0:
            x = _input_dropout(x, key, cfg.input_dropout)
        per_example = _loss_terms(task, run, params, batch, x, {"loss": loss_el})["loss"]
        weight = batch.get("weight")
        if weight is None:
            return jnp.mean(per_example)
        return jnp.sum(weight * per_example) / jnp.maximum(jnp.sum(weight), 1e-12)

    def train_step(state, batch):
        step = state["step"]
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch,
                                                  jax.random.fold_in(dropout_key, step))
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(loss) & _all_finite(params)
        if cfg.on_nonfinite == "skip":  # drop the update: keep parameters and moments
            def keep(new, old):
                return jnp.where(finite, new, old)

            params = jax.tree_util.tree_map(keep, params, state["params"])
            opt_state = jax.tree_util.tree_map(keep, opt_state, state["opt_state"])
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": jnp.asarray(schedule(step), jnp.float32), FINITE_KEY: finite}
        return {"step": step + 1, "params": params, "opt_state": opt_state}, metrics

    repl = replicated(mesh)
    return jax.jit(train_step, in_shardings=(repl, batch_sharding(mesh)),
                   out_shardings=(repl, repl), donate_argnums=(0,))


class Evaluator:
    """Loss and metrics of parameters over a split (one jit-compiled eval step)."""

    def __init__(self, task: Task, run: RunConfig, mesh: jax.sharding.Mesh):
        self.task, self.run, self.mesh = task, run, mesh
        fns = {"loss": task.loss_fn(), **task.metric_fns()}

        def eval_step(params, batch):
            terms = _loss_terms(task, run, params, batch, batch["x"], fns)
            weight = batch.get("weight")
            if weight is None:
                weight = jnp.ones(batch["x"].shape[0], jnp.float32)
            out = {name: jnp.sum(weight * value) for name, value in terms.items()}
            out["weight"] = jnp.sum(weight)
            return out

        self.step = jax.jit(eval_step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                            out_shardings=replicated(mesh))
        self.batch_size = run.train.global_eval_batch_size
        check_batch_size(self.batch_size, mesh, "train.eval_batch_size (or batch_size)")

    def __call__(self, params: Any, data: Any, split: str, max_batches: int = 0
                 ) -> dict[str, float]:
        sums = None
        sharding = batch_sharding(self.mesh)
        for i, batch in enumerate(data.eval_batches(split, self.batch_size)):
            if max_batches and i >= max_batches:
                break
            out = self.step(params, put_batch(batch, sharding))
            sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
        if sums is None:
            raise ValueError(f"task {self.task.name!r} has no {split!r} data")
        sums = jax.device_get(sums)
        total = float(sums.pop("weight"))
        return {name: float(value) / total for name, value in sums.items()}


# ---------------------------------------------------------------------------- environment
def environment_info() -> dict[str, Any]:
    """Library versions, Python, platform, devices and the git revision of elm_jax."""
    versions = {}
    for dist in ("elm_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                 "tensorboardX", "matplotlib"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "host": platform.node(), "versions": versions, "git": git_revision(),
            "backend": jax.default_backend(), "process_count": jax.process_count(),
            "devices": [str(d) for d in jax.devices()]}


def git_revision() -> dict[str, Any] | None:
    """``{"revision", "dirty"}`` of the checkout that holds elm_jax, or None."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10)
        return {"revision": rev.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def read_run(workdir: str | Path) -> tuple[Task, RunConfig, dict[str, Any]]:
    """Task, RunConfig and the run.json of a work directory."""
    path = Path(workdir) / "run.json"
    if not path.is_file():
        raise ValueError(f"{workdir} is not an elm_jax run directory: {path} is missing")
    info = json.loads(path.read_text())
    if info.get("format") != RUN_FORMAT:
        raise ValueError(f"{path}: expected format {RUN_FORMAT!r}, got {info.get('format')!r}")
    task = get_task(info["run"]["task_name"])
    return task, run_config_from_dict(info["run"], task.config_cls), info


# ---------------------------------------------------------------------------- trainer
@dataclasses.dataclass
class _Clock:
    """Training throughput, excluding compilation, evaluation and checkpointing."""

    steps: int = 0
    seconds: float = 0.0
    window_start: float | None = None
    window_steps: int = 0
    last_rate: float | None = None

    def open(self) -> None:
        self.window_start, self.window_steps = time.perf_counter(), 0

    def tick(self) -> None:
        if self.window_start is not None:
            self.window_steps += 1

    def close(self) -> float | None:
        """Close the window (the caller has synchronised); steps per second in it."""
        if self.window_start is None:
            return None
        dt = time.perf_counter() - self.window_start
        self.window_start = None
        if self.window_steps and dt > 0:
            self.steps += self.window_steps
            self.seconds += dt
            self.last_rate = self.window_steps / dt
        return self.last_rate

    @property
    def rate(self) -> float | None:
        return self.steps / self.seconds if self.seconds > 0 else None


@dataclasses.dataclass
class _FitState:
    """What one `Trainer.fit` call carries from step to step."""

    data: Any
    state: dict[str, Any]
    ckpts: RunCheckpoints
    log: MetricsLog
    progress: Progress
    t0: float
    start: int
    step: int
    best: dict[str, Any] | None
    tokens_per_step: int
    shard: Any
    delay: float
    steps_here: int = 0
    last_loss: float | None = None
    status: str = "completed"
    clock: _Clock = dataclasses.field(default_factory=_Clock)
    #: (step, finite flag, loss) of the steps not checked yet (device values)
    pending: list[tuple[int, Any, Any]] = dataclasses.field(default_factory=list)
    skipped_steps: int = 0
    diverged: dict[str, Any] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def best_step(self) -> int | None:
        return None if self.best is None else self.best["step"]


class Trainer:
    """Train one `RunConfig` in `workdir` (see the module docstring for the layout).

    Args:
      task, run: from `resolve_run`.
      workdir: the run directory; must not hold a run unless `resume`.
      resume: continue the run in `workdir` from its latest checkpoint (its config must
        equal `run`; ValueError naming the differing fields otherwise).  Without a
        checkpoint the run starts from scratch.
      devices: devices of the data mesh (default: all).
      progress: show the progress line on stderr.
      stop_after_steps: stop as if interrupted after this many steps of this call
        (for tests and smoke runs).
      command: the command line to record in run.json.
    """

    def __init__(self, task: Task, run: RunConfig, workdir: str | Path, *,
                 resume: bool = False, devices: Any = None, progress: bool = True,
                 stop_after_steps: int | None = None, command: list[str] | None = None):
        self.task, self.run = task, run
        self.workdir = Path(workdir).absolute()
        self.resume = resume
        self.mesh = make_mesh(devices)
        self.progress_enabled = progress
        self.stop_after_steps = stop_after_steps
        self.command = command if command is not None else sys.argv
        self.is_main = jax.process_index() == 0
        self._stop: str | None = None
        self._plot_pool: ThreadPoolExecutor | None = None
        self._plot_future: Future | None = None
        self.train_step = None
        self.evaluator: Evaluator | None = None
        self._lock: WorkdirLock | None = None

    def _acquire_lock(self) -> WorkdirLock:
        """Lock the work directory (`WorkdirLocked` naming the holder if another process
        writes into it); one lock file per process of a multi-process run (process 0:
        ``.lock``, as a one-process run, so that the two exclude each other), and if
        any process is refused, all of them stop."""
        index = jax.process_index()
        lock = WorkdirLock(self.workdir, name=LOCK_NAME if index == 0 else f"{LOCK_NAME}.{index}",
                           command=self.command)
        if jax.process_count() == 1:
            return lock.acquire()
        refused: WorkdirLocked | None = None
        try:
            lock.acquire()
        except WorkdirLocked as err:
            refused = err
        if any_process(refused is not None):
            lock.release()
            raise refused or WorkdirLocked(
                f"{self.workdir} is in use: another process of this run was refused its lock "
                f"(its message names the holder)")
        return lock

    # ------------------------------------------------------------------ setup
    def _prepare_workdir(self) -> dict[str, Any]:
        run_json = self.workdir / "run.json"
        current = self.run.flat()
        if run_json.exists():
            if not self.resume:
                raise FileExistsError(f"{self.workdir} already holds a run; pass --resume to "
                                      f"continue it or choose another --workdir")
            info = json.loads(run_json.read_text())
            stored = RunConfig.flat(run_config_from_dict(info["run"], self.task.config_cls)) \
                if info.get("run", {}).get("task_name") == self.task.name else \
                {"task_name": info.get("run", {}).get("task_name")}
            diff = config_diff(stored, current)
            if diff:
                raise ValueError(f"cannot resume {self.workdir} with a different config: "
                                 + "; ".join(diff))
            info.setdefault("resumes", []).append(
                {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": self.command,
                 "environment": environment_info()})
        else:
            info = {"format": RUN_FORMAT, "run": self.run.to_dict(),
                    "seed": self.run.train.seed, "command": self.command,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "num_params": count_model_params(self.run.model),
                    "environment": environment_info()}
        barrier("elm_jax.trainer:run.json checked")  # every process read it before it changes
        if self.is_main:
            atomic_write_text(run_json, strict_json(info, indent=1))
        return info

    def _init_state(self, tx: optax.GradientTransformation) -> dict[str, Any]:
        params = init_model(jax.random.fold_in(jax.random.key(self.run.train.seed), 0),
                            self.run.model)
        repl = replicated(self.mesh)
        params = jax.device_put(params, repl)
        opt_state = jax.jit(tx.init, out_shardings=repl)(params)
        return {"step": jax.device_put(jnp.zeros((), jnp.int32), repl), "params": params,
                "opt_state": opt_state}

    def _meta(self, step: int, best: dict[str, Any] | None, skipped_steps: int = 0
              ) -> dict[str, Any]:
        return {"format": RUN_FORMAT, "run": self.run.to_dict(), "step": step, "best": best,
                "skipped_steps": skipped_steps}

    def _check_meta(self, meta: dict[str, Any], step: int) -> None:
        stored = meta.get("run", {})
        if stored.get("task_name") != self.task.name:
            raise ValueError(f"checkpoint {step} in {self.workdir} is of task "
                             f"{stored.get('task_name')!r}, not {self.task.name!r}")
        diff = config_diff(run_config_from_dict(stored, self.task.config_cls).flat(),
                           self.run.flat())
        if diff:
            raise ValueError(f"checkpoint {step} in {self.workdir} was written with a "
                             f"different config: " + "; ".join(diff))

    # ------------------------------------------------------------------ signals
    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self._stop is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop = signal.Signals(signum).name

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    # ------------------------------------------------------------------ run
    def fit(self) -> dict[str, Any]:
        """Train (or continue) the run; returns the report (also in report.json)."""
        t0 = time.perf_counter()
        cfg = self.run.train
        try:
            r = self._start(t0)
            return self._loop(r, cfg, t0)
        finally:
            if self._lock is not None:
                self._lock.release()

    def _loop(self, r: _FitState, cfg: Any, t0: float) -> dict[str, Any]:
        old_handlers = self._install_signals()
        try:
            while r.step < cfg.steps:
                metrics = self._train_once(r)
                is_last = r.step == cfg.steps
                log = r.step % cfg.log_every == 0 or is_last
                stop = self._stop_requested(r)
                evaluate = r.step % cfg.eval_every == 0 or is_last
                save = r.step % cfg.checkpoint_every == 0 or is_last or stop
                # before anything is logged, evaluated or saved: were the steps finite?
                if (log or evaluate or save) and self._diverged(r):
                    break
                if log:
                    self._log(r, metrics)
                with self._untimed(r, metrics, evaluate or save):
                    val = self._evaluate(r) if evaluate else None
                    new_best = val is not None and r.best_step == r.step
                    self._plot_if_due(r, evaluated=evaluate)
                    if save or new_best:
                        self._checkpoint(r, val)
                if stop and not is_last:
                    self._interrupted(r)
                    break
            r.progress.close()
            return self._finish(r, time.perf_counter() - t0)
        finally:
            self._close(r, old_handlers)

    def _start(self, t0: float) -> _FitState:
        """Data, optimizer, compiled steps, work directory and the (restored) state."""
        run, cfg, task = self.run, self.run.train, self.task
        check_model_options(run)  # cheap checks before anything is written
        self._lock = self._acquire_lock()  # then: a busy workdir is refused at once
        data = task_data(task, run.task, cfg.seed)
        if (data.num_input, data.num_output) != (run.model.num_input, run.model.num_output):
            raise ValueError(f"task data has num_input={data.num_input}, num_output="
                             f"{data.num_output} but the model has {run.model.num_input}, "
                             f"{run.model.num_output}")
        if task.head == "per_step" and cfg.burn_in >= data.seq_len:
            raise ValueError(f"train.burn_in={cfg.burn_in} must be below the sequence "
                             f"length {data.seq_len}")
        check_batch_size(cfg.batch_size, self.mesh, "train.batch_size")
        shapes = jax.eval_shape(lambda: init_model(jax.random.key(0), run.model))
        tx, schedule = make_optimizer(cfg, run.model, shapes)
        state = self._init_state(tx)
        self.train_step = make_train_step(task, run, tx, schedule, self.mesh)
        self.evaluator = Evaluator(task, run, self.mesh)
        self._prepare_workdir()
        ckpts = RunCheckpoints(self.workdir / "checkpoints", keep=cfg.keep_checkpoints,
                               best_metric=cfg.best_metric, best_mode=cfg.best_mode)
        start, best, notes, skipped = 0, None, [], 0
        try:
            if not self.resume and ckpts.steps():
                raise FileExistsError(f"{self.workdir / 'checkpoints'} holds checkpoints; "
                                      f"pass --resume or choose another --workdir")
            restored = ckpts.restore_latest(state, self._check_meta) if self.resume else None
            if restored is not None:
                latest, meta, state, notes = restored
                start, best = int(latest), meta.get("best")
                skipped = int(meta.get("skipped_steps", 0))
        except BaseException:
            ckpts.close()
            raise
        log = MetricsLog(self.workdir, resume_step=start, enabled=self.is_main)
        progress = Progress(cfg.steps, start, enabled=self.progress_enabled and self.is_main,
                            messages=self.is_main)
        if self._lock.took_over:
            notes.insert(0, f"took over the stale lock of {self._lock.took_over} (not "
                            f"running any more)")
        for note in notes:
            progress.message(f"warning: {note}")
        if start:
            progress.message(f"resuming {self.workdir} from step {start}")
        self._plot_pool, self._plot_future = ThreadPoolExecutor(max_workers=1), None
        return _FitState(data=data, state=state, ckpts=ckpts, log=log, progress=progress,
                         t0=t0, start=start, step=start, best=best,
                         tokens_per_step=cfg.batch_size * data.seq_len,
                         shard=batch_sharding(self.mesh),
                         delay=float(os.environ.get(STEP_DELAY_ENV, "0") or 0),
                         warnings=list(notes), skipped_steps=skipped)

    def _train_once(self, r: _FitState) -> dict[str, jax.Array]:
        """One optimizer step (device metrics, not synchronised)."""
        batch = put_batch(r.data.train_batch(r.step, self.run.train.batch_size), r.shard)
        r.state, metrics = self.train_step(r.state, batch)
        r.step += 1
        r.pending.append((r.step, metrics.pop(FINITE_KEY), metrics["loss"]))
        r.steps_here += 1
        r.clock.tick()
        if r.delay:
            time.sleep(r.delay)
        if r.steps_here == 1:  # compiled: time the rest
            jax.block_until_ready(metrics)
            r.clock.open()
        return metrics

    def _log(self, r: _FitState, metrics: dict[str, jax.Array]) -> None:
        """A train record (metrics.jsonl, TensorBoard) and the progress line."""
        host = jax.device_get(metrics)
        rate = r.clock.close()
        r.last_loss = float(host["loss"])
        record = {k: float(v) for k, v in host.items()}
        if self.run.train.on_nonfinite == "skip":
            record["skipped_steps"] = r.skipped_steps
        if rate:
            record.update(steps_per_s=rate, tokens_per_s=rate * r.tokens_per_step)
        record["elapsed_s"] = time.perf_counter() - r.t0
        r.log.write("train", r.step, record)
        eta = (self.run.train.steps - r.step) / rate if rate else None
        r.progress.update(r.step, r.last_loss, rate * r.tokens_per_step if rate else None, eta)
        r.clock.open()

    def _diverged(self, r: _FitState) -> bool:
        """Check the steps since the last check (one transfer); True if the run must
        stop because one was non-finite (``train.on_nonfinite="stop"``); with "skip"
        count the dropped updates instead."""
        if not r.pending:
            return False
        steps, finite, losses = zip(*r.pending, strict=True)
        finite = jax.device_get(finite)
        r.pending.clear()
        bad = [i for i, ok in enumerate(finite) if not ok]
        if not bad:
            return False
        if self.run.train.on_nonfinite == "skip":
            r.skipped_steps += len(bad)
            r.progress.message(f"warning: dropped the update of step(s) "
                               f"{', '.join(str(steps[i]) for i in bad)}: non-finite loss or "
                               f"parameters (train.on_nonfinite=skip)")
            return False
        first = bad[0]
        loss = float(jax.device_get(losses[first]))
        last = r.ckpts.latest_step()
        r.status, r.step = "diverged", steps[first]
        r.diverged = {"step": steps[first], "loss": loss,
                      "last_checkpoint": None if last is None else int(last)}
        r.progress.message(
            f"diverged at step {steps[first]}: the "
            f"{'loss' if not np.isfinite(loss) else 'updated parameters'} became non-finite "
            f"(loss {loss:.4g}); stopped. "
            + (f"The last checkpoint (step {last}) is kept. " if last is not None else "")
            + "Lower train.learning_rate (or clip the gradients: train.grad_clip), or set "
              "train.on_nonfinite=skip to drop such updates")
        return True

    def _stop_requested(self, r: _FitState) -> bool:
        if self.stop_after_steps is not None and r.steps_here >= self.stop_after_steps:
            return True
        if jax.process_count() == 1:
            return self._stop is not None
        # all processes must stop (and save) at the same step: a signal to any of them
        # stops all at the next logged step (one small collective there)
        cfg = self.run.train
        if r.step % cfg.log_every and r.step != cfg.steps:
            return False
        if any_process(self._stop is not None):
            self._stop = self._stop or "a signal to another process of the run"
            return True
        return False

    @contextlib.contextmanager
    def _untimed(self, r: _FitState, metrics: Any, pause: bool):
        """Exclude evaluation and checkpointing (when `pause`) from the throughput."""
        if pause:
            jax.block_until_ready(metrics)
            r.clock.close()
        yield
        if pause:
            r.clock.open()

    def _evaluate(self, r: _FitState) -> dict[str, float]:
        """Validate; track (and export) the best parameters; show the metrics."""
        cfg = self.run.train
        val = self.evaluator(r.state["params"], r.data, "val", cfg.eval_batches)
        r.log.write("val", r.step, val)
        if self._improved(val, r.best):
            r.best = {"step": r.step, "metric": cfg.best_metric, "value": val[cfg.best_metric]}
            # every process: an Orbax save (process 0 writes the files)
            self._export(self.workdir / "best_model", r.state["params"], r.step, val)
        r.progress.update(r.step, r.last_loss, None, None, extra=_fmt_val(val), force=True)
        return val

    def _plot_if_due(self, r: _FitState, evaluated: bool) -> None:
        every = self.run.train.plot_every
        if self.is_main and ((evaluated and every == 0) or (every and r.step % every == 0)):
            self._plot(r.log.records)

    def _checkpoint(self, r: _FitState, val: dict[str, float] | None) -> None:
        r.ckpts.save(r.step, r.state, self._meta(r.step, r.best, r.skipped_steps), val)

    def _interrupted(self, r: _FitState) -> None:
        r.status = "interrupted"
        why = self._stop or f"--stop-after-steps {self.stop_after_steps}"
        r.progress.message(f"stopped at step {r.step} ({why}); checkpoint saved in "
                           f"{self.workdir / 'checkpoints'}; continue with --resume")

    def _close(self, r: _FitState, old_handlers: dict[int, Any]) -> None:
        for sig, old in old_handlers.items():
            signal.signal(sig, old)
        r.log.close()
        r.ckpts.close()
        if self._plot_future is not None:
            self._plot_future.result()
        self._plot_pool.shutdown(wait=True)

    def _improved(self, val: dict[str, float], best: dict[str, Any] | None) -> bool:
        value = val[self.run.train.best_metric]
        if not np.isfinite(value):
            return False
        if best is None:
            return True
        return value < best["value"] if self.run.train.best_mode == "min" else \
            value > best["value"]

    def _export(self, path: Path, params: Any, step: int, val: dict[str, float] | None) -> None:
        save_model(path, self.run.model, jax.device_get(params), overwrite=True,
                   extra={"run": self.run.to_dict(), "step": step, "val": val})

    def _plot(self, records: list[dict[str, Any]], wait: bool = False) -> None:
        """Refresh curves.png in a background thread (skipped while one is drawing)."""
        if self._plot_future is not None:
            if not self._plot_future.done() and not wait:
                return
            self._plot_future.result()
        ref = dict(self.task.plot_reference)
        title = (f"{self.task.name} / {self.run.preset}: {describe_model(self.run.model)}, "
                 f"{count_model_params(self.run.model)} params")
        self._plot_future = self._plot_pool.submit(
            plot_curves, self.workdir / "curves.png", [dict(r) for r in records], title, ref)
        if wait:
            self._plot_future.result()

    def _finish(self, r: _FitState, wall: float) -> dict[str, Any]:
        """Test metrics (best and final parameters), the final model and the report."""
        run, cfg = self.run, self.run.train
        report: dict[str, Any] = {
            "task": run.task_name, "preset": run.preset, "status": r.status, "step": r.step,
            "steps": cfg.steps, "resumed_from": r.start or None,
            "num_params": count_model_params(run.model), "best_val": r.best,
            "devices": self.mesh.devices.size, "backend": jax.default_backend(),
        }
        if r.warnings:
            report["warnings"] = r.warnings
        if r.diverged is not None:
            report["diverged"] = r.diverged
        if self.run.train.on_nonfinite == "skip":
            report["skipped_steps"] = r.skipped_steps
        if r.status == "completed":
            report.update(self._test(r))
        rate = r.clock.rate
        report.update(
            wall_time_s=wall, train_time_s=r.clock.seconds,
            steps_per_s=rate, tokens_per_s=rate * r.tokens_per_step if rate else None,
            tokens_per_step=r.tokens_per_step,
            compiled={"train_step": jit_cache_size(self.train_step),
                      "eval_step": jit_cache_size(self.evaluator.step)},
            workdir=str(self.workdir))
        if self.is_main:
            self._plot(r.log.records, wait=True)
            report["outputs"] = self._outputs()
            atomic_write_text(self.workdir / "report.json", json_dumps(report))
        return report

    def _test(self, r: _FitState) -> dict[str, Any]:
        """Test metrics of the best and the final parameters, the final model export and
        the task's final evaluation (of the best parameters)."""
        run = self.run
        final_params = r.state["params"]
        test_final = self.evaluator(final_params, r.data, "test")
        test_best, best_params = test_final, final_params
        best_dir = self.workdir / "best_model"
        if r.best is not None and best_dir.exists() and r.best["step"] != r.step:
            _, best_params = load_model(best_dir, run.model)
            best_params = jax.device_put(best_params, replicated(self.mesh))
            test_best = self.evaluator(best_params, r.data, "test")
        r.log.write("test", r.step, {**test_best, "params": "best"})
        r.log.write("test", r.step, {**test_final, "params": "final"})
        # every process: an Orbax save (process 0 writes the files)
        self._export(self.workdir / "final_model", final_params, r.step, None)
        out: dict[str, Any] = {"test": test_best, "test_final": test_final}
        if self.task.final_evaluation is not None and self.is_main:
            out["final_evaluation"] = self.task.final_evaluation(
                run.task, run.model, jax.device_get(best_params),
                out_dir=self.workdir / "final_evaluation", split="test",
                apply_kwargs=run.options.apply_kwargs())
        return out

    def _outputs(self) -> dict[str, str]:
        """Where the run's outputs are (those that exist)."""
        names = {"report": "report.json", "metrics": "metrics.jsonl", "curves": "curves.png",
                 "final_evaluation": "final_evaluation", "best_model": "best_model",
                 "final_model": "final_model", "checkpoints": "checkpoints",
                 "tensorboard": "tb", "run": "run.json"}
        paths = {key: self.workdir / name for key, name in names.items()}
        return {key: str(path) for key, path in paths.items()
                if path.exists() or key == "report"}


def _json_default(value: Any) -> Any:
    # NumPy / JAX values are already plain (`strict_json` runs `json_safe`)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: Any) -> str:
    """Strict JSON text of a report (NumPy/JAX values and paths converted, NaN and inf
    written as null)."""
    return strict_json(value, indent=1, default=_json_default)


def _fmt_val(val: dict[str, float]) -> str:
    return "val " + " ".join(f"{k} {v:.4g}" for k, v in val.items())


def evaluate_params(task: Task, run: RunConfig, params: Any, split: str = "test",
                    devices: Any = None) -> dict[str, float]:
    """Metrics of `params` on a split of the run's task data."""
    mesh = make_mesh(devices)
    data = task_data(task, run.task, run.train.seed)
    evaluator = Evaluator(task, run, mesh)
    return evaluator(jax.device_put(params, replicated(mesh)), data, split)
