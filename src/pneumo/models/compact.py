"""A compact residual CNN sized for fast training and single-image inference on a 2-core CPU.

Why this shape: on CPU in PyTorch eager, plain 3×3 convolutions with batch norm and ReLU are much
faster per FLOP than depthwise/inverted-residual blocks, and the high-resolution early layers are
memory-bound. So the net downsamples by 4 right away (two strided 3×3 convs), then runs ResNet basic
blocks over four stages whose channels double as resolution halves, keeping each stage's cost even.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pneumo.errors import ConfigError
from pneumo.models.base import GlobalPoolHead, PneumoNet
from pneumo.models.registry import register


def conv_bn(c_in: int, c_out: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block ``B×C_in×H×W`` → ``B×C_out×H/s×W/s``; 1×1 strided projection when shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, stride)
        self.conv2 = conv_bn(c_out, c_out, relu=False)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


@register("compact_cnn")
def compact_cnn(
    width: int = 32,
    depth: Sequence[int] = (1, 1, 1, 1),
    stem: Sequence[int] = (16,),
    dropout: float = 0.2,
    input_pool: int = 1,
) -> PneumoNet:
    """Compact ResNet for ``B×1×H×W`` (designed at 224; any H, W ≥ 32 works: global pooling).

    Args:
        width: channels of the first stage; stage ``i`` has ``width·2^i`` channels.
        depth: basic blocks per stage; every stage after the first halves the resolution.
        stem: channels of the strided 3×3 stem convs (each halves H and W; the first stage then
            halves once more unless the stem already reduced by 4).
        dropout: before the final linear layer.
        input_pool: average-pool the input by this factor first: a fixed low-pass that takes the fine
            texture away (the shared training copies' sharpness differs between the classes), and lets
            an ensemble member see a coarser view of the same input as the others.

    ``cam_layer`` is the last stage's output (7×7 at 224 with the default stem).
    """
    if width < 4 or not depth or any(d < 1 for d in depth) or not stem:
        raise ConfigError(f"compact_cnn: need width ≥ 4, depth of ≥ 1 blocks per stage, a stem; got "
                          f"width={width} depth={list(depth)} stem={list(stem)}")
    if input_pool < 1:
        raise ConfigError(f"compact_cnn: input_pool must be ≥ 1, got {input_pool}")
    layers: list[nn.Module] = [nn.AvgPool2d(input_pool)] if input_pool > 1 else []
    c = 1
    for s in stem:
        layers.append(conv_bn(c, int(s), stride=2))
        c = int(s)
    first_stride = 2 if len(stem) < 2 else 1
    for i, n in enumerate(depth):
        c_out = width * 2**i
        stage = [BasicBlock(c, c_out, first_stride if i == 0 else 2)]
        stage += [BasicBlock(c_out, c_out) for _ in range(int(n) - 1)]
        layers.append(nn.Sequential(*stage))
        c = c_out
    return PneumoNet(nn.Sequential(*layers), GlobalPoolHead(c, dropout), cam_layer="features")
