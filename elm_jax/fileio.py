"""Atomic file writes: a temporary file in the target folder, fsynced, then renamed.

The one helper for every file that readers may see while it is rewritten (run.json,
report.json, metrics.jsonl on resume, curves.png, caches, generated data).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

# The process's umask (read once, at import): temporary files are created 0600, the
# written file gets the mode a plain open() would give it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write `path` through ``write(file)`` so readers see the old file or the whole new one.

    The data go to a temporary file in the same folder, which is fsynced and renamed over
    `path`; on any error the temporary file is removed and `path` is left untouched.
    ``write`` gets a binary file (e.g. ``lambda f: figure.savefig(f, format="png")``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """`atomic_write` of a string."""
    data = text.encode(encoding)
    return atomic_write(path, lambda f: f.write(data))
