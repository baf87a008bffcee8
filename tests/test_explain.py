"""Heatmaps: geometry (original H×W, not shifted or transposed, every resize rule), methods, targets,
that the model is left untouched, that every registry architecture can be explained, and rendering."""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pneumo.bundle import Bundle, load_bundle
from pneumo.data import PreprocessSpec, read_image
from pneumo.errors import ConfigError
from pneumo.explain import METHODS, explain_pixels, explain_tensor, heatmap_rgba_png, overlay_png
from pneumo.models import PneumoNet, available_models, build_model


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Bundle:
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def original(val_originals) -> np.ndarray:
    """A real val X-ray at its original, non-square geometry."""
    for s in val_originals:
        pixels, _ = read_image(s.path)
        if abs(pixels.shape[0] - pixels.shape[1]) > 0.1 * max(pixels.shape):
            return pixels
    pytest.fail("no clearly non-square val original")


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_at_original_geometry(bundle, original, method):
    hm = explain_pixels(bundle, original, method=method)
    assert hm.shape == original.shape and hm.dtype == np.float32
    assert hm.min() >= 0.0 and hm.max() <= 1.0
    assert hm.std() > 0.01  # not constant
    assert hm.max() > 0.9  # normalised: the strongest evidence reaches ~1


def test_target_normal_gives_a_different_map(bundle, original):
    pneu = explain_pixels(bundle, original, target="pneumonia")
    norm = explain_pixels(bundle, original, target="normal")
    assert np.abs(pneu - norm).mean() > 0.05


def test_bad_method_target_layer_are_user_errors(bundle, original):
    with pytest.raises(ConfigError):
        explain_pixels(bundle, original, method="lime")
    with pytest.raises(ConfigError):
        explain_pixels(bundle, original, target="covid")
    with pytest.raises(ConfigError, match="nope"):
        explain_pixels(bundle, original, layer="nope")


def test_layer_override_and_inference_mode(bundle, original):
    """A caller inside inference_mode still gets gradients; an earlier layer gives a finer, other map."""
    with torch.inference_mode():
        default = explain_pixels(bundle, original, method="gradcam")
        early = explain_pixels(bundle, original, method="gradcam", layer="features.1")
    assert early.shape == original.shape and early.std() > 0.01
    assert np.abs(default - early).mean() > 0.02


def test_model_left_untouched(bundle, original):
    model = bundle.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        for method in ("gradcam", "gradcam++"):
            explain_pixels(bundle, original, method=method)
        assert model.training  # mode restored
        for m in model.modules():
            assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        assert relus and all(r.inplace for r in relus)
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


# --- alignment: a hand-made model whose evidence is a bright square at a known, off-diagonal spot ----

def _square_detector() -> PneumoNet:
    """Logit = mean over a coarse grid of ReLU(local brightness − 1): only a bright patch counts."""
    conv = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 9.0)
        conv.bias.fill_(-1.0)  # zscore: background −2, the bright square +2
    features = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(4))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(1, 1))
    with torch.no_grad():
        head[2].weight.fill_(1.0)
        head[2].bias.zero_()
    return PneumoNet(features, head).eval()


def _bundle_with(model: PneumoNet, spec: PreprocessSpec) -> Bundle:
    meta = {"preprocess": spec.to_dict(), "operating_point": {"logit": 0.0}}
    return Bundle(path=None, meta=meta, model=model, sha256="test")  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", ["stretch", "letterbox", "center_crop"])
