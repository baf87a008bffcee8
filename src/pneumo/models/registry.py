"""Name → constructor for every network pneumo can train.

A bundle stores ``{"name": ..., "kwargs": ...}``; :func:`build_model` rebuilds the exact network
from that alone, so loading a bundle never needs the training config.
"""

from __future__ import annotations

from collections.abc import Callable

from pneumo.errors import ConfigError
from pneumo.models.base import PneumoNet

_REGISTRY: dict[str, Callable[..., PneumoNet]] = {}


def register(name: str) -> Callable[[Callable[..., PneumoNet]], Callable[..., PneumoNet]]:
    def deco(fn: Callable[..., PneumoNet]) -> Callable[..., PneumoNet]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def available_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs) -> PneumoNet:
    """Build a registered network with 1 input channel and a single-logit output."""
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: bad arguments {kwargs}: {exc}") from exc


def _load_all() -> None:
    """Import the modules that register models (kept lazy so ``import pneumo`` stays fast)."""
    from pneumo.models import backbones, compact, ensemble, scratch  # noqa: F401
