"""``load_dataset``: a dataset from a folder layout or a CSV manifest, whichever the path is.

Its own module so that :mod:`pneumo.data.discover` (folders) and :mod:`pneumo.data.manifest` (CSV)
import each other in neither direction.
"""

from __future__ import annotations

from pathlib import Path

from pneumo.data.discover import DatasetIndex, load_folders
from pneumo.data.manifest import load_manifest
from pneumo.errors import DatasetError


def load_dataset(root_or_manifest: str | Path) -> DatasetIndex:
    """Discover a dataset from a folder or a ``.csv`` manifest; a clear error if there is none."""
    p = Path(root_or_manifest).expanduser()
    if not p.exists():
        raise DatasetError(f"{p}: no such dataset folder or manifest")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DatasetError(f"{p}: a dataset is a folder or a .csv manifest")
        return load_manifest(p)
    return load_folders(p)
