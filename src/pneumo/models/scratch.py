"""From-scratch CNNs: a configurable conv-block family and its named presets.

``scratch_cnn`` builds ``[Conv–(BN)–ReLU–Pool–(SpatialDropout)–(Dropout)] × n`` followed by either a
flatten (the classic Keras-style head, whose size depends on ``input_size``) or a global average
pool, then dense layers and one logit. Presets re-create architectures people publish for the
Kermany pediatric chest X-ray data, so results can be compared like for like.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pneumo.errors import ConfigError
from pneumo.models.base import GlobalPoolHead, PneumoNet
from pneumo.models.registry import register

_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def conv_block(c_in: int, c_out: int, kernel: int = 3, batch_norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


@register("tiny_cnn")
def tiny_cnn(width: int = 8, depth: int = 3, dropout: float = 0.0) -> PneumoNet:
    """A few-thousand-parameter CNN for tests and smoke runs (not for clinical use)."""
    blocks, c = [], 1
    for i in range(depth):
        blocks.append(conv_block(c, width * 2**i))
        c = width * 2**i
    return PneumoNet(nn.Sequential(*blocks), GlobalPoolHead(c, dropout))


def _per_block(value: float | Sequence[float], n: int, what: str) -> list[float]:
    """A scalar applies to every block; a list gives one value per block."""
    if isinstance(value, int | float):
        return [float(value)] * n
    values = [float(v) for v in value]
    if len(values) != n:
        raise ConfigError(f"scratch_cnn: {what} has {len(values)} values, expected one per block ({n})")
    return values


def _block(c_in: int, c_out: int, *, kernel: int, padding: str, batch_norm: bool, pool: str,
           spatial_dropout: float, dropout: float) -> nn.Sequential:
    """Conv → (BN) → ReLU → (pool 2×2) → (Dropout2d) → (Dropout): one ``B×C×H×W`` → ``B×C'×H'×W'`` step."""
    pad = kernel // 2 if padding == "same" else 0
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    if pool != "none":
        layers.append(_POOLS[pool](2))
    if spatial_dropout > 0:
        layers.append(nn.Dropout2d(spatial_dropout))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@register("scratch_cnn")
def scratch_cnn(
    filters: Sequence[int] = (32, 64, 128, 128),
    kernel: int = 3,
    padding: str = "valid",
    batch_norm: bool = False,
    pool: str = "max",
    dropout: float | Sequence[float] = 0.0,
    spatial_dropout: float | Sequence[float] = (0.0, 0.0, 0.2, 0.2),
    dense: Sequence[int] = (512,),
    head_dropout: float = 0.0,
    global_pool: bool = False,
    input_size: int = 150,
) -> PneumoNet:
    """Configurable plain CNN; the defaults are the ``seed_cnn`` preset.

    Args:
        filters: output channels of each conv block.
        kernel: odd conv kernel size. ``padding``: ``"valid"`` (Keras default) or ``"same"``.
        pool: ``"max"``, ``"avg"`` or ``"none"`` (2×2, stride 2, after each block).
        dropout / spatial_dropout: per-block rates (scalar = every block); spatial = ``nn.Dropout2d``.
        dense: hidden sizes of the dense head (each Linear → ReLU → Dropout(head_dropout)).
        global_pool: average-pool the last map instead of flattening it (then ``input_size`` is free).
        input_size: square input side the flatten head is sized for (only with ``global_pool=False``).

    Input ``B×1×input_size×input_size`` → ``B`` logits; ``embed`` → ``B×dense[-1]`` (after ReLU).
    """
    if padding not in ("valid", "same") or pool not in ("max", "avg", "none") or kernel % 2 == 0:
        raise ConfigError(f"scratch_cnn: need padding valid|same, pool max|avg|none, odd kernel; got "
                          f"padding={padding!r} pool={pool!r} kernel={kernel}")
    n = len(filters)
    drops, sdrops = _per_block(dropout, n, "dropout"), _per_block(spatial_dropout, n, "spatial_dropout")
    blocks, c = [], 1
    for f, d, sd in zip(filters, drops, sdrops, strict=True):
        blocks.append(_block(c, int(f), kernel=kernel, padding=padding, batch_norm=batch_norm, pool=pool,
                             spatial_dropout=sd, dropout=d))
        c = int(f)
    features = nn.Sequential(*blocks)
    head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if global_pool else []
    head.append(nn.Flatten(1))
    width = c if global_pool else _flat_dim(features, input_size)
    for h in dense:
        head += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
        if head_dropout > 0:
            head.append(nn.Dropout(head_dropout))
        width = int(h)
    head.append(nn.Linear(width, 1))
    return PneumoNet(features, nn.Sequential(*head))


def _flat_dim(features: nn.Module, input_size: int) -> int:
    """Flattened size of ``features`` on a ``1×1×S×S`` input (exact for any padding/pool mix)."""
    try:
        with torch.no_grad():
            out = features.eval()(torch.zeros(1, 1, input_size, input_size))
    except RuntimeError as exc:
        raise ConfigError(f"scratch_cnn: input_size={input_size} is too small for these blocks ({exc})") from exc
    features.train()
    if out.numel() == 0:
        raise ConfigError(f"scratch_cnn: input_size={input_size} shrinks to nothing in these blocks")
    return out[0].numel()


@register("seed_cnn")
def seed_cnn(input_size: int = 150, spatial_dropout: float = 0.2) -> PneumoNet:
    """The widely used Keras baseline for this dataset, at 150×150.

    4 × [Conv3×3 (valid) – ReLU – MaxPool2] with 32/64/128/128 filters, SpatialDropout2D on the last
    two blocks, Flatten (7×7×128 = 6272 at 150), Dense 512 ReLU, Dense 1. No batch norm.
    """
    return scratch_cnn(filters=(32, 64, 128, 128), kernel=3, padding="valid", batch_norm=False, pool="max",
                       spatial_dropout=(0.0, 0.0, spatial_dropout, spatial_dropout), dense=(512,),
                       input_size=input_size)
