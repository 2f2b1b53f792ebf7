#!/usr/bin/env python3
"""Runnable wrapper: every benchmark in priority order, then summary.md.

Same as ``elm-jax bench all ...``; the logic lives in `elm_jax.bench` (one source of
truth). See benchmarks/README.md for the options and the recorded results.
"""

import sys
from pathlib import Path

# run from a checkout without installing: the repository root goes first on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elm_jax.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["all", *sys.argv[1:]]))
