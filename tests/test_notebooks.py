"""Notebooks execute top to bottom (small settings)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["quickstart.ipynb"])
def test_notebook_runs(name, monkeypatch):
    monkeypatch.setenv("ELM_QUICKSTART_STEPS", "200")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "trained parameters: 6827" in outputs
    if (NOTEBOOKS.parents[1] / "shared" / "reference").exists():
        assert "max abs difference to the reference implementation" in outputs
