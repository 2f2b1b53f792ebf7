"""The NeuronIO task: teacher data on first use, training through the generic trainer,
and the published evaluation in the final report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_shared
from elm_jax.tasks import get_task
from elm_jax.tasks.neuronio import NeuronIOTaskConfig, NeuronIOTaskData, ensure_teacher_data
from elm_jax.train.trainer import Trainer, resolve_run

TINY_DATA = ["task.teacher_sims_per_file=2", "task.teacher_duration_ms=1200",
             "task.window=200", "task.eval_windows_per_sim=1"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ELM_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_preset_trains_and_reports_published_metrics(tmp_path, cache):
    task, run = resolve_run("neuronio", "tiny", [])
    report = Trainer(task, run, tmp_path / "run", progress=False).fit()
    final = report["final_evaluation"]
    for key in ("AUC", "TP @ 0.0025 FP", "TP @ 0.0100 FP", "soma_RMSE", "soma_MAE",
                "soma_explained_variance_percent"):
        assert np.isfinite(final[key]), key
    assert (tmp_path / "run" / "final_evaluation" / "neuronio_eval_simulation.png").exists()
    assert json.loads((tmp_path / "run" / "report.json").read_text())["final_evaluation"]
    # the teacher data was generated once, completely, under the cache
    roots = list(cache.iterdir())
    assert len(roots) == 1 and (roots[0] / "COMPLETE").exists()


def test_teacher_data_is_reused_and_batches_are_deterministic(cache):
    cfg = NeuronIOTaskConfig(teacher="lif", teacher_train_files=1, teacher_sims_per_file=2,
                             teacher_duration_ms=1200, window=200, eval_windows_per_sim=2)
    root = ensure_teacher_data(cfg)
    stamp = (root / "COMPLETE").stat().st_mtime_ns
    assert ensure_teacher_data(cfg) == root and (root / "COMPLETE").stat().st_mtime_ns == stamp
    a, b = NeuronIOTaskData(cfg, seed=3), NeuronIOTaskData(cfg, seed=3)
    batch_a, batch_b = a.train_batch(5, 4), b.train_batch(5, 4)
    np.testing.assert_array_equal(batch_a["x"], batch_b["x"])
    np.testing.assert_array_equal(batch_a["y"], batch_b["y"])
    assert batch_a["x"].shape == (4, 200, 1278) and batch_a["x"].dtype == np.int8
    assert batch_a["y"].shape == (4, 200, 2)
    assert set(np.unique(batch_a["y"][..., 0])) <= {0.0, 1.0}
    val = list(a.eval_batches("val", 3))
    assert sum(float(v["weight"].sum()) for v in val) == 2 * 2  # 2 sims x 2 windows
    assert val[-1]["weight"][-1] == 0.0  # padded row


def test_neuronio_presets_are_listed_and_validated():
    task = get_task("neuronio")
    assert {"small", "tiny", "paper_branch_dm15", "paper_branch_dm20",
            "paper_elm_dm20"} <= set(task.presets)
    _, run = resolve_run("neuronio", "paper_branch_dm15", [])
    assert run.model.num_memory == 15 and run.model.routing == "neuronio"
    assert run.train.learning_rate == 5e-4 and run.train.batch_size == 8
    with pytest.raises(ValueError, match="task.teacher='hh' is invalid"):
        resolve_run("neuronio", "tiny", ["task.teacher=hh"])


def test_real_data_through_the_task(tmp_path):
    data_dir = require_shared("data", "neuronio_l5pc")
    cfg = NeuronIOTaskConfig(data_dir=str(data_dir), eval_windows_per_sim=1)
    data = NeuronIOTaskData(cfg, seed=0)
    assert data.num_input == 1278
    batch = data.train_batch(0, 2)
    assert batch["x"].shape == (2, 500, 1278)
    # no Data_test folder in the small real set: validation stands in for the test split
    test = list(data.eval_batches("test", 4))
    assert sum(float(b["weight"].sum()) for b in test) == 2


def test_eval_cli_on_a_converted_published_checkpoint(tmp_path):
    from elm_jax.cli import main

    ref = require_shared("reference", "best_elm_neuron")
    data_dir = require_shared("data", "neuronio_l5pc")
    model = tmp_path / "best"
    assert main(["convert", "--torch-checkpoint", str(ref / "neuronio_best_model_state.pt"),
                 "--config", str(ref / "model_config.json"), "--out", str(model)]) == 0
    out = tmp_path / "report.json"
    assert main(["eval", "--task", "neuronio", "--checkpoint", str(model), "--data-dir",
                 str(data_dir), "--out", str(out), "--plots", str(tmp_path / "plots")]) == 0
    report = json.loads(out.read_text())
    for key in ("AUC", "TP @ 0.0025 FP", "TP @ 0.0100 FP", "soma_RMSE", "soma_MAE",
                "soma_explained_variance_percent"):
        assert key in report
    assert report["AUC"] >= 0.99
    assert (tmp_path / "plots" / "neuronio_eval_simulation.png").exists()
