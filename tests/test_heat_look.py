"""One heat look for the page, PDF, CLI overlay (and the SC, through the same functions): no colour where
the map shows no evidence, yellow → red above it, and a legend of two phrases."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pneumo.data import read_image
from pneumo.explain.explainer import shows
from pneumo.explain.render import FLOOR, blend_heat, heat_rgba, heatmap_rgba_png, legend_strip, overlay_png


def _heat(shape):
    """Real geometry: zero over most of the film, one warm blob (peak 1) in the upper left."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-(((yy - h * 0.3) / (h * 0.08)) ** 2 + ((xx - w * 0.3) / (w * 0.08)) ** 2)).astype(np.float32)


def test_no_evidence_is_untinted_and_strongest_is_red(val_originals):
    pixels, _ = read_image(val_originals[0].path)
    heat = _heat(pixels.shape)
    rgba = heat_rgba(heat)
    assert np.all(rgba[heat < FLOOR, 3] == 0)
    r, g, b, a = rgba[np.unravel_index(np.argmax(heat), heat.shape)]
    assert a == 1 and r > 0.8 and g < 0.2 and b < 0.2  # red at the peak
    grey = np.repeat(pixels[..., None], 3, axis=2)
    blended = blend_heat(grey, heat, 0.6)
    cold = heat < FLOOR
    assert np.array_equal(blended[cold], grey[cold])  # the film, untouched, wherever there is no evidence
    layer = np.asarray(Image.open(io.BytesIO(heatmap_rgba_png(heat))))
    assert layer.shape[2] == 4 and np.all(layer[cold][:, 3] == 0)
    strip = np.asarray(legend_strip(100, 2, background=(128, 128, 128)))
    assert np.all(strip[:, : int(100 * FLOOR) - 1] == 128) and strip[0, -1, 0] > 200 and strip[0, -1, 2] < 60


def test_cli_overlay_leaves_the_film_grey_where_there_is_no_evidence(val_originals):
    pixels, _ = read_image(val_originals[0].path)
    png = np.asarray(Image.open(io.BytesIO(overlay_png(pixels, np.zeros_like(pixels), "caption"))).convert("RGB"))
    body = png[20:-120, 30:-30].astype(int)  # the film area (the margins hold the legend and caption)
    tint = np.abs(body[..., 2] - body[..., 0]).mean()
    assert tint < 1.0, f"film tinted (mean |B-R| {tint:.2f})"  # a full jet blend made it blue (|B-R| ≫ 10)


def test_legend_sentence_is_short_and_flat():
    for target in ("pneumonia", "normal"):
        text = shows(target, "occlusion")
        assert "red" in text and text.count("(") == 0 and len(text) < 130
