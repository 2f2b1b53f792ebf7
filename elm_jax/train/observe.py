"""Observability of a run: JSONL metrics, TensorBoard event files, a progress line.

(Named ``observe`` rather than ``logging`` so it never shadows the standard library.)

* `MetricsLog` appends one JSON object per record to ``WORKDIR/metrics.jsonl``:
  ``{"kind": "train" | "val" | "test", "step": N, <metrics>...}`` (strict JSON: a NaN
  or infinite value is written as ``null``); on resume it drops
  the records written after the checkpoint the run continues from (and the test
  records, which the resumed run writes again at its end), so the file of a
  resumed run equals that of an uninterrupted one (up to the timing fields in
  `TIMING_KEYS`).
* TensorBoard scalars go to ``WORKDIR/tb/`` through ``tensorboardX`` (no TensorFlow);
  on resume the writer purges events after the checkpoint's step.
* `Progress` shows step, loss, tokens/s and ETA: one updating line on a terminal,
  periodic plain lines otherwise.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from ..fileio import atomic_write_text, strict_json
from ..progress import format_duration

#: Record fields that depend on the machine's speed (left out when comparing runs).
TIMING_KEYS = ("elapsed_s", "tokens_per_s", "steps_per_s")


class MetricsLog:
    """JSONL metrics file plus TensorBoard scalars (process 0 only writes)."""

    def __init__(self, workdir: str | Path, *, resume_step: int | None = None,
                 tensorboard: bool = True, enabled: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            # Keep what the checkpoint's run had logged up to its step; test records
            # are written again when the resumed run finishes.
            kept = [r for r in read_jsonl(self.path)
                    if resume_step is not None and r.get("step", 0) <= resume_step
                    and r.get("kind") != "test"]
            self.records = kept
            if enabled:
                atomic_write_text(self.path, "".join(strict_json(r) + "\n" for r in kept))
        self._file: TextIO | None = open(self.path, "a") if enabled else None
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            kwargs = {"purge_step": resume_step + 1} if resume_step else {}
            self._tb = SummaryWriter(str(Path(workdir) / "tb"), **kwargs)

    def write(self, kind: str, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"kind": kind, "step": int(step)}
        record.update({k: _plain(v) for k, v in metrics.items()})
        self.records.append(record)
        if self._file is not None:
            self._file.write(strict_json(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key in ("kind", "step") or not isinstance(value, (int, float)):
                    continue
                self._tb.add_scalar(f"{kind}/{key}", float(value), int(step))
            self._tb.flush()
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file (a torn last line from a killed run is ignored)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def strip_timing(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without the machine-dependent `TIMING_KEYS` (to compare two runs)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _plain(value: Any) -> Any:
    try:
        value = value.item()
    except AttributeError:
        pass
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON: NaN and inf are written as null
    return value


class Progress:
    """A progress line: ``step 1200/5000 24% | loss 0.0123 | 85.1k tok/s | ETA 02:13``."""

    def __init__(self, total: int, start: int = 0, *, stream: TextIO | None = None,
                 enabled: bool = True, messages: bool = True,
                 plain_interval_s: float = 30.0):
        self.total, self.start = total, start
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.messages = messages
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_interval_s = plain_interval_s
        self._last_plain = -math.inf
        self._width = 0

    def update(self, step: int, loss: float | None, tokens_per_s: float | None,
               eta_s: float | None, extra: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        pct = 100.0 * step / max(self.total, 1)
        parts = [f"step {step}/{self.total} {pct:3.0f}%"]
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        if tokens_per_s:
            parts.append(f"{_si(tokens_per_s)} tok/s")
        if eta_s is not None:
            parts.append(f"ETA {format_duration(eta_s)}")
        if extra:
            parts.append(extra)
        line = " | ".join(parts)
        if self.tty:
            pad = max(self._width - len(line), 0)
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self.stream.flush()
        elif force or time.monotonic() - self._last_plain >= self.plain_interval_s:
            self._last_plain = time.monotonic()
            self.stream.write(line + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (after the progress line on a terminal); shown even when
        the progress line is disabled, unless `messages` is False."""
        if not self.messages:
            return
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"
