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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax


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
                                                        meta=ocp.args.JsonSave(meta)),
                          metrics=metrics, force=True)
        self.manager.wait_until_finished()
        return True

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
