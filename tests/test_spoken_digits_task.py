"""The ``shd`` and ``shd_adding`` tasks: tiny presets through the real trainer on SYNTHETIC
data, events vs dense input, the splits, the evaluation CLI and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from elm_jax.apply import apply
from elm_jax.cli import main
from elm_jax.params import init_params
from elm_jax.tasks import get_task
from elm_jax.tasks.base import cross_entropy
from elm_jax.tasks.spoken_digits.formats import read_shd
from elm_jax.tasks.spoken_digits.synthetic import write_synthetic, write_synthetic_shd
from elm_jax.tasks.spoken_digits.task import SpokenDigitsData, SpokenDigitsTaskConfig
from elm_jax.train.trainer import Trainer, resolve_run

#: the shd tiny preset's task options
TINY = {"bin_ms": 50, "synthetic_train": 48, "synthetic_test": 16, "synthetic_classes": 4}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The ``shd`` tiny preset trained (4 steps) on SYNTHETIC data."""
    task, run = resolve_run("shd", "tiny", [])
    workdir = tmp_path_factory.mktemp("shd") / "run"
    return run, workdir, Trainer(task, run, workdir, progress=False).fit()


def test_shd_tiny_trains_and_reports_classification_metrics(tiny_run):
    run, workdir, report = tiny_run
    assert report["status"] == "completed" and report["step"] == 4
    assert run.model.num_output == 4 and run.model.num_input == 700
    assert report["best_val"]["metric"] == "accuracy"
    final = report["final_evaluation"]
    assert final["num_examples"] == 16 and "SYNTHETIC" in final["data"]
    assert 0.0 <= final["accuracy"] <= 1.0
    assert final["accuracy"] == pytest.approx(report["test"]["accuracy"])
    confusion = np.array(final["confusion_matrix"])
    assert confusion.shape == (4, 4) and confusion.sum() == 16
    per_class = final["per_class_accuracy"]
    assert list(per_class) == [f"synthetic-english-{w}" for w in ("zero", "one", "two",
                                                                    "three")]
    # per-class accuracies weighted by class counts give the accuracy
    counts = confusion.sum(1)
    assert sum(per_class[k] * c for k, c in zip(per_class, counts)) / 16 == \
        pytest.approx(final["accuracy"])
    assert (workdir / "final_evaluation" / "confusion_matrix.png").stat().st_size > 1000
    # validation and test share one event capacity: one compiled evaluation step
    assert report["compiled"] == {"train_step": 1, "eval_step": 1}


def test_shd_adding_tiny_trains_with_19_classes_on_pairs(tmp_path):
    task, run = resolve_run("shd_adding", "tiny", [])
    assert run.model.num_output == 19
    data = SpokenDigitsData(run.task, 0, adding=True)
    assert data.seq_len == 2 * 20
    batch = data.train_batch(0, 4)
    assert batch["x"].num_steps == 40 and batch["y"].min() >= 0 and batch["y"].max() <= 6
    report = Trainer(task, run, tmp_path / "run", progress=False).fit()
    final = report["final_evaluation"]
    # 2 fixed test batches of 4 pairs (train.eval_batch_size = batch_size = 4)
    assert final["num_examples"] == 8 and len(final["per_class_accuracy"]) == 19
    assert final["accuracy"] == pytest.approx(report["test"]["accuracy"])
    assert (tmp_path / "run" / "final_evaluation" / "confusion_matrix.png").exists()


def test_events_and_dense_input_give_the_same_loss_at_step_0():
    _task, run = resolve_run("shd", "tiny", [])
    params = init_params(jax.random.PRNGKey(0), run.model)
    losses = []
    for fmt in ("events", "dense"):
        cfg = SpokenDigitsTaskConfig(**TINY, input_format=fmt)
        batch = SpokenDigitsData(cfg, seed=3).train_batch(0, 4)
        y = apply(params, batch["x"], run.model)
        losses.append(float(np.mean(cross_entropy(y[:, -1], batch["y"]))))
    assert np.isfinite(losses[0])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_splits_validation_held_out_speaker_and_missing_test_file(tmp_path):
    write_synthetic(tmp_path / "fsdd_like_train.h5", 60, num_classes=3, num_speakers=3)
    cfg = SpokenDigitsTaskConfig(data_dir=str(tmp_path), bin_ms=50)
    data = SpokenDigitsData(cfg)
    train, val, test = (data.splits[s][1] for s in ("train", "val", "test"))
    assert len(train) + len(val) == 60 and not set(train) & set(val)
    assert np.array_equal(test, val) and "no test file" in data.test_note
    held = SpokenDigitsData(SpokenDigitsTaskConfig(data_dir=str(tmp_path), bin_ms=50,
                                                   hold_out_speaker=1))
    ds = held.splits["test"][0]
    assert set(ds.speakers[held.splits["test"][1]]) == {1}
    assert 1 not in set(ds.speakers[held.splits["train"][1]])
    assert 1 not in set(ds.speakers[held.splits["val"][1]])
    assert "speaker 1" in held.test_note
    with pytest.raises(ValueError, match="speakers present are"):
        SpokenDigitsData(SpokenDigitsTaskConfig(data_dir=str(tmp_path), hold_out_speaker=7))


