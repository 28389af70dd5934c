"""Atomic file writes: a temporary file beside the target, renamed into place.

An interrupted write leaves the old file (or none), never half a file. The temporary file is
removed on any failure the process survives; one left by a killed process (SIGKILL, power
loss) carries that process's id in its name and is removed by the next write into the same
folder once that process is gone. Files are created with the permissions the umask gives any
new file (0644 under the usual 022), not the 0600 of a bare temporary file. Used for cached
benchmark splits, checkpoints and JSON results.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (".<name>.<pid>.<random>.tmp") in `folder` whose writing
    process no longer runs, and any of an older, pid-less format. Returns what was deleted.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".checkpoint.pt.999999999.x1.tmp").write_bytes(b"half")
    >>> [p.name for p in remove_stale_temporaries(d)], list(d.iterdir())
    (['.checkpoint.pt.999999999.x1.tmp'], [])
    """
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        parts = path.name.split(".")
        pid = parts[-3] if len(parts) >= 4 else ""
        if pid.isdigit() and _alive(int(pid)):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict(obj):
    """`obj` with every float NaN or infinity as None, so that it is strict JSON (RFC 8259
    has no NaN; JavaScript's JSON.parse, jq and many other readers refuse the whole file).
    A NaN score (a class never labelled nor predicted) becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    return obj


def numbers(obj):
    """The inverse of `strict` where it is unambiguous: in every list of numbers that holds
    a null (None), the null back to NaN, so that per-class scores read back as floats.
    Nulls elsewhere (a missing value, not a number) stay None."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [numbers(v) for v in obj]
        scalars = all(v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                      for v in items)
        if scalars and any(v is not None for v in items):
            return [math.nan if v is None else v for v in items]
        return items
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write obj as indented, key-sorted, strict JSON (`strict`: NaN as null), atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(strict(obj), indent=2, sort_keys=True,
                                                    allow_nan=False).encode() + b"\n"))
