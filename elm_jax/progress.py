"""Progress lines of long preparation work (teacher-data generation, parsing files).

A model-core helper (no dependency on the trainer), so tasks can report progress::

    progress = StepProgress("teacher data: file", total=12)
    for ...:
        ...
        progress.advance("train 3, 8 simulations")
    # stderr: "teacher data: file 3/12 (train 3, 8 simulations) | 00:41 elapsed, ETA 02:03"

Lines go to stderr (stdout stays for results); ``enabled=False`` silences them.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"01:15"``; ``3725`` -> ``"1:02:05"``; ``"?"`` if not a duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class StepProgress:
    """One line per finished item: ``LABEL DONE/TOTAL (DETAIL) | ELAPSED elapsed, ETA``."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 enabled: bool = True):
        self.label, self.total, self.done = label, int(total), 0
        self.stream = stream
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def _write(self, line: str) -> None:
        if self.enabled:
            stream = self.stream or sys.stderr     # looked up late: pytest swaps stderr
            stream.write(line + "\n")
            stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (e.g. what is about to start)."""
        self._write(text)

    def advance(self, detail: str = "") -> None:
        """Count one finished item and print its line."""
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        line = f"{self.label} {self.done}/{self.total}"
        if detail:
            line += f" ({detail})"
        line += f" | {format_duration(elapsed)} elapsed"
        if self.done < self.total:
            line += f", ETA {format_duration(elapsed / self.done * (self.total - self.done))}"
        self._write(line)
