"""Freezing and per-part learning rates for transfer learning.

Specs: ``"none"`` (train everything), ``"backbone"`` (freeze ``features``, train the head), or
``"until:<dotted name>"`` (freeze every parameter of every module up to and including that module,
in registration order — which is forward order for pneumo's Sequential feature extractors).
The name is relative to the model (``features.layer2``) or to ``features`` (``layer2``).

Frozen BatchNorm layers still update their running statistics in train mode; call
:func:`frozen_bn_eval` after ``model.train()`` if they should stay fixed.
"""

from __future__ import annotations

from torch import nn

from pneumo.errors import ConfigError
from pneumo.models.base import PneumoNet


def apply_freeze(model: PneumoNet, spec: str) -> dict:
    """Set ``requires_grad`` according to ``spec``; returns counts of frozen/trainable parameters."""
    spec = (spec or "none").strip()
    for p in model.parameters():
        p.requires_grad_(True)
    if spec == "backbone":
        for p in model.features.parameters():
            p.requires_grad_(False)
    elif spec.startswith("until:"):
        for module in _modules_until(model, spec.removeprefix("until:").strip()):
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
    elif spec != "none":
        raise ConfigError(f"freeze spec {spec!r}: expected 'none', 'backbone' or 'until:<layer name>'")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"spec": spec, "frozen_params": frozen, "trainable_params": trainable}


def _modules_until(model: nn.Module, name: str) -> list[nn.Module]:
    """Modules in pre-order up to and including ``name`` and all its descendants."""
    names = [n for n, _ in model.named_modules()]
    if name not in names and f"features.{name}" in names:
        name = f"features.{name}"
    if not name or name not in names:
        children = [f"features.{n}" for n, _ in model.features.named_children()]
        raise ConfigError(f"freeze spec 'until:{name}': no such layer; top-level feature layers are "
                          f"{', '.join(children[:12])}{', ...' if len(children) > 12 else ''}")
    end = max(i for i, n in enumerate(names) if n == name or n.startswith(name + "."))
    return [m for _, m in list(model.named_modules())[: end + 1]]


def frozen_bn_eval(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen into eval mode (fixed running stats)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                m.eval()


def param_groups(model: PneumoNet, lr: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer groups: ``features`` at ``lr × backbone_lr_mult``, everything else at ``lr``.

    Only trainable parameters are included; empty groups are left out. Each group carries a
    ``name`` ("backbone" / "head") for logging.
    """
    feature_ids = {id(p) for p in model.features.parameters()}
    backbone = [p for p in model.features.parameters() if p.requires_grad]
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in feature_ids]
    groups = [
        {"name": "backbone", "params": backbone, "lr": lr * backbone_lr_mult},
        {"name": "head", "params": head, "lr": lr},
    ]
    return [g for g in groups if g["params"]]
