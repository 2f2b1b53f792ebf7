"""``python -m benchmarks SUB ...`` from the repository root (see benchmarks/README.md)."""

import sys

from .cli import main

sys.exit(main())
