"""Atomic file writes, checksum manifests and strict JSON.

* `atomic_write`: a temporary file in the target folder, fsynced, then renamed; the one
  helper for every file that readers may see while it is rewritten (run.json,
  report.json, metrics.jsonl on resume, curves.png, caches, generated data).
* `write_manifest` / `verify_manifest`: ``manifest.json`` with the sha256 of every file
  of a directory (model directories, training checkpoints), written after the
  directory is complete and checked when it is read.
* `strict_json`: JSON text without bare ``NaN``/``Infinity`` (they become ``null``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

# The process's umask (read once, at import): temporary files are created 0600, the
# written file gets the mode a plain open() would give it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def make_private_dir_public(path: str | os.PathLike) -> Path:
    """Give a directory made by ``tempfile.mkdtemp`` (mode 0700) the mode a plain
    ``mkdir`` would (0777 less the umask); returns the path."""
    os.chmod(path, 0o777 & ~_UMASK)
    return Path(path)


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


# ---------------------------------------------------------------------------- manifests
#: Name of the checksum manifest of a directory (model directory, training checkpoint).
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "elm_jax.manifest/1"


class CorruptFilesError(ValueError):
    """Files of a directory do not match its manifest (the message names them)."""


class UnverifiedFilesWarning(UserWarning):
    """A directory has no manifest (written before manifests existed): not verified."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    out = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = Path(root, name).relative_to(directory).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_manifest(directory: str | os.PathLike) -> Path:
    """Write ``directory/manifest.json``: the size and sha256 of every file below it.

    Call it once the directory's content is complete; the manifest is written
    atomically (`atomic_write`), so a crash leaves no manifest rather than a torn one.
    """
    directory = Path(directory)
    files = {rel: {"size": (directory / rel).stat().st_size,
                   "sha256": _sha256(directory / rel)} for rel in _files(directory)}
    text = json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1)
    return atomic_write_text(directory / MANIFEST, text + "\n")


def manifest_problems(directory: str | os.PathLike) -> list[str] | None:
    """Check the files of `directory` against its manifest.

    Returns None when there is no manifest (nothing to check), else the problems found:
    one line per corrupt (size or checksum differs) or missing file, naming it, or a
    line saying that the manifest itself is unreadable.  Files not in the manifest are
    ignored.  An empty list means every file is intact.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{path} is unreadable ({type(err).__name__}: {err})"]
    problems = []
    for rel, entry in sorted(files.items()):
        file = directory / rel
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            problems.append(f"{file} is missing")
            continue
        if size != entry.get("size"):
            problems.append(f"{file} has {size} bytes, the manifest says {entry.get('size')}")
        elif _sha256(file) != entry.get("sha256"):
            problems.append(f"{file} is corrupt (its sha256 differs from {path})")
    return problems


def verify_manifest(directory: str | os.PathLike, what: str = "directory") -> bool:
    """Verify `directory` against its manifest (`manifest_problems`).

    Returns True when every file is intact; False, with an `UnverifiedFilesWarning`,
    when there is no manifest.  Raises `CorruptFilesError` (a ValueError) naming the
    corrupt or missing files otherwise.
    """
    problems = manifest_problems(directory)
    if problems is None:
        warnings.warn(f"{what} {directory} has no {MANIFEST} (written before manifests "
                      f"existed): its files are not verified", UnverifiedFilesWarning,
                      stacklevel=2)
        return False
    if problems:
        raise CorruptFilesError(f"{what} {directory} is damaged: "
                                f"{format_problems(problems)}")
    return True


def format_problems(problems: list[str], limit: int = 3) -> str:
    """The first `limit` of `manifest_problems` joined by "; " (and how many more)."""
    more = len(problems) - limit
    return "; ".join(problems[:limit]) + (f"; and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------- strict JSON
def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) replaced by None, recursively
    (dicts, lists, tuples; NumPy scalars and arrays become Python values)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # NumPy / JAX scalars and arrays
    if tolist is not None and not isinstance(value, (str, bytes)):
        return json_safe(tolist())
    return value


def strict_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes strict JSON: NaN and inf become ``null``
    (`json_safe`), so no reader meets a bare ``NaN``; other keyword arguments
    (``indent``, ``default``) are passed on."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
