"""Heatmaps for one X-ray: Grad-CAM, Grad-CAM++ and occlusion, built on ``monai.visualize``.

Two geometries matter. The map is computed on the *model grid* (``S×S``, what :func:`preprocess`
produced) and then mapped back to the *original* ``H×W`` of the ``read_image`` pixels by undoing the
spec's resize rule, so an overlay lines up with the film the clinician sees.

The model is never touched: each call works on a private deep copy (MONAI's ``ModelWithHooks``
registers hooks it never removes and flips ``inplace`` flags; a copy also keeps a concurrent server
prediction on the shared model from firing our hooks). Copying costs a few milliseconds — see
``benchmarks/explain.py``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch import nn

from pneumo.data.preprocess import PreprocessSpec, preprocess
from pneumo.errors import ConfigError

METHODS = ("gradcam", "gradcam++", "occlusion")
TARGETS = ("normal", "pneumonia")  # index = MONAI class_idx of the two-column wrapper


class TwoClass(nn.Module):
    """``B`` pneumonia logits ``z`` → ``B×2`` scores ``[-z, z]``: MONAI's ``class_idx`` 0 explains
    NORMAL (the negated logit), 1 explains PNEUMONIA.

    ``centred``: return ``s - s.detach()`` — value 0, same gradient. Grad-CAM(++) only needs the
    gradient, and MONAI's Grad-CAM++ multiplies by ``exp(score)``, a per-image constant that would
    overflow float32 for a logit above ~88 and turn the map into NaN."""

    def __init__(self, net: nn.Module, centred: bool = False):
        super().__init__()
        self.net = net
        self.centred = centred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x).reshape(x.shape[0])
        s = torch.stack([-z, z], 1)
        return s - s.detach() if self.centred else s


def _check(method: str, target: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"explanation method must be one of {', '.join(METHODS)}, got {method!r}")
    if target not in TARGETS:
        raise ConfigError(f"explanation target must be pneumonia or normal, got {target!r}")


def resolve_layer(model: nn.Module, layer: str | None) -> str:
    """The target layer's dotted name: ``layer`` if given, else ``model.cam_layer``; must exist."""
    name = layer or getattr(model, "cam_layer", None)
    if not name:
        raise ConfigError("model has no cam_layer; pass --layer NAME")
    names = {n for n, _ in model.named_modules() if n}
    if name not in names:
        conv = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-3:]
        raise ConfigError(f"layer {name!r} is not in the model; e.g. {', '.join(conv) or 'features'}")
    return name


def _private_copy(model: nn.Module, centred: bool = False) -> TwoClass:
    """Eval-mode deep copy with every ``inplace`` op disabled (full backward hooks reject them)."""
    net = copy.deepcopy(model).eval()
    for m in net.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    for p in net.parameters():
        p.requires_grad_(True)
    return TwoClass(net, centred).eval()


def _normalise(m: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1]; a flat (or non-finite) map becomes all zeros rather than noise."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros(m.shape, dtype=np.float32)
    return ((m - lo) / (hi - lo)).astype(np.float32)


