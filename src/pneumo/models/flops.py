"""Counting a network's cost without a new dependency (``torch.utils.flop_counter``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, input_size: int | tuple[int, int], channels: int = 1) -> int:
    """Forward FLOPs for one ``1×channels×H×W`` image, counting a multiply-add as 2 FLOPs.

    Only matmul/conv-type ops are counted (what FlopCounterMode knows); BN/ReLU/pool add a few %.
    The model is run in eval mode and restored to its previous mode afterwards.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, channels, h, w))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
