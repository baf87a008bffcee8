"""Heatmaps for one X-ray on the model grid, by any of :data:`METHODS`, for any registry model.

Two geometries matter. The map is computed on the *model grid* (``S×S``, what :func:`preprocess`
produced) and then mapped back to the *original* ``H×W`` of the ``read_image`` pixels by undoing the
spec's resize rule, so an overlay lines up with the film the clinician sees.

The model is never copied and never changed: CAMs hook it for one call only (``explain/cam.py``),
gradient attributions differentiate by the input, perturbation methods only call it. The default
(:data:`DEFAULT_METHOD`) was chosen by measurement — see docs/explain.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from pneumo.data.preprocess import PreprocessSpec, preprocess, undo_resize, valid_region
from pneumo.errors import ConfigError
from pneumo.explain import cam, perturb

DEFAULT_METHOD = "occlusion"
METHODS = ("occlusion", "gradcam", "gradcam++", "gradcam-fine", "rise", "integrated-gradients", "smoothgrad",
           "occlusion-mean", "occlusion-monai")
TARGETS = ("normal", "pneumonia")  # index = MONAI class_idx of the two-column wrapper
CAM_METHODS = ("gradcam", "gradcam++", "gradcam-fine")
SCORE_METHODS = ("occlusion", "occlusion-mean", "rise")  # need only logits of batches: ONNX Runtime can serve


class TwoClass(nn.Module):
    """``B`` pneumonia logits ``z`` → ``B×2`` scores ``[-z, z]``: MONAI's ``class_idx`` 0 explains
    NORMAL (the negated logit), 1 explains PNEUMONIA."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x).reshape(x.shape[0])
        return torch.stack([-z, z], 1)


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


def _normalise(m: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1]; a flat (or non-finite) map becomes all zeros rather than noise."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros(m.shape, dtype=np.float32)
    return ((m - lo) / (hi - lo)).astype(np.float32)


def torch_score(model: nn.Module) -> perturb.Score:
    """``N×1×S×S`` numpy batch → ``N`` logits from a torch model (eval mode, no autograd)."""
    def score(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), cam.eval_mode(model):
            return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy().reshape(-1)
    return score


def explain_tensor(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    method: str = DEFAULT_METHOD,
    target: str = "pneumonia",
    layer: str | None = None,
    occlusion_mask: int | None = None,
    *,
    score: perturb.Score | None = None,
    fine_layer: str | None = None,
) -> np.ndarray:
    """Raw (un-normalised, ≥ 0) heatmap on the model grid: ``1×S×S`` (or ``1×1×S×S``) input → ``S×S``.

    Works whatever the caller's grad mode (inference mode included). Higher = more evidence for
    ``target``. ``score`` replaces the torch forward for the perturbation methods (e.g. ONNX Runtime);
    ``fine_layer`` caches ``gradcam-fine``'s layer (found by a probe forward otherwise).
    """
    _check(method, target)
    sign = 1.0 if target == "pneumonia" else -1.0
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    arr = arr.reshape(1, 1, *arr.shape[-2:])
    if method in CAM_METHODS:
        name = resolve_layer(model, layer)
        if method == "gradcam-fine":
            name = fine_layer or cam.finer_layer(model, name, arr.shape[-1])
        device = next(model.parameters()).device
        out = cam.grad_cam(model, torch.from_numpy(arr).to(device), sign, name, plus=method == "gradcam++")
        return out.float().cpu().numpy()
    if method in ("integrated-gradients", "smoothgrad"):
        from pneumo.explain import attrib  # lazy: Captum's import costs start-up time for every other method

        fn = attrib.integrated_gradients if method == "integrated-gradients" else attrib.smoothgrad
        return fn(model, torch.from_numpy(arr), sign)
    if method == "occlusion-monai":
        return _occlusion_monai(model, torch.from_numpy(arr), TARGETS.index(target), occlusion_mask)
    score = score or torch_score(model)
    if method == "rise":
        return perturb.rise(score, arr[0, 0], sign)
    return perturb.occlusion(score, arr[0, 0], sign, fill="mean" if method == "occlusion-mean" else "blur")


def _occlusion_monai(model: nn.Module, x: torch.Tensor, class_idx: int, mask: int | None) -> np.ndarray:
    """MONAI's ``OcclusionSensitivity`` (Gaussian patch towards 0, stride mask/2): the reference the
    batched :func:`perturb.occlusion` replaces. It only calls the model (no hooks), so no copy."""
    from monai.visualize import OcclusionSensitivity  # lazy, as scipy: only drawing a heatmap needs them
    from scipy.ndimage import gaussian_filter

    size = x.shape[-1]
    mask = mask or max(4, size // 8)
    wrapped = TwoClass(model)
    occ = OcclusionSensitivity(
        nn_module=wrapped, mask_size=mask, n_batch=32, verbose=False, mode="gaussian", overlap=0.5, activate=False
    )
    with torch.no_grad(), cam.eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI's indexing deprecation notices
        base = float(wrapped(x)[0, class_idx])
        occ_map, _ = occ(x)  # 1×2×S×S: the two scores with the patch centred at each pixel masked
    drop = np.clip(base - occ_map[0, class_idx].float().cpu().numpy(), 0.0, None)
    # the map is only resolved to the window stride (mask/2): smooth away the stride's block edges
    return gaussian_filter(drop, sigma=mask / 4).astype(np.float32)


def finish(raw: np.ndarray, shape: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    """Raw model-grid map → ``H×W`` in [0, 1]: normalised over the part of the grid that shows the
    image, then resized back to the original geometry."""
    rows, cols = valid_region(shape, spec)
    norm = np.zeros_like(raw)
    norm[rows, cols] = _normalise(raw[rows, cols])
    return np.clip(undo_resize(norm, shape, spec), 0.0, 1.0)


def model_input(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    if np.ndim(pixels) != 2:
        raise ConfigError(f"explain_pixels expects a 2-D H×W image, got shape {np.shape(pixels)}")
    return preprocess(pixels, spec)