@pytest.mark.parametrize("method", METHODS)
def test_heatmap_peaks_where_the_evidence_is(original, rule, method):
    h, w = original.shape
    img = np.zeros((h, w), dtype=np.float32)
    # upper half, right of centre: a transposed map would peak lower-left, a shifted one elsewhere
    r0, r1, c0, c1 = int(0.15 * h), int(0.30 * h), int(0.55 * w), int(0.70 * w)
    img[r0:r1, c0:c1] = 1.0
    bundle = _bundle_with(_square_detector(), PreprocessSpec(size=64, resize=rule))
    hm = explain_pixels(bundle, img, method=method)
    assert hm.shape == (h, w)
    pr, pc = np.unravel_index(np.argmax(hm), hm.shape)
    assert r0 - 0.06 * h <= pr <= r1 + 0.06 * h and c0 - 0.06 * w <= pc <= c1 + 0.06 * w, (pr, pc)
    inside = hm[r0:r1, c0:c1].mean()
    outside = np.concatenate([hm[: r0 // 2].ravel(), hm[(r1 + h) // 2 :].ravel()]).mean()
    # RISE (random 8×8 masks) spreads its heat; integrated gradients weights the square unevenly
    loose = method in ("rise", "integrated-gradients")
    assert inside > (0.15 if loose else 0.3) and outside < 0.1 * inside
    if rule == "letterbox":
        # the padding bands were cropped out, so the map's own frame matches the image's
        assert hm[h // 2, w // 2] < (0.2 if loose else 0.1) and hm.max() > 0.9


def test_center_crop_margins_get_zero(original):
    h, w = original.shape
    bundle = _bundle_with(_square_detector(), PreprocessSpec(size=64, resize="center_crop"))
    img = np.zeros((h, w), dtype=np.float32)
    img[h // 3 : h // 2, w // 3 : w // 2] = 1.0
    hm = explain_pixels(bundle, img)
    margin = (max(h, w) - min(h, w)) // 2
    keep = int(0.8 * margin)  # bilinear upsampling may bleed ≤ 1 model-grid pixel into the margin
    edge = hm[:, :keep] if w > h else hm[:keep]
    assert margin > 10 and edge.max() == 0.0


# --- every architecture the registry offers ---------------------------------------------------------

@pytest.mark.slow
def test_every_registry_model_can_be_explained():
    """Every architecture's ``cam_layer`` exists, its hooks fire (no in-place error), and none stay behind."""
    names = available_models()
    assert {"tiny_cnn", "resnet18", "densenet121"} <= set(names)
    for name in names:
        model, size = _small(name)
        x = np.random.default_rng(0).standard_normal((1, size, size)).astype(np.float32)
        m = explain_tensor(model, x, method="gradcam")
        assert m.shape == (size, size) and np.isfinite(m).all() and m.min() >= 0, name
        assert not any(mod._forward_hooks or mod._backward_hooks for mod in model.modules()), name


def _small(name: str) -> tuple[PneumoNet, int]:
    """Registry model and a small input side for it: 32 (the backbones' 32× reduction leaves 1×1),
    or 64 for the flatten-head models, built for it via ``input_size``."""
    from pneumo.models.registry import _REGISTRY

    if "input_size" in inspect.signature(_REGISTRY[name]).parameters:
        return build_model(name, input_size=64).eval(), 64
    return build_model(name).eval(), 32


# --- rendering ----------------------------------------------------------------------------------------

def test_overlay_png_keeps_aspect_and_caps_size(original):
    hm = np.zeros_like(original)
    hm[: original.shape[0] // 2] = 1.0
    png = overlay_png(original, hm, "P(pneumonia) 0.83 — PNEUMONIA — gradcam")
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and max(im.size) <= 1024 + 200
    ratio_img = original.shape[1] / original.shape[0]
    assert abs(im.size[0] / im.size[1] - ratio_img) < 0.35  # the frame follows the image's aspect
    with pytest.raises(ConfigError):
        overlay_png(original, hm[:-1], "x")


def test_heatmap_rgba_png_is_transparent_where_cold():
    hm = np.zeros((40, 60), dtype=np.float32)
    hm[:10, :15] = 1.0
    im = Image.open(io.BytesIO(heatmap_rgba_png(hm, (120, 80))))
    assert im.mode == "RGBA" and im.size == (120, 80)
    a = np.asarray(im)[..., 3]
    assert a[:15, :25].min() > 200 and a[40:, 60:].max() == 0


def test_huge_logit_does_not_break_gradcam_pp(bundle, original):
    """MONAI's Grad-CAM++ uses exp(score): a logit of ~1e3 must not turn the map into NaN/zeros."""
    model = bundle.model
    *body, last = list(model.head.children())
    scaled = PneumoNet(model.features, nn.Sequential(*body, nn.Linear(last.in_features, 1)))
    with torch.no_grad():
        scaled.head[-1].weight.copy_(last.weight * 1000)
        scaled.head[-1].bias.copy_(last.bias * 1000 + 1000)
    big = _bundle_with(scaled.eval(), bundle.spec)
    hm = explain_pixels(big, original, method="gradcam++")
    ref = explain_pixels(bundle, original, method="gradcam++")
    assert np.isfinite(hm).all() and hm.max() > 0.9
    assert np.corrcoef(hm.ravel(), ref.ravel())[0, 1] > 0.5  # same evidence, only the logit scale changed
