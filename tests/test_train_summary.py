"""What a run shows on the terminal: the end-of-run summary table of `elm-jax train`
(metrics and output paths, no file lists; --json for the full report) and progress lines
of long preparation (teacher-data generation, parsing NeuronIO files); the atomic-write
helper every run file goes through."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from elm_jax.cli import main
from elm_jax.fileio import atomic_write_text
from elm_jax.progress import StepProgress, format_duration
from elm_jax.train.summary import summary_table

SMALL = ["train.steps=20", "train.eval_every=10", "train.checkpoint_every=10",
         "task.seq_len=20", "task.val_size=16", "task.test_size=16"]


def _train_cli(workdir, *extra):
    return main(["train", "--task", "adding", "--preset", "tiny", "--set", *SMALL,
                 "--workdir", str(workdir), "--no-progress", *extra])


def test_train_prints_a_summary_table_not_the_report(tmp_path, capsys):
    assert _train_cli(tmp_path / "run") == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    lines = out.splitlines()
    assert lines[0].startswith("adding / tiny: completed at step 20/20 (323 parameters")
    best = report["best_val"]
    assert re.search(rf"validation mse \(step {best['step']}\) +{best['value']:.6g}", out)
    test_rows = [line.split() for line in lines if line.strip().startswith("test ")]
    assert {row[1] for row in test_rows} == {"loss", "mse"}
    for row in test_rows:         # "test NAME BEST FINAL"
        assert float(row[2]) == pytest.approx(report["test"][row[1]], rel=1e-5)
        assert float(row[3]) == pytest.approx(report["test_final"][row[1]], rel=1e-5)
    workdir = tmp_path / "run"
    for label, name in (("report", "report.json"), ("metrics log", "metrics.jsonl"),
                        ("plots", "curves.png"), ("best model", "best_model"),
                        ("final model", "final_model"), ("checkpoints", "checkpoints")):
        assert re.search(rf"^  {label} +{re.escape(str(workdir / name))}$", out, re.MULTILINE), label
    assert report["outputs"]["report"] == str(workdir / "report.json")
    assert "[" not in out and "{" not in out and "run.json" not in out
    assert len(lines) < 20
    # --json prints the full report instead (for scripts)
    assert _train_cli(tmp_path / "json", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "json" / "report.json").read_text())


def test_summary_shows_final_evaluation_numbers_but_no_file_lists():
    report = {"task": "neuronio", "preset": "small", "status": "completed", "step": 50,
              "steps": 50, "num_params": 1234, "wall_time_s": 75.0, "tokens_per_s": 2e5,
              "best_val": {"step": 40, "metric": "loss", "value": 0.5},
              "test": {"loss": 0.51, "soma_mse": 0.2}, "test_final": {"loss": 0.52,
                                                                      "soma_mse": 0.21},
              "final_evaluation": {"AUC": 0.9512341, "TP @ 0.0025 FP": 0.31,
                                   "soma_RMSE": 1.25, "num_simulations": 16,
                                   "files": ["/data/a.p", "/data/b.p"],
                                   "roc": {"fpr": [0.0, 1.0]}},
              "outputs": {"report": "/w/report.json", "final_evaluation": "/w/final_evaluation",
                          "run": "/w/run.json"}}
    text = summary_table(report)
    assert "01:15 wall time" in text and "200.0k tok/s" in text
    assert re.search(r"test AUC \(final evaluation\) +0\.951234", text)
    assert re.search(r"test TP @ 0\.0025 FP \(final evaluation\) +0\.31", text)
    assert re.search(r"test soma_RMSE \(final evaluation\) +1\.25", text)
    assert re.search(r"test soma_mse +0\.2 +0\.21", text)
    assert re.search(r"evaluation plots +/w/final_evaluation", text)
    assert "a.p" not in text and "fpr" not in text and "files" not in text
    interrupted = summary_table({**report, "status": "interrupted", "test": None,
                                 "test_final": None, "final_evaluation": None})
    assert "interrupted at step 50/50" in interrupted and "--resume" in interrupted


def test_teacher_generation_and_parsing_show_progress(tmp_path, capfd):
    from elm_jax.tasks.neuronio import prepare_cache
    from elm_jax.tasks.neuronio.teacher import generate_dataset

    files = generate_dataset(tmp_path / "data", kind="lif",
                             files_per_split={"train": 2, "valid": 1, "test": 0},
                             sims_per_file=1, duration_ms=400)
    out, err = capfd.readouterr()
    assert out == ""
    assert "teacher data: generating 3 lif files of 1 simulations x 400 ms" in err
    lines = [line for line in err.splitlines() if line.startswith("teacher data: file")]
    assert [line.split()[3] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "(train 2/2, 1 simulations of 400 ms)" in lines[-1] and "elapsed" in lines[-1]
    assert "ETA" in lines[0] and "ETA" not in lines[-1]
    paths = [*files["train"], *files["valid"]]
    prepare_cache(paths, tmp_path / "cache", workers=1)
    err = capfd.readouterr().err
    assert [line.split()[3] for line in err.splitlines()] == ["1/3", "2/3", "3/3"]
    assert all(line.startswith("parsing NeuronIO: file") for line in err.splitlines())
    generate_dataset(tmp_path / "quiet", kind="lif", files_per_split={"valid": 1},
                     sims_per_file=1, duration_ms=400, progress=False)
    assert capfd.readouterr().err == ""


def test_step_progress_lines():
    import io

    stream = io.StringIO()
    progress = StepProgress("work: item", 2, stream=stream)
    progress.advance("first")
    progress.advance()
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"work: item 1/2 \(first\) \| 00:00 elapsed, ETA 00:00", lines[0])
    assert re.fullmatch(r"work: item 2/2 \| 00:00 elapsed", lines[1])
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "?"


def test_atomic_write_text_replaces_whole_files_with_the_umask_mode(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.json", "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]   # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
