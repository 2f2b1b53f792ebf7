"""Smoke tests of the benchmark suite (the repository's `benchmarks` package, ``python -m
benchmarks``; importable under pytest because pyproject's ``pythonpath`` holds the
repository root): tiny ``--quick`` configurations, checking that each benchmark writes
its JSON, markdown and PNG with the expected keys.  They measure nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common, neuronio_loader
from benchmarks.cli import SUBCOMMANDS, main
from elm_jax.tasks import neuronio as nio
from elm_jax.tasks.neuronio import teacher
from helpers import REPO

OUTPUTS = {
    "matmul_peak": ("peak_gflops", "peak_source", "rows", "machine", "command"),
    "neuronio_step": ("entries", "ratios", "best_jax", "torch", "target", "flops_per_token",
                      "machine"),
    "headline_train_dm150": ("cell", "rows", "best", "target", "matmul_reference",
                             "flops_per_token", "machine"),
    "memory": ("rows", "setup", "trajectory_bytes", "machine"),
    "throughput": ("rows", "backends", "budget_s", "flop_rule", "machine"),
}


def test_bench_all_quick(tmp_path, capsys):
    assert main(["all", "--quick", "--no-torch", "--out", str(tmp_path)]) == 0
    for name, keys in OUTPUTS.items():
        for ext in ("json", "md", "png"):
            path = tmp_path / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert set(keys) <= set(data), (name, sorted(set(keys) - set(data)))
        assert data["machine"]["versions"]["jax"]
        assert (tmp_path / f"{name}.md").read_text().startswith("# ")
    nio = json.loads((tmp_path / "neuronio_step.json").read_text())
    assert nio["torch"]["error"] == "disabled (--no-torch)"
    assert nio["target"]["met"] is None                # not measured without torch
    assert all(e["tokens_per_s"] > 0 for e in nio["entries"].values())
    assert any(k.startswith("flax_lstm:") for k in nio["entries"])
    grid = json.loads((tmp_path / "throughput.json").read_text())
    assert {r["status"] for r in grid["rows"]} == {"ok"}
    assert {r["mode"] for r in grid["rows"]} == {"forward", "train"}
    memory = json.loads((tmp_path / "memory.json").read_text())
    assert all(r["temp_bytes"] > 0 for r in memory["rows"])
    summary = (tmp_path / "summary.md").read_text()
    assert "NeuronIO train step" in summary and "matmul" in summary
    out = capsys.readouterr().out
    assert "machine: " in out and "jax 0." in out


def test_gpu_check_quick(tmp_path, capsys):
    assert main(["gpu", "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(record) >= {"device", "sequential", "parallel", "memory", "skipped"}
    # the record says what it ran on: a CPU run is flagged as such, a GPU run is not
    import jax

    on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")
    assert record["device"]["is_gpu"] is on_gpu
    assert ("not a GPU run" in record["note"]) is not on_gpu
    assert all("error" not in e for e in record["sequential"] + record["parallel"]
               + record["memory"])
    assert (tmp_path / "gpu_check.json").exists()


def test_flops_per_token_counting_rule():
    import elm_jax
    from benchmarks.throughput import lra_config

    nio = common.flops_per_token(elm_jax.ELMConfig.preset("neuronio_branch_dm15"))
    assert nio["routing_dense"] == 2 * 1278 * 45 and nio["routing_synaptic"] == 2 * 4500
    assert nio["mlp"] == 2 * (45 + 15) * 30 + 2 * 30 * 15 and nio["readout"] == 2 * 15 * 2
    lra = common.flops_per_token(lra_config(150))
    assert lra["forward"] == 2 * 8 * 8 + 2 * (8 + 150) * 300 + 2 * 300 * 150 + 2 * 150 * 2
    assert lra["train"] == 3 * lra["forward"]


def test_measure_interleaved_statistics():
    calls = []
    stats = common.measure_interleaved({"a": lambda: calls.append("a"),
                                        "b": lambda: calls.append("b")},
                                       reps=3, target_s=0.0)
    assert calls == ["a", "b"] + ["a", "b"] * 3           # warm-up, then round-robin
    assert stats["a"]["reps"] == 3 and stats["a"]["median_s"] >= 0


def test_torch_baseline_matches_apply():
    torch = pytest.importorskip("torch")
    import jax

    import elm_jax
    from benchmarks.torch_baseline import build_torch_elm
    from elm_jax.tasks.neuronio.synthetic_input import neuronio_like_spikes

    config = elm_jax.ELMConfig.preset("neuronio_branch_dm15")
    params = elm_jax.init_params(jax.random.key(3), config)
    x = neuronio_like_spikes(0, 2, 20, config.num_input, mean_rate_hz=50.0).astype(np.float32)
    model = build_torch_elm(config, params, threads=1)
    with torch.no_grad():
        y_torch = model(torch.from_numpy(x)).numpy()
    y_jax = np.asarray(elm_jax.apply(params, x, config))
    np.testing.assert_allclose(y_torch, y_jax, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher") / "full_ergodic_train_batch_2"
    return teacher.generate_file(folder, num_sims=3, duration_ms=1500, seed=5)


def test_loader_throughput_reports_rates(teacher_file):
    stats = neuronio_loader.loader_throughput(nio.WindowSampler([teacher_file], seed=0),
                                              num_batches=6)
    assert stats["num_batches"] == 6 and stats["windows_per_s"] > 0
    assert stats["windows_per_s"] == pytest.approx(8 * stats["batches_per_s"])


def test_loader_benchmark_quick(tmp_path, teacher_file):
    assert main(["loader", "--quick", "--data", str(teacher_file.parent),
                 "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "neuronio_loader.json").read_text())
    assert data["command"].startswith("python -m benchmarks loader ")
    assert {(r["source"], r["input_format"]) for r in data["rows"]} == {
        (s, f) for s in ("memory", "cache", "pickle") for f in ("dense", "events")}
    assert all(r["num_batches"] == 4 and r["windows_per_s"] > 0 for r in data["rows"])
    assert (tmp_path / "neuronio_loader.md").read_text().startswith("# ")


def test_cell_subcommand_runs_cell_step_or_says_it_is_missing(monkeypatch, capsys):
    import benchmarks.cli as cli

    seen = []
    fake = type(sys)("benchmarks.cell_step")
    fake.main = lambda argv=None: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "benchmarks.cell_step", fake)
    assert main(["cell", "--quick", "--x", "1"]) == 0 and seen == [["--quick", "--x", "1"]]

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=f"benchmarks.{name}")

    monkeypatch.setattr(cli, "_module", missing)
    assert main(["cell"]) == 2
    assert "cell_step.py is missing" in capsys.readouterr().err


def test_python_m_benchmarks_help_lists_subcommands():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "python -m benchmarks" in done.stdout
    for name in SUBCOMMANDS:
        assert name in done.stdout, name
    assert {"throughput", "neuronio", "memory", "matmul", "all", "gpu", "loader",
            "cell"} <= set(SUBCOMMANDS)


def test_elm_jax_bench_points_to_python_m_benchmarks(capsys):
    from elm_jax.cli import main as elm_jax_main

    assert elm_jax_main(["bench"]) == 2
    assert "python -m benchmarks" in capsys.readouterr().err


def test_pathfinder_probe_quick(tmp_path):
    """The learnability probe writes its statistics and training rows (tiny run)."""
    assert main(["pathfinder-probe", "--quick", "--variants", "dots", "--models", "elm",
                 "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "pathfinder_probe.json").read_text())
    assert [r["variant"] for r in record["stats"]["rows"]] == ["standard", "no_distractors"]
    for row in record["stats"]["rows"]:
        assert row["images"] == 40
        for key in ("label_mean", "distance_shortcut_accuracy", "oracle_accuracy",
                    "oracle_connected_label0", "oracle_connected_label1"):
            assert 0.0 <= row[key] <= 1.0
    (row,) = record["train"]["rows"]
    assert (row["variant"], row["model"]) == ("dots", "elm") and row["num_params"] > 0
    assert [c["step"] for c in row["curve"]] == [2, 4]
    assert "| dots | elm |" in (tmp_path / "pathfinder_probe.md").read_text()


def test_pathfinder_probe_rules():
    """The probe's two hand-made classifiers on inputs with known answers."""
    from benchmarks import pathfinder_probe as probe

    # the threshold rule is fitted on the first half and scored on the second
    values = np.array([1.0, 9.0, 2.0, 8.0, 1.5, 8.5, 3.0, 7.0])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    acc, threshold, direction = probe.best_threshold_accuracy(values, labels)
    assert acc == 1.0 and direction == 1 and threshold == 5.0
    assert probe.best_threshold_accuracy(values, 1 - labels)[0] == 1.0
    # the connectivity oracle: a diagonal stroke joins the markers, a gap separates them
    image = np.zeros((2, 32, 32), np.uint8)
    for k in range(5, 20):
        image[0, k, k] = 200                   # 8-connected diagonal from (5,5) to (19,19)
        image[1, 10, k] = 200 if k != 12 else 0
    tips = np.array([[[5.0, 5.0], [19.2, 18.8]], [[10.0, 5.0], [10.0, 19.0]]])
    assert probe.connectivity_oracle(image, tips, 30).tolist() == [1, 0]
    # the dots images: two 2 x 2 squares, label 1 iff their distance is below 14 px
    from scipy import ndimage

    images, labels = probe.dots_images(50, 0, 14.0)
    assert 0 < labels.sum() < 50
    for image_, label in zip(images, labels, strict=True):
        parts, count = ndimage.label(image_ > 0)
        assert count == 2 and (image_ > 0).sum() == 8
        (a, b) = ndimage.center_of_mass(image_ > 0, parts, [1, 2])
        assert label == (np.hypot(a[0] - b[0], a[1] - b[1]) < 14.0)
