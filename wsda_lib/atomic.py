"""Atomic file writes: a temporary file beside the target, renamed into place.

An interrupted write leaves the old file (or none), never half a file; the temporary file is
removed on any failure. Used for cached benchmark splits, checkpoints and JSON results.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable) -> None:
    """Create `path` by calling write(f) on a binary file object, atomically.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> atomic_write(p, lambda f: f.write(b"hi"))
    >>> p.read_bytes(), sorted(q.name for q in p.parent.iterdir())
    (b'hi', ['x.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    """Write obj as indented, key-sorted JSON, atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()
                                         + b"\n"))
