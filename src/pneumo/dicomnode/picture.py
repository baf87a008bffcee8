"""The picture in the Secondary Capture: the film, the heatmap over it, a colour legend and burned-in text.

Why burned in: a Secondary Capture is shown by every viewer as plain pixels; overlays, presentation
states and SR links are not. So everything a reader must see (probability, decision, model version,
"not for diagnosis") is drawn into the pixels, in a band below the film so no anatomy is hidden.
"""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pneumo.data.preprocess import fit_long_side, resample
from pneumo.explain.render import blend_heat, legend_strip

MAX_SIDE = 1024
ALPHA = 0.6  # the page's and the PDF's overlay opacity


def _fit(pixels: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The film and its heat at display size (long side ≤ ``MAX_SIDE``), in [0, 1]."""
    size = fit_long_side(pixels.shape, MAX_SIDE)
    out = [np.clip(a if size == a.shape else resample(a, *size), 0.0, 1.0).astype(np.float32) for a in (pixels, heat)]
    return out[0], out[1]


def render(pixels: np.ndarray, heat: np.ndarray | None, lines: list[str]) -> np.ndarray:
    """``read_image`` pixels (+ heatmap, same ``H×W``) → ``H'×W'×3`` uint8 RGB for a Secondary Capture.

    The film keeps its aspect (long side ≤ 1024); the heat is laid over it in the one heat look of the
    page, the PDF and the CLI (:func:`pneumo.explain.render.blend_heat`: no colour where there is no
    evidence, yellow to red). A legend bar sits at the right, ``lines`` of text in a black band
    underneath. ``heat`` may be at another resolution of the same film (it is resampled to fit).
    """
    img, hm = _fit(pixels, heat if heat is not None else np.zeros_like(pixels))
    h, w = img.shape
    grey = np.repeat(img[..., None], 3, axis=2)
    if heat is not None:
        grey = blend_heat(grey, hm, ALPHA)
    film = (np.clip(grey, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    font_px = max(14, min(28, w // 40))
    font = ImageFont.load_default(size=font_px)
    small = ImageFont.load_default(size=max(12, font_px - 4))
    legend_w = 6 * font_px + 30
    per_line = max(20, int((w + legend_w - 20) / (0.55 * font_px)))
    lines = [part for line in lines for part in (textwrap.wrap(line, per_line) or [""])]
    band_h = int(len(lines) * font_px * 1.35) + font_px
    canvas = Image.new("RGB", (w + legend_w, h + band_h), (0, 0, 0))
    canvas.paste(Image.fromarray(film, mode="RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)

    if heat is not None:  # legend: the shared bar upright, strongest on top; black where no colour is drawn
        top, bottom, x0 = font_px * 2, h - font_px * 2, w + 12
        bar_img = legend_strip(max(2, bottom - top), 16, background=(0, 0, 0)).rotate(90, expand=True)
        canvas.paste(bar_img, (x0, top))
        draw.text((x0 + 22, top), "red:\nstrongest\nevidence", fill=(255, 255, 255), font=small)
        draw.text((x0 + 22, bottom), "no colour:\nlittle or\nnone", fill=(255, 255, 255), font=small, anchor="ld")

    y = h + font_px // 2
    for i, line in enumerate(lines):
        colour = (255, 215, 0) if i == 0 else (255, 255, 255)
        draw.text((10, y), line, fill=colour, font=font)
        y += int(font_px * 1.35)
    return np.asarray(canvas, dtype=np.uint8)
