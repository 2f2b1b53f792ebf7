"""Orbax training checkpoints of a run: ``WORKDIR/checkpoints/<step>/{state,meta}``.

Each checkpoint holds the train state (step, parameters, optimizer state; Orbax
``StandardSave``) and a JSON ``meta`` item (the `RunConfig`, the best validation value
so far and its step).  An `ocp.CheckpointManager` keeps the ``keep_checkpoints`` most
recent ones plus the best one by the validation metric (its preservation policies
`LatestN` and `BestN`).  Saves are synchronous.

Atomicity: Orbax writes a step into a temporary directory
(``<step>.orbax-checkpoint-tmp-*``) and renames it into place only when every item
is written (then deletes checkpoints that fell out of the policies), so an interrupted
or failed save leaves the previous checkpoints intact; the temporary directories of a
crashed save are ignored when listing steps and removed when the manager is next
created (``cleanup_tmp_directories``).

Integrity: once a step is saved, ``<step>/manifest.json`` records the size and sha256
of each of its files (`elm_jax.fileio.write_manifest`, written atomically after
Orbax's rename).  `RunCheckpoints.restore_latest` (``--resume``) takes the newest
checkpoint that is intact: one whose files do not match its manifest, or that Orbax
cannot read (an empty step folder, a missing ``state`` item, truncated metadata), is
skipped with a note naming it and moved to ``checkpoints.damaged/<step>`` (so that the
resumed run can save that step again); only when no checkpoint is intact does it fail
(`CorruptFilesError` naming each one and its files).  A checkpoint without a manifest
(written by an earlier version, or by a process killed between Orbax's rename and the
manifest) is used if Orbax reads it, with a note that it is unverified.

Several processes (``jax.process_count() > 1``): every process makes the same calls
(Orbax synchronises its saves and restores); process 0 alone writes the manifests and
moves damaged checkpoints aside, and the others wait for it at a barrier.  Every process
checks the same files, so all resume from the same step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from ..fileio import (
    CorruptFilesError,
    format_problems,
    json_safe,
    manifest_problems,
    write_manifest,
)
from .parallel import barrier


def _ocp():
    import orbax.checkpoint as ocp  # slow to import: only when checkpointing

    return ocp


def metric_key(name: str) -> str:
    return f"val_{name}"


class RunCheckpoints:
    """The checkpoint manager of one run directory."""

    def __init__(self, directory: str | Path, *, keep: int, best_metric: str,
                 best_mode: str):
        ocp = _ocp()
        cm = ocp.checkpoint_managers
        key = metric_key(best_metric)
        policy = cm.AnyPreservationPolicy([
            cm.LatestN(n=keep),
            cm.BestN(get_metric_fn=lambda metrics: metrics[key], reverse=best_mode == "min",
                     n=1, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=False,
            cleanup_tmp_directories=True, create=True)
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any],
             val_metrics: dict[str, float] | None = None) -> bool:
        """Save `state` and `meta` at `step` (no-op if that step is already saved)."""
        ocp = _ocp()
        if step in self.manager.all_steps():
            return False
        metrics = None
        if val_metrics is not None and self.best_metric in val_metrics:
            metrics = {metric_key(self.best_metric): float(val_metrics[self.best_metric])}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(json_safe(meta))),
                          metrics=metrics, force=True)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:  # Orbax has synchronised: the step is complete
            write_manifest(self.step_dir(step))
        barrier(f"elm_jax.checkpoint:{self.directory}:{step}:manifest")
        return True

    def step_dir(self, step: int) -> Path:
        """The directory of a saved step (Orbax's default step names: the number)."""
        return self.directory / str(step)

    def restore_latest(self, like: Any, check_meta: Callable[[dict, int], None] | None = None
                       ) -> tuple[int, dict[str, Any], Any, list[str]] | None:
        """Restore the newest intact checkpoint (see the module docstring).

        Args:
          like: the state structure, dtypes and shardings to restore into.
          check_meta: called with ``(meta, step)`` before the state is restored; its
            exceptions (e.g. a config mismatch) propagate: they are not damage.
        Returns: ``(step, meta, state, notes)``, the notes being one line per skipped
          (damaged) or unverified checkpoint; None when there is no checkpoint.
        Raises: `CorruptFilesError` naming each checkpoint and what is wrong with it
          when none is intact.
        """
        damaged: list[tuple[int, str]] = []
        for step in reversed(self.steps()):
            where = self.step_dir(step)
            problems = manifest_problems(where)
            if problems:
                damaged.append((step, format_problems(problems)))
                continue
            try:
                meta = self.restore_meta(step)
            except Exception as err:  # noqa: BLE001 - Orbax raises many types on damage
                damaged.append((step, _orbax_error(where, err)))
                continue
            if check_meta is not None:
                check_meta(meta, step)
            try:
                state = self.restore_state(step, like)
            except Exception as err:  # noqa: BLE001
                damaged.append((step, _orbax_error(where, err)))
                continue
            notes = []
            if problems is None:
                notes.append(f"checkpoint {where} has no manifest.json (written by an "
                             f"earlier version or interrupted): it is not verified")
            if damaged:
                aside = self._set_aside([s for s, _ in damaged])
                skipped = [f"skipped damaged checkpoint {self.step_dir(s)} ({why}); moved "
                           f"to {aside}" for s, why in damaged]
                notes = [*skipped, f"resuming from the newest intact checkpoint, step {step}",
                         *notes]
            return step, meta, state, notes
        if damaged:
            raise CorruptFilesError(
                f"no intact checkpoint in {self.directory}: " + " | ".join(
                    f"step {s}: {why}" for s, why in damaged)
                + "; delete the damaged ones (or the whole --workdir) to start again")
        return None

    def _set_aside(self, steps: list[int]) -> Path:
        """Move damaged step directories to ``<directory>.damaged/`` (process 0)."""
        aside = self.directory.with_name(self.directory.name + ".damaged")
        if jax.process_index() == 0:
            aside.mkdir(exist_ok=True)
            for step in steps:
                target = aside / str(step)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(self.step_dir(step), target)
        barrier(f"elm_jax.checkpoint:{self.directory}:set_aside")
        self.manager.reload()
        return aside

    def restore_meta(self, step: int) -> dict[str, Any]:
        ocp = _ocp()
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore_state(self, step: int, like: Any) -> Any:
        """Restore the state of `step` into the structure, dtypes and shardings of `like`."""
        ocp = _ocp()
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return restored["state"]

    def close(self) -> None:
        self.manager.close()


def _orbax_error(where: Path, err: Exception) -> str:
    """A one-line description of why Orbax could not read a checkpoint."""
    text = " ".join(str(err).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{where} could not be read ({type(err).__name__}: {text})"
