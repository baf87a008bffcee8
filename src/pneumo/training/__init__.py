"""Training: YAML config → Lightning loop (single process or DDP) → run directory → model bundle.

Public surface: :func:`train` (``pneumo.training.run``) and :func:`load_config`; the threshold rules
live in :mod:`pneumo.decision`, which evaluation imports too. Imports are lazy so that
``import pneumo.training.config`` does not pull in Lightning.
"""

from __future__ import annotations


def train(*args, **kwargs):
    from pneumo.training.run import train as _train

    return _train(*args, **kwargs)


def load_config(*args, **kwargs):
    from pneumo.training.config import load_config as _load

    return _load(*args, **kwargs)


__all__ = ["load_config", "train"]
