"""Where the dataset is: ``--data``, else ``$PNEUMO_DATA``, else a short documented lookup; and where the
shipped model is (``$PNEUMO_MODEL``, else ``models/default``).

The lookup (``data/chest_xray``, ``../shared/data/chest_xray``) is tried from the current folder,
then from the repository that holds the installed package (so a command works from any folder of
a checkout), then ``data/chest_xray`` in the pneumo home (:mod:`pneumo.paths`). Torch-free, so a
command that only needs a path (``pneumo audit monitor``) starts without loading PyTorch."""

from __future__ import annotations

import os
from pathlib import Path

from pneumo.errors import BundleError, DatasetError
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


MODEL_ENV = "PNEUMO_MODEL"
DEFAULT_BUNDLE = Path("models") / "default"


def default_bundle_path() -> Path:
    """The shipped default model: ``$PNEUMO_MODEL``, else ``models/default/`` in the repository that
    holds the installed package (``src/pneumo`` → repo root), else ``./models/default``."""
    env = os.environ.get(MODEL_ENV)
    if env:
        p = Path(env).expanduser()
        if not (p / "pneumo.json").is_file():
            raise BundleError(f"${MODEL_ENV}={env}: not a model bundle (no pneumo.json there)")
        return p
    repo = Path(__file__).resolve().parents[3]
    tried = [repo / DEFAULT_BUNDLE, Path.cwd() / DEFAULT_BUNDLE]
    for p in tried:
        if (p / "pneumo.json").is_file():
            return p
    raise BundleError(
        "no default model: pass a BUNDLE directory, set $PNEUMO_MODEL, or place a bundle at "
        + " or ".join(str(p) for p in dict.fromkeys(tried))
    )
