"""Divergence: a non-finite loss stops the run with status "diverged" at the right step
(exit code 4 on the CLI) and keeps the last good checkpoint; ``train.on_nonfinite=skip``
drops such updates instead; every JSON file the run writes is strict JSON."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from elm_jax.checkpoints.model_dir import load_model
from elm_jax.cli import main
from elm_jax.train import trainer as trainer_module
from elm_jax.train.checkpointing import RunCheckpoints
from elm_jax.train.trainer import EXIT_DIVERGED, Trainer, resolve_run

#: 12 steps: checkpoints at 4, 8, 12; evaluations at 6, 12; logs every 5 steps, so the
#: non-finite step 7 is seen only at the checkpoint of step 8.
RUN = ["train.steps=12", "train.eval_every=6", "train.checkpoint_every=4",
       "train.log_every=5", "train.keep_checkpoints=3", "task.seq_len=20",
       "task.val_size=16", "task.test_size=16"]
BAD_STEP = 7  # the update that produces step 7 (batch index 6) sees a NaN input


def _strict(text):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def nan_batch(monkeypatch):
    """The adding task's training batch of step index 6 holds a NaN."""
    task, run = resolve_run("adding", "tiny", RUN)
    data = trainer_module.task_data(task, run.task, run.train.seed)
    original = data.train_batch

    def train_batch(step, batch_size):
        batch = dict(original(step, batch_size))
        if step == BAD_STEP - 1:
            x = np.array(batch["x"], dtype=np.float32)
            x[0, 0, 0] = np.nan
            batch["x"] = x
        return batch

    monkeypatch.setattr(data, "train_batch", train_batch)


def test_a_nan_loss_stops_the_run_as_diverged_at_its_step(tmp_path, nan_batch, capsys):
    code = main(["train", "--task", "adding", "--preset", "tiny", "--workdir", str(tmp_path),
                 "--no-progress", "--set", *RUN])
    out, err = capsys.readouterr()
    assert code == EXIT_DIVERGED == 4
    assert f"diverged at step {BAD_STEP}: the loss became non-finite (loss nan)" in err
    assert "The last checkpoint (step 6) is kept" in err and "on_nonfinite=skip" in err
    assert f"diverged at step {BAD_STEP}/12" in out
    report = _strict((tmp_path / "report.json").read_text())
    assert report["status"] == "diverged" and report["step"] == BAD_STEP
    assert report["diverged"] == {"step": BAD_STEP, "loss": None, "last_checkpoint": 6}
    assert "test" not in report and not (tmp_path / "final_model").exists()
    # nothing non-finite was saved: no checkpoint after step 6, finite best model
    ckpts = RunCheckpoints(tmp_path / "checkpoints", keep=3, best_metric="mse",
                           best_mode="min")
    assert ckpts.steps() == [4, 6]
    ckpts.close()
    _, params = load_model(tmp_path / "best_model")
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(params))
    for name in ("run.json", "report.json"):
        _strict((tmp_path / name).read_text())
    records = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 6
    assert not (tmp_path / ".lock").exists()


def test_on_nonfinite_skip_drops_the_update_and_completes(tmp_path, nan_batch):
    task, run = resolve_run("adding", "tiny", [*RUN, "train.log_every=1", "train.steps=8",
                                               "train.eval_every=8", "train.checkpoint_every=8",
                                               "train.on_nonfinite=skip"])
    report = Trainer(task, run, tmp_path, progress=False).fit()
    assert report["status"] == "completed" and report["skipped_steps"] == 1
    records = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    assert train[BAD_STEP]["loss"] is None                    # NaN written as null
    assert train[BAD_STEP - 1]["skipped_steps"] == 0 and train[BAD_STEP]["skipped_steps"] == 1
    assert all(np.isfinite(train[s]["loss"]) for s in train if s != BAD_STEP)
    _, params = load_model(tmp_path / "final_model")
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(params))
    assert np.isfinite(report["test"]["mse"])
    _strict((tmp_path / "report.json").read_text())


def test_on_nonfinite_is_validated():
    with pytest.raises(ValueError, match=r"train.on_nonfinite='ignore' is invalid.*'stop', "
                                         r"'skip'"):
        resolve_run("adding", "tiny", ["train.on_nonfinite=ignore"])
