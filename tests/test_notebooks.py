"""Notebooks execute top to bottom (small settings)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def test_quickstart_notebook_runs(monkeypatch):
    monkeypatch.setenv("ELM_QUICKSTART_STEPS", "200")
    outputs = _run("quickstart.ipynb")
    assert "trained parameters: 6827" in outputs
    if (NOTEBOOKS.parents[1] / "shared" / "reference").exists():
        assert "max abs difference to the reference implementation" in outputs


def test_neuronio_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ELM_NB_PRESET", "tiny")
    monkeypatch.setenv("ELM_NB_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("ELM_JAX_CACHE", str(tmp_path / "cache"))
    outputs = _run("neuronio.ipynb")
    assert '"AUC"' in outputs and "training files" in outputs
    assert (tmp_path / "run" / "report.json").exists()
    if (NOTEBOOKS.parents[1] / "shared" / "data" / "neuronio_l5pc").exists():
        assert "published d_m=15 model on the real L5PC simulations: AUC 0.98" in outputs