def explain_tensor(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    method: str = "gradcam",
    target: str = "pneumonia",
    layer: str | None = None,
    occlusion_mask: int | None = None,
) -> np.ndarray:
    """Raw (un-normalised, ≥ 0) heatmap on the model grid: ``1×S×S`` (or ``1×1×S×S``) input → ``S×S``.

    Works whatever the caller's grad mode (inference mode included). Higher = more evidence for
    ``target``. Occlusion: drop of the target logit when a Gaussian patch is masked, clipped at 0.
    """
    _check(method, target)
    name = resolve_layer(model, layer) if method != "occlusion" else None
    class_idx = TARGETS.index(target)
    with torch.inference_mode(False), torch.enable_grad():
        device = next(model.parameters()).device
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device).clone().reshape(1, 1, *np.shape(x)[-2:])
        wrapped = _private_copy(model, centred=method != "occlusion")
        if method == "occlusion":
            return _occlusion(wrapped, xt, class_idx, occlusion_mask)
        from monai.visualize import GradCAM, GradCAMpp

        cls = GradCAM if method == "gradcam" else GradCAMpp
        cam = cls(nn_module=wrapped, target_layers=f"net.{name}", postprocessing=lambda t: t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MONAI warns on the inplace flags it flips
            out = cam(xt, class_idx=class_idx)
    return out.detach().reshape(xt.shape[-2:]).float().cpu().numpy()


def _occlusion(wrapped: TwoClass, x: torch.Tensor, class_idx: int, mask: int | None) -> np.ndarray:
    from monai.visualize import OcclusionSensitivity

    size = x.shape[-1]
    mask = mask or max(4, size // 8)
    occ = OcclusionSensitivity(
        nn_module=wrapped, mask_size=mask, n_batch=32, verbose=False, mode="gaussian", overlap=0.5, activate=False
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI's indexing deprecation notices
        base = float(wrapped(x)[0, class_idx])
        occ_map, _ = occ(x)  # 1×2×S×S: the two scores with the patch centred at each pixel masked
    drop = np.clip(base - occ_map[0, class_idx].float().cpu().numpy(), 0.0, None)
    # the map is only resolved to the window stride (mask/2): smooth away the stride's block edges
    return gaussian_filter(drop, sigma=mask / 4).astype(np.float32)


def to_original(heatmap: np.ndarray, shape: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    """Undo ``spec.resize``: ``S×S`` model-grid map → ``H×W`` at the original geometry.

    stretch: plain resize. letterbox: crop the padding bands out, then resize. center_crop: place the
    map in the scaled image's frame (the cropped-off margins, unseen by the model, get 0), then resize.
    """
    h, w = shape
    size = spec.size
    m = np.asarray(heatmap, dtype=np.float32)
    if spec.resize == "letterbox":
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (size - nh) // 2, (size - nw) // 2
        m = m[top : top + nh, left : left + nw]
    elif spec.resize == "center_crop":
        scale = size / min(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (nh - size) // 2, (nw - size) // 2
        frame = np.zeros((nh, nw), dtype=np.float32)
        frame[top : top + size, left : left + size] = m
        m = frame
    return _resize(m, h, w)


def _resize(m: np.ndarray, h: int, w: int) -> np.ndarray:
    if m.shape == (h, w):
        return m.astype(np.float32, copy=True)
    im = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32), mode="F")
    return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _valid_region(shape: tuple[int, int], spec: PreprocessSpec) -> tuple[slice, slice]:
    """The part of the model grid that shows the image (letterbox excludes the padding)."""
    if spec.resize != "letterbox":
        return slice(None), slice(None)
    h, w = shape
    scale = spec.size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (spec.size - nh) // 2, (spec.size - nw) // 2
    return slice(top, top + nh), slice(left, left + nw)


def explain_pixels(
    bundle, pixels: np.ndarray, method: str = "gradcam", target: str = "pneumonia", layer: str | None = None
) -> np.ndarray:
    """Heatmap for ``read_image`` pixels (float32 ``H×W``) → float32 ``H×W`` in [0, 1] (1 = strongest).

    ``bundle`` is a loaded :class:`pneumo.bundle.Bundle` (its ``model`` and ``spec`` are used).
    Normalised over the part of the model grid that shows the image, then resized back to ``H×W``.
    """
    if np.ndim(pixels) != 2:
        raise ConfigError(f"explain_pixels expects a 2-D H×W image, got shape {np.shape(pixels)}")
    raw = explain_tensor(bundle.model, preprocess(pixels, bundle.spec), method, target, layer)
    rows, cols = _valid_region(pixels.shape, bundle.spec)
    norm = np.zeros_like(raw)
    norm[rows, cols] = _normalise(raw[rows, cols])
    return np.clip(to_original(norm, pixels.shape, bundle.spec), 0.0, 1.0)
