"""``python -m benchmarks SUB ...`` from the repository root (see benchmarks/README.md)."""

import sys

from .cli import main

if __name__ == "__main__":  # guarded: spawned worker processes re-import this
    sys.exit(main())
