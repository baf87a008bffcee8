"""Name → constructor for every network pneumo can train.

A bundle stores ``{"name": ..., "kwargs": ...}``; :func:`build_model` rebuilds the exact network
from that alone, so loading a bundle never needs the training config.
"""

from __future__ import annotations

from collections.abc import Callable

from pneumo.errors import ConfigError
from pneumo.models.base import PneumoNet

_REGISTRY: dict[str, Callable[..., PneumoNet]] = {}
# Networks whose module is imported only when one of them is built: MONAI costs seconds to import, and
# loading the shipped compact CNN (or serving any from-scratch model) should not pay for it.
# pneumo.models.backbones checks at import that it registers exactly these names.
MONAI_BACKBONES = ("resnet18", "resnet34", "resnet50", "densenet121",
                   "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3")


def register(name: str) -> Callable[[Callable[..., PneumoNet]], Callable[..., PneumoNet]]:
    def deco(fn: Callable[..., PneumoNet]) -> Callable[..., PneumoNet]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def available_models() -> list[str]:
    """Every registered name (imports the MONAI backbones too: listing is not on a start-up path)."""
    _load_all()
    from pneumo.models import backbones  # noqa: F401

    return sorted(_REGISTRY)


def build_model(name: str, **kwargs) -> PneumoNet:
    """Build a registered network with 1 input channel and a single-logit output."""
    _load_all()
    if name in MONAI_BACKBONES:
        from pneumo.models import backbones  # noqa: F401  (lazy: MONAI only for MONAI networks)
    if name not in _REGISTRY:
        known = ", ".join(sorted({*_REGISTRY, *MONAI_BACKBONES}))
        raise ConfigError(f"unknown model {name!r}; expected one of {known}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: bad arguments {kwargs}: {exc}") from exc


def _load_all() -> None:
    """Import the modules that register pneumo's own networks (kept lazy so ``import pneumo`` stays fast;
    the MONAI backbones are imported by :func:`build_model` when one is asked for)."""
    from pneumo.models import compact, ensemble, scratch  # noqa: F401
