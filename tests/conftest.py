"""Shared test helpers: locating ../shared and float64 mode."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ELM_JAX_SHARED", REPO.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path under ../shared; skip when absent on a user's machine, fail under CI=true."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"{path} is absent (the reference checkpoints and data live in ../shared)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def x64():
    """Run the test body with jax_enable_x64."""
    with jax.enable_x64(True):
        yield
