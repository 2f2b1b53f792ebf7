"""Notebooks execute top to bottom (small settings)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import SHARED

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _shared_present(*parts: str) -> bool:
    """Whether ../shared/PARTS exists; under CI=true its absence fails the test."""
    present = SHARED.joinpath(*parts).exists()
    if not present and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {SHARED.joinpath(*parts)} is absent")
    return present


def _run(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def test_quickstart_notebook_runs(monkeypatch):
    monkeypatch.setenv("ELM_QUICKSTART_STEPS", "100")
    monkeypatch.setenv("ELM_JAX_SHARED", str(SHARED))
    outputs = _run("quickstart.ipynb")
    assert "trained parameters: 6827" in outputs
    if _shared_present("reference", "num_memory_15"):
        # the published d_m = 15 checkpoint reproduces the reference outputs (float32)
        found = re.search(r"max abs difference to the reference implementation: (\S+)", outputs)
        assert found, outputs
        assert float(found.group(1)) < 2e-5


def test_neuronio_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ELM_NB_PRESET", "tiny")
    monkeypatch.setenv("ELM_NB_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("ELM_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ELM_JAX_SHARED", str(SHARED))
    outputs = _run("neuronio.ipynb")
    assert '"AUC"' in outputs and "training files" in outputs
    assert (tmp_path / "run" / "report.json").exists()
    if _shared_present("reference") and _shared_present("data", "neuronio_l5pc"):
        # the reference implementation's own AUC on these files (tests/test_neuronio_eval.py)
        found = re.search(r"published d_m=15 model on the real L5PC simulations: AUC (\S+)",
                          outputs)
        assert found, outputs
        assert abs(float(found.group(1)) - 0.9892521) < 1e-6
