"""``ensemble``: M networks as ONE :class:`PneumoNet` whose logit is the mean of the members' logits.

Members must have a global-average-pool head (``GlobalPoolHead``: pool → flatten → dropout → linear),
which every registry CNN except ``seed_cnn``/``scratch_cnn`` has. Then averaging logits is exactly a
linear layer over the *concatenated* pooled feature maps, with each member's weights divided by M:

- ``features``: every member's spatial map, resized to the first member's ``h×w`` if they differ,
  concatenated along channels (``B×ΣC×h×w``) — Grad-CAM on ``features`` explains the averaged logit;
- ``head``: one ``GlobalPoolHead(ΣC)``; the embedding of ``PneumoNet.logit_and_embedding`` (and
  ``embed``) is the concatenated pooled features (``B×ΣC``), so the predictor, the OOD detector, ONNX
  export (logit + embedding) and the bundle format need nothing new.

With ``mirror=True`` every member also sees the left-right mirrored image and its map is mirrored
back before concatenation, so the logit is the mean over members *and* both orientations: the
decision is exactly invariant to a left-right flip (pneumonia is not a left-right property of a film)
and Grad-CAM maps stay aligned with the anatomy.

A bundle stores ``{"name": "ensemble", "kwargs": {"members": [{"name", "kwargs"}, ...], "mirror": bool}}``
and the combined state dict. :func:`ensemble_from_models` builds one from trained members (e.g. bundles of
CV folds or seeds) with their weights, so an ensemble costs training time, not code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pneumo.errors import ConfigError
from pneumo.models.base import GlobalPoolHead, PneumoNet
from pneumo.models.registry import build_model, register


class ConcatFeatures(nn.Module):
    """``B×1×H×W`` → members' spatial maps, concatenated along channels at the first member's size.

    With ``mirror`` each member's map of the mirrored input, mirrored back, follows its own map
    (``B×2ΣC×h×w``).
    """

    def __init__(self, members: Sequence[nn.Module], mirror: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.mirror = mirror

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [m(x) for m in self.members]
        if self.mirror:
            flipped = torch.flip(x, dims=(-1,))
            maps += [torch.flip(m(flipped), dims=(-1,)) for m in self.members]
        size = maps[0].shape[-2:]
        maps = [z if z.shape[-2:] == size else F.adaptive_avg_pool2d(z, size) for z in maps]
        return torch.cat(maps, dim=1)


def _linear_of(head: nn.Module) -> nn.Linear:
    if not isinstance(head, GlobalPoolHead):
        raise ConfigError(f"ensemble members need a global-pool head (GlobalPoolHead), got {type(head).__name__}")
    return head[-1]


DEFAULT_MEMBERS = ({"name": "compact_cnn", "kwargs": {"width": 16, "stem": [16, 32]}},) * 2


@register("ensemble")
def ensemble(members: Sequence[dict] = DEFAULT_MEMBERS, mirror: bool = False) -> PneumoNet:
    """An untrained ensemble of registry models: ``members=[{"name": ..., "kwargs": {...}}, ...]``;
    ``mirror`` averages each member over the image and its left-right mirror.

    The default is two of the shipped architecture (``compact_cnn`` width 16, 4× stem; 0.29 GFLOP @224).
    """
    if not members or not all(isinstance(m, dict) and "name" in m for m in members):
        raise ConfigError(f"ensemble: members must be a non-empty list of {{name, kwargs}}, got {members!r}")
    if any(m["name"] == "ensemble" for m in members):
        raise ConfigError("ensemble: members cannot themselves be ensembles")
    nets = [build_model(m["name"], **dict(m.get("kwargs") or {})) for m in members]
    return _combine(nets, mirror)


def _combine(nets: Sequence[PneumoNet], mirror: bool = False) -> PneumoNet:
    linears = [_linear_of(n.head) for n in nets]
    views = 2 if mirror else 1
    width = views * sum(lin.in_features for lin in linears)
    features = ConcatFeatures([n.features for n in nets], mirror=mirror)
    net = PneumoNet(features, GlobalPoolHead(width, 0.0), cam_layer="features")
    with torch.no_grad():
        last = net.head[-1]
        weight = torch.cat([lin.weight for lin in linears], dim=1) / (len(nets) * views)
        last.weight.copy_(weight.repeat(1, views))
        last.bias.copy_(torch.stack([lin.bias for lin in linears]).mean(dim=0))
    return net


def ensemble_from_models(models: Sequence[PneumoNet], mirror: bool = False) -> PneumoNet:
    """A trained ensemble from trained members (their weights are shared, not copied; eval mode)."""
    if not models:
        raise ConfigError("ensemble_from_models: no members")
    return _combine(list(models), mirror).eval()


__all__ = ["ConcatFeatures", "ensemble", "ensemble_from_models"]
