"""The console script and the README's main-job command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from elm_jax.cli import main as cli_main


def test_demo_writes_plot_and_run(tmp_path):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--preset", "neuronio_branch_dm15", "--time", "120",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["y_shape"] == [1, 120, 2] and summary["y_finite"]
    run = np.load(out / "demo_run.npz")
    assert run["memory"].shape == (1, 120, 15) and run["x"].shape == (1, 120, 1278)
    assert (out / "demo_run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_preset_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["demo", "--preset", "bogus", "--out", str(tmp_path)]) == 2
    assert "unknown ELMConfig preset 'bogus'" in capsys.readouterr().err


def test_console_script_is_installed():
    # the script pip installed beside this interpreter (a venv need not be on PATH)
    beside = Path(sys.executable).parent / "elm-jax"
    exe = str(beside) if beside.exists() else shutil.which("elm-jax")
    assert exe, f"no elm-jax console script beside {sys.executable} or on PATH (pip install -e .)"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("convert", "predict", "demo"):
        assert command in result.stdout


def test_convert_and_predict_with_relative_paths(tmp_path, monkeypatch):
    # the docs' commands use relative --out / --checkpoint (Orbax itself needs absolute)
    from helpers import require_shared

    ref = require_shared("reference", "num_memory_15")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["convert", "--torch-checkpoint", str(ref / "neuronio_best_model_state.pt"),
                     "--config", str(ref / "model_config.json"), "--out", "models/best"]) == 0
    io = np.load(ref / "reference_io.npz")
    np.save("x.npy", io["x"])
    assert cli_main(["predict", "--checkpoint", "models/best", "--input", "x.npy",
                     "--output", "y.npy"]) == 0
    np.testing.assert_allclose(np.load("y.npy"), io["y"], atol=2e-5)
