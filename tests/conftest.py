"""pytest fixtures shared by every test module (helper functions live in helpers.py)."""

from __future__ import annotations

import os

from helpers import TEST_XLA_FLAGS

# Before JAX starts its backend (and inherited by the subprocesses and notebook kernels
# the tests start): compile without LLVM's optimisation passes.  The tests' arrays are
# tiny, so compiling dominates their time (about a quarter less with this flag);
# results are the same computation, and nothing here measures speed.
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Run the test body with jax_enable_x64."""
    with jax.enable_x64(True):
        yield
