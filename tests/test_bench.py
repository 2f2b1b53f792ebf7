"""Smoke tests of the benchmark suite (`elm_jax.bench`, ``elm-jax bench``): tiny
``--quick`` configurations, checking that each benchmark writes its JSON, markdown and
PNG with the expected keys.  They measure nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from elm_jax.bench import common
from elm_jax.cli import main

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
    assert main(["bench", "all", "--quick", "--no-torch", "--out", str(tmp_path)]) == 0
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
    assert main(["bench", "gpu", "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(record) >= {"device", "sequential", "parallel", "memory", "skipped"}
    assert record["device"]["is_gpu"] is False and "not a GPU run" in record["note"]
    assert all("error" not in e for e in record["sequential"] + record["parallel"]
               + record["memory"])
    assert (tmp_path / "gpu_check.json").exists()


def test_flops_per_token_counting_rule():
    import elm_jax
    from elm_jax.bench.throughput import lra_config

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
    from elm_jax.bench.torch_baseline import build_torch_elm
    from elm_jax.tasks.neuronio.synthetic_input import neuronio_like_spikes

    config = elm_jax.ELMConfig.preset("neuronio_branch_dm15")
    params = elm_jax.init_params(jax.random.key(3), config)
    x = neuronio_like_spikes(0, 2, 20, config.num_input, mean_rate_hz=50.0).astype(np.float32)
    model = build_torch_elm(config, params, threads=1)
    with torch.no_grad():
        y_torch = model(torch.from_numpy(x)).numpy()
    y_jax = np.asarray(elm_jax.apply(params, x, config))
    np.testing.assert_allclose(y_torch, y_jax, rtol=1e-5, atol=1e-5)