def test_eval_cli_on_a_test_file_and_on_a_folder(tiny_run, tmp_path, capsys):
    _, workdir, _ = tiny_run
    files = write_synthetic_shd(tmp_path / "data", num_train=8, num_test=12, num_classes=4)
    out = tmp_path / "eval" / "report.json"
    assert main(["eval", "--task", "shd", "--checkpoint", str(workdir / "best_model"),
                 "--data-dir", str(files["test"]), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_examples"] == 12 == len(read_shd(files["test"]))
    assert set(report["per_class_accuracy"]) == set(read_shd(files["test"]).class_names)
    assert 0.0 <= report["accuracy"] <= 1.0
    assert "SYNTHETIC" in report["data"]
    assert (tmp_path / "eval" / "confusion_matrix.png").exists()
    assert '"accuracy"' in capsys.readouterr().out
    # a folder holding only the compressed test file
    folder = tmp_path / "only_test"
    folder.mkdir()
    (folder / "shd_test.h5.gz").write_bytes(
        __import__("gzip").compress(files["test"].read_bytes()))
    out2 = tmp_path / "eval2" / "report.json"
    assert main(["eval", "--task", "shd", "--checkpoint", str(workdir / "best_model"),
                 "--data-dir", str(folder), "--out", str(out2), "--set",
                 f"task.cache_dir={tmp_path / 'cache'}"]) == 0
    assert json.loads(out2.read_text())["accuracy"] == pytest.approx(report["accuracy"])
    # a run that held out a speaker evaluates a test file whole, too
    held = SpokenDigitsData(SpokenDigitsTaskConfig(data_dir=str(files["test"]),
                                                   hold_out_speaker=1))
    assert held.splits["test"][1].size == 12
    # a file of other classes than the model's is refused in one line
    other = write_synthetic(tmp_path / "six_test.h5", 12, num_classes=6)
    capsys.readouterr()
    assert main(["eval", "--task", "shd", "--checkpoint", str(workdir / "best_model"),
                 "--data-dir", str(other), "--out", str(tmp_path / "e3" / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "num_output=4" in err and "6 classes" in err, err
    # ... which cannot be trained on: one line, exit 2
    capsys.readouterr()
    assert main(["train", "--task", "shd", "--preset", "tiny", "--workdir",
                 str(tmp_path / "w"), "--set", f"task.data_dir={folder}",
                 f"task.cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no train file" in err, err


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "holds no spoken-digit files"),
])
def test_missing_data_is_one_clear_line(tmp_path, capsys, make, expected):
    data_dir = make(tmp_path)
    assert main(["train", "--task", "shd", "--preset", "tiny", "--workdir",
                 str(tmp_path / "w"), "--set", f"task.data_dir={data_dir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err and "task.data_dir" in err and "zenkelab" in err


def test_registered_tasks_and_options():
    for name in ("shd", "shd_adding"):
        task = get_task(name)
        assert task.head == "last_step" and task.best_mode == "max"
        assert {"paper_elm", "paper_branch_elm", "small", "tiny"} <= set(task.presets)
    _, run = resolve_run("shd", "paper_elm", [])
    assert (run.model.num_branch, run.model.num_synapse_per_branch) == (700, 1)
    assert run.train.optimizer == "adamax" and run.model.delta_t == 2.0
    _, run = resolve_run("shd", "paper_branch_elm", [])
    assert (run.model.num_branch, run.model.routing) == (100, "random")
    with pytest.raises(ValueError, match="task.input_format"):
        SpokenDigitsTaskConfig(input_format="sparse")
    with pytest.raises(ValueError, match="task.dropout"):
        SpokenDigitsTaskConfig(dropout=1.0)


def test_notebook_runs_with_tiny_settings(tmp_path, monkeypatch):
    import nbformat
    from helpers import SHARED
    from nbclient import NotebookClient

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    monkeypatch.setenv("ELM_NB_PRESET", "tiny")
    monkeypatch.setenv("ELM_NB_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("ELM_JAX_SHARED", str(SHARED))
    nb = nbformat.read(notebooks / "spoken_digits.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(notebooks)}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert '"accuracy"' in out and "SYNTHETIC" in out and "memory (20, 4)" in out, out
    assert (tmp_path / "run" / "final_evaluation" / "confusion_matrix.png").exists()
