"""Where pneumo writes when the user names no place: one per-user workspace, never the current folder.

Why: defaults relative to the current folder scattered ``pneumo-audit.sqlite``, ``explanations/``,
``reports/``, ``.cache/`` and a DICOM spool into whatever folder a command was started from. Now
every default lives under the *pneumo home* (XDG base-directory convention, no extra dependency):

- ``$PNEUMO_HOME`` if set, else ``$XDG_DATA_HOME/pneumo``, else ``~/.local/share/pneumo``:
  ``audit.sqlite``, ``reports/``, ``explanations/``, ``dicom-spool/``;
- ``$PNEUMO_CACHE`` if set, else ``$XDG_CACHE_HOME/pneumo``, else ``~/.cache/pneumo``: the decoded
  training-image cache (safe to delete).

Commands print the folder they wrote to; an explicit ``--out``/``--db``/``--spool`` always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV, CACHE_ENV = "PNEUMO_HOME", "PNEUMO_CACHE"


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return (Path(base).expanduser() if base and Path(base).is_absolute() else Path.home() / fallback) / "pneumo"


def home() -> Path:
    """The per-user pneumo workspace (not created here)."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else _xdg("XDG_DATA_HOME", ".local/share")


def cache_dir() -> Path:
    """The per-user cache folder (not created here)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else _xdg("XDG_CACHE_HOME", ".cache")


def output_dir(*parts: str) -> Path:
    """``home()/parts...``: the default folder of one kind of output (``reports``, ``explanations``...)."""
    return home().joinpath(*parts)


def audit_db() -> Path:
    """The server's default audit log (shared by ``pneumo serve``, ``pneumo audit`` and the DICOM node)."""
    return home() / "audit.sqlite"
