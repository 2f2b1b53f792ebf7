#!/usr/bin/env python3
"""Runnable wrapper: the prepared GPU check for an H100 session (JSON on stdout).

Same as ``elm-jax bench gpu ...``; the logic lives in `elm_jax.bench` (one source of
truth). See benchmarks/README.md for the options and the recorded results.
"""

import sys
from pathlib import Path

# run from a checkout without installing: the repository root goes first on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elm_jax.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["gpu", *sys.argv[1:]]))
