"""pytest fixtures shared by every test module (helper functions live in helpers.py)."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with jax_enable_x64."""
    with jax.enable_x64(True):
        yield
