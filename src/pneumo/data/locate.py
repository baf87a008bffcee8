"""Where the dataset is: ``--data``, else ``$PNEUMO_DATA``, else a short documented lookup.

The lookup (``data/chest_xray``, ``../shared/data/chest_xray``) is tried from the current folder,
then from the repository that holds the installed package (so a command works from any folder of
a checkout), then ``data/chest_xray`` in the pneumo home (:mod:`pneumo.paths`)."""

from __future__ import annotations

import os
from pathlib import Path

from pneumo.errors import DatasetError
from pneumo.paths import home

ENV_VAR = "PNEUMO_DATA"
DEFAULT_LOOKUP: tuple[str, ...] = ("data/chest_xray", "../shared/data/chest_xray")


def resolve_data(explicit: str | Path | None = None, *, cwd: Path | None = None) -> Path:
    """Return the dataset folder or manifest to use, or raise one line saying where we looked."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise DatasetError(f"dataset not found at {p} (given with --data)")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise DatasetError(f"dataset not found at {p} (from ${ENV_VAR})")
        return p
    repo = Path(__file__).resolve().parents[3]  # src/pneumo/data/locate.py → the checkout's root
    bases = dict.fromkeys([(cwd or Path.cwd()).resolve(), repo])
    tried = [*(b / rel for b in bases for rel in DEFAULT_LOOKUP), home() / "data" / "chest_xray"]
    for p in tried:
        if p.exists():
            return p.resolve()
    raise DatasetError(
        "no dataset found: pass --data ROOT, set $PNEUMO_DATA, or place it at "
        + " or ".join(str(p) for p in tried)
    )
