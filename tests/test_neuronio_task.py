"""The NeuronIO task: teacher data on first use, training through the generic trainer,
and the published evaluation in the final report."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from helpers import require_shared
from elm_jax.events import SpikeEvents
from elm_jax.models import apply_model, init_model
from elm_jax.tasks import get_task
from elm_jax.tasks.neuronio.task import NeuronIOTaskConfig, NeuronIOTaskData, ensure_teacher_data
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
    # one compilation each, validation and test share the event capacity
    assert report["compiled"] == {"train_step": 1, "eval_step": 1}
    # the teacher data was generated once, completely, under the cache, and every
    # parsed file was cached beside it (the sampler revisits files)
    roots = sorted(p.name for p in cache.iterdir())
    assert len(roots) == 2 and roots[0] == "neuronio-npz"
    assert (cache / roots[1] / "COMPLETE").exists()
    teacher_files = list((cache / roots[1]).rglob("*.p"))
    assert len(list((cache / "neuronio-npz").glob("*.npz"))) == len(teacher_files)


def test_short_run_beats_the_best_constant_predictor(tmp_path, cache):
    # the tiny preset trained for 150 steps (seconds): the test soma MSE must beat the
    # best constant prediction (the test targets' own mean, i.e. their variance) by 2x
    steps = ["train.steps=150", "train.eval_every=150", "train.checkpoint_every=150",
             "train.log_every=50"]
    task, run = resolve_run("neuronio", "tiny", steps)
    report = Trainer(task, run, tmp_path / "run", progress=False).fit()
    data = NeuronIOTaskData(run.task, 0)
    soma = np.concatenate([b["y"][..., 1][b["weight"] > 0].ravel()
                           for b in data.eval_batches("test", 4)])
    constant_mse = float(soma.var())
    assert report["test"]["soma_mse"] < 0.5 * constant_mse, (report["test"], constant_mse)


def test_parsed_file_cache_setting():
    assert NeuronIOTaskConfig(cache_dir="none").parsed_cache() is None
    assert str(NeuronIOTaskConfig(cache_dir="/x/y").parsed_cache()) == "/x/y"
    assert NeuronIOTaskConfig().parsed_cache().name == "neuronio-npz"


def test_teacher_data_is_reused_and_batches_are_deterministic(cache):
    cfg = NeuronIOTaskConfig(teacher="lif", teacher_train_files=1, teacher_sims_per_file=2,
                             teacher_duration_ms=1200, window=200, eval_windows_per_sim=2)
    root = ensure_teacher_data(cfg)
    stamp = (root / "COMPLETE").stat().st_mtime_ns
    assert ensure_teacher_data(cfg) == root and (root / "COMPLETE").stat().st_mtime_ns == stamp
    assert cfg.input_format == "events"
    a, b = NeuronIOTaskData(cfg, seed=3), NeuronIOTaskData(cfg, seed=3)
    batch_a, batch_b = a.train_batch(5, 4), b.train_batch(5, 4)
    for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(batch_a),
                              jax.tree_util.tree_leaves(batch_b)):
        np.testing.assert_array_equal(leaf_a, leaf_b)
    assert isinstance(batch_a["x"], SpikeEvents) and batch_a["x"].dtype == np.int8
    assert batch_a["x"].shape == (4, 200, 1278)
    # the dense format holds the same input
    dense = NeuronIOTaskData(dataclasses.replace(cfg, input_format="dense"), seed=3)
    batch_d = dense.train_batch(5, 4)
    assert batch_d["x"].shape == (4, 200, 1278) and batch_d["x"].dtype == np.int8
    np.testing.assert_array_equal(batch_a["x"].to_dense(), batch_d["x"])
    np.testing.assert_array_equal(batch_a["y"], batch_d["y"])
    assert batch_a["y"].shape == (4, 200, 2)
    assert set(np.unique(batch_a["y"][..., 0])) <= {0.0, 1.0}
    val = list(a.eval_batches("val", 3))
    assert sum(float(v["weight"].sum()) for v in val) == 2 * 2  # 2 sims x 2 windows
    assert val[-1]["weight"][-1] == 0.0  # padded row
    # evaluation batches: one capacity for the split, the same input as the dense ones
    assert len({v["x"].capacity for v in val}) == 1
    for ev, de in zip(val, dense.eval_batches("val", 3), strict=True):
        np.testing.assert_array_equal(ev["x"].to_dense(), de["x"])
        np.testing.assert_array_equal(ev["y"], de["y"])
        np.testing.assert_array_equal(ev["weight"], de["weight"])


def test_neuronio_presets_are_listed_and_validated():
    task = get_task("neuronio")
    assert {"small", "tiny", "paper_branch_dm15", "paper_branch_dm20",
            "paper_elm_dm20"} <= set(task.presets)
    _, run = resolve_run("neuronio", "paper_branch_dm15", [])
    assert run.model.num_memory == 15 and run.model.routing == "neuronio"
    assert run.train.learning_rate == 5e-4 and run.train.batch_size == 8
    with pytest.raises(ValueError, match="task.teacher='hh' is invalid"):
        resolve_run("neuronio", "tiny", ["task.teacher=hh"])
    with pytest.raises(ValueError, match="task.input_format='sparse' is invalid.*events"):
        resolve_run("neuronio", "tiny", ["task.input_format=sparse"])


def test_events_and_dense_batches_give_the_same_outputs(cache):
    # CI version of the slow trainer comparison below: one training batch of each
    # format through the tiny preset's model
    outputs = {}
    for fmt in ("events", "dense"):
        task, run = resolve_run("neuronio", "tiny", [f"task.input_format={fmt}"])
        batch = task.make_data(run.task, 0).train_batch(0, 2)
        assert isinstance(batch["x"], SpikeEvents) == (fmt == "events")
        params = init_model(jax.random.key(0), run.model)
        outputs[fmt] = np.asarray(apply_model(params, batch["x"], run.model))
    np.testing.assert_allclose(outputs["events"], outputs["dense"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_events_and_dense_inputs_train_alike(tmp_path, cache):
    # the same tiny run (train steps, validation, test) with both input formats:
    # equal up to float32 rounding (the routing sums in another order)
    records = {}
    for fmt in ("events", "dense"):
        task, run = resolve_run("neuronio", "tiny", [f"task.input_format={fmt}",
                                                     "train.steps=4", "train.eval_every=2",
                                                     "train.checkpoint_every=4"])
        Trainer(task, run, tmp_path / fmt, progress=False).fit()
        lines = (tmp_path / fmt / "metrics.jsonl").read_text().splitlines()
        records[fmt] = [json.loads(line) for line in lines]
    events, dense = records["events"], records["dense"]
    assert [(r["kind"], r["step"]) for r in events] == [(r["kind"], r["step"]) for r in dense]
    assert {r["kind"] for r in events} >= {"train", "val", "test"}
    for a, b in zip(events, dense):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, err_msg=str(a))


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


def test_eval_needs_only_the_test_folder(tmp_path, cache, capsys):
    """`elm-jax eval --task neuronio` on a folder holding only Data_test/ (no training
    or validation folders) evaluates it; training from it names the missing folders."""
    from elm_jax import ELMConfig, init_params
    from elm_jax.checkpoints.model_dir import save_model
    from elm_jax.cli import main
    from elm_jax.tasks.neuronio import teacher

    data = tmp_path / "data"
    teacher.generate_file(data / "Data_test", num_sims=2, duration_ms=1300, seed=4)
    config = ELMConfig.preset("neuronio_branch_dm2")
    model = save_model(tmp_path / "model", config, init_params(jax.random.key(0), config))
    out = tmp_path / "report.json"
    assert main(["eval", "--task", "neuronio", "--checkpoint", str(model), "--data-dir",
                 str(data), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["num_simulations"] == 2
    task_data = NeuronIOTaskData(NeuronIOTaskConfig(data_dir=str(data)), seed=0)
    with pytest.raises(FileNotFoundError, match="full_ergodic_train_batch_2"):
        task_data.train_batch(0, 2)
