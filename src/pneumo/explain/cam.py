"""Grad-CAM and Grad-CAM++ on the caller's model itself, with no copy and nothing left behind.

MONAI's CAM wrapper registers hooks it never removes and flips ``inplace`` flags, so the old code
deep-copied the model per call; in a server those copies stayed reachable through the hooks (issue
13: ≈2.3 MB per heatmap). Here one forward hook lives for the duration of one call and is removed in
``finally``. It acts only in the thread that registered it and only when gradients are on, so a
concurrent prediction on the same model (another thread, inference mode) passes straight through.
The hook hands the rest of the network a clone of the layer's output, so a downstream in-place
operation cannot rewrite the tensor we differentiate by (no ``inplace`` flag is touched).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from pneumo.errors import ConfigError


@contextmanager
def capture(module: nn.Module):
    """Record ``module``'s output during one forward in this thread; the hook is gone afterwards."""
    owner, box = threading.get_ident(), {}

    def hook(_mod, _inp, out):
        if threading.get_ident() != owner or not torch.is_grad_enabled() or not isinstance(out, torch.Tensor):
            return None
        box["act"] = out
        return out.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the call (dropout off, BatchNorm statistics frozen); the caller's mode restored."""
    was = model.training
    if was:
        model.eval()
    try:
        yield model
    finally:
        if was:
            model.train()


def layer_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise ConfigError(f"layer {name!r} is not in the model")
    return modules[name]


def grad_cam(model: nn.Module, x: torch.Tensor, sign: float, layer: str, plus: bool = False) -> torch.Tensor:
    """``1×1×S×S`` input → ``S×S`` map (≥ 0) for the score ``sign·logit`` at ``layer``.

    Grad-CAM (Selvaraju 2017): channel weights = spatial mean of the gradient. Grad-CAM++ (Chattopadhay
    2018) weights positive gradients by α = g²/(2g² + ΣA·g³); its ``exp(score)`` factor is a per-image
    constant that min–max normalisation removes, so it is left out (no overflow for large logits).
    """
    module = layer_module(model, layer)
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(model), capture(module) as box:
        xt = x.detach().clone().requires_grad_(True)
        score = sign * model(xt).reshape(-1)[0]
        act = box.get("act")
        if act is None or act.ndim != 4:
            raise ConfigError(f"layer {layer!r} gives no spatial B×C×h×w map to explain")
        (grad,) = torch.autograd.grad(score, act)
    act, grad = act.detach()[0], grad.detach()[0]
    if plus:
        g2 = grad.pow(2)
        denom = 2 * g2 + act.sum(dim=(1, 2), keepdim=True) * grad.pow(3)
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * F.relu(grad)).sum(dim=(1, 2))
    else:
        weights = grad.mean(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * act).sum(0))
    return F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def finer_layer(model: nn.Module, layer: str, size: int) -> str:
    """The deepest block finishing before ``layer`` whose map has at least twice ``layer``'s resolution.

    Found by one probe forward on a ``size×size`` input (done once per explainer), so it works for any
    registry model without a per-architecture table. For an ensemble it lands inside the last member
    (the members' maps are only concatenated at ``layer``), so it explains that member's part.
    """
    order: list[tuple[str, int]] = []
    handles = []
    for name, mod in model.named_modules():
        if name and any(True for _ in mod.children()):  # blocks and stages, not single ops
            def hook(_m, _i, out, name=name):
                if isinstance(out, torch.Tensor) and out.ndim == 4:
                    order.append((name, out.shape[-1]))
            handles.append(mod.register_forward_hook(hook))
    layer_module(model, layer)
    try:
        with torch.inference_mode(), eval_mode(model):
            model(torch.zeros(1, 1, size, size))
    finally:
        for h in handles:
            h.remove()
    names = [n for n, _ in order]
    if layer not in names:
        return layer
    end = names.index(layer)
    side = order[end][1]
    finer = [n for n, s in order[:end] if s >= 2 * side]
    return finer[-1] if finer else layer
