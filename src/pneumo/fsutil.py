"""Atomic file writes: the one helper every module that writes a result uses.

A kill (Ctrl-C, OOM, power) mid-write never leaves a half-written file under the final name: data go
to a temp file in the same folder, are fsync'ed, then renamed over the target. Files get the usual
permissions (``0666 & ~umask``, e.g. 0644), not mkstemp's 0600: a bundle trained by one user must be
readable by the service user that serves it.

A layer of its own under :mod:`pneumo.data` and :mod:`pneumo.bundle` (both write files), above only
:mod:`pneumo.errors`. ``pneumo.bundle`` re-exports these names for its existing callers.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pneumo.errors import PneumoError

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename (parents created)."""
    path = Path(path)
    if path.is_dir():
        raise PneumoError(f"{path}: is a directory; give a file name (e.g. {path / 'out.csv'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> None:
    """``obj`` as JSON (numpy scalars and paths converted), newline-terminated, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def replace_readable(tmp: str | Path, dest: str | Path) -> None:
    """For writers that only take a path (ONNX export, safetensors): ``os.replace`` their finished temp
    file over ``dest`` after giving it the usual permissions (such writers create 0600)."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, dest)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


__all__ = ["FILE_MODE", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "replace_readable"]
