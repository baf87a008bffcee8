"""Standard backbones from MONAI, re-cut into pneumo's ``features`` / ``head`` shape.

Each network keeps MONAI's own module names inside ``features`` (so ``features.layer4``,
``features.denseblock4`` ...), which is what lets :mod:`pneumo.models.weights` map torchvision
ImageNet checkpoints onto them key by key. Nothing here downloads anything: ``pretrained=False``.
"""

from __future__ import annotations

from collections import OrderedDict

from monai.networks.nets import DenseNet121, EfficientNetBN, ResNet
from torch import nn

from pneumo.models.base import GlobalPoolHead, PneumoNet
from pneumo.models.registry import MONAI_BACKBONES, register

_RESNETS = {  # name: (block, layers, feature channels) — torchvision's definitions
    "resnet18": ("basic", [2, 2, 2, 2], 512),
    "resnet34": ("basic", [3, 4, 6, 3], 512),
    "resnet50": ("bottleneck", [3, 4, 6, 3], 2048),
}
_EFFNET_DROPOUT = {"efficientnet-b0": 0.2, "efficientnet-b1": 0.2, "efficientnet-b2": 0.3, "efficientnet-b3": 0.3}


def _resnet(name: str, dropout: float) -> PneumoNet:
    """torchvision-layout ResNet (7×7 stride-2 stem, max-pool, bias-free 1×1 downsample), 1 channel in."""
    block, layers, channels = _RESNETS[name]
    net = ResNet(block, layers, [64, 128, 256, 512], spatial_dims=2, n_input_channels=1, conv1_t_size=7,
                 conv1_t_stride=2, shortcut_type="B", bias_downsample=False, num_classes=1)
    parts = ["conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    features = nn.Sequential(OrderedDict((p, getattr(net, p)) for p in parts))
    return PneumoNet(features, GlobalPoolHead(channels, dropout), cam_layer="features.layer4")


def _densenet121(dropout: float) -> PneumoNet:
    """DenseNet-121; ``features`` ends with the final norm *and* ReLU so Grad-CAM sees the activated map."""
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=1)
    features = net.features
    features.add_module("relu5", nn.ReLU(inplace=False))  # not in-place: CAM hooks read this output
    return PneumoNet(features, GlobalPoolHead(1024, dropout), cam_layer="features")


def _efficientnet(name: str, dropout: float | None) -> PneumoNet:
    """EfficientNet-B*, 1 channel in, plain SiLU (ONNX-exportable) instead of the custom swish op."""
    net = EfficientNetBN(name, pretrained=False, spatial_dims=2, in_channels=1, num_classes=1)
    net.set_swish(memory_efficient=False)
    features = nn.Sequential(OrderedDict([
        ("_conv_stem_padding", net._conv_stem_padding), ("_conv_stem", net._conv_stem), ("_bn0", net._bn0),
        ("act0", nn.SiLU()), ("_blocks", net._blocks), ("_conv_head_padding", net._conv_head_padding),
        ("_conv_head", net._conv_head), ("_bn1", net._bn1), ("act1", nn.SiLU()),
    ]))
    rate = _EFFNET_DROPOUT[name] if dropout is None else dropout
    return PneumoNet(features, GlobalPoolHead(net._fc.in_features, rate), cam_layer="features")


def _register_all() -> None:
    for name in _RESNETS:
        register(name)(lambda dropout=0.0, _n=name: _resnet(_n, dropout))
    register("densenet121")(lambda dropout=0.0: _densenet121(dropout))
    for name in _EFFNET_DROPOUT:
        register(name)(lambda dropout=None, _n=name: _efficientnet(_n, dropout))
    names = (*_RESNETS, "densenet121", *_EFFNET_DROPOUT)
    if set(names) != set(MONAI_BACKBONES):  # the registry lists them so it can import this module lazily
        raise RuntimeError(f"registry.MONAI_BACKBONES {MONAI_BACKBONES} != the backbones defined here {names}")


_register_all()
