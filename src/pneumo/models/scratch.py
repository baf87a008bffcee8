"""From-scratch CNNs: a configurable conv-block family and its named presets."""

from __future__ import annotations

from torch import nn

from pneumo.models.base import GlobalPoolHead, PneumoNet
from pneumo.models.registry import register


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
