"""Pictures of heatmaps, one look everywhere: the CLI overlay PNG, the web page's transparent layer,
the PDF report and the DICOM Secondary Capture draw heat with :func:`heat_rgba`.

The look: **no colour where the map has no evidence** (below :data:`FLOOR` of this image's
strongest), then yellow → orange → red with opacity rising with the evidence. So the legend is two
phrases (red: the strongest evidence; no colour: little or none), and a film with weak evidence
stays a plain film, not one tinted blue all over as a full ``jet`` blend left it.
"""

from __future__ import annotations

import functools
import io
import textwrap

import numpy as np
from PIL import Image

from pneumo.data.preprocess import fit_long_side, resample
from pneumo.errors import ConfigError

HEAT_COLOURS = ("#ffd400", "#ff8c00", "#e8000b")  # weakest shown evidence → strongest
FLOOR = 0.25  # heat below this fraction of the image's strongest evidence is not coloured
FULL = 0.7  # heat from here up is drawn fully opaque (times the overlay's opacity)
MAX_SIDE = 1024
LEGEND_HIGH = "red: strongest evidence"
LEGEND_NONE = "no colour: little or none"
CSS_GRADIENT = f"linear-gradient(to right, transparent {100 * FLOOR:.0f}%, {', '.join(HEAT_COLOURS)})"


@functools.cache
def _cmap():
    """The heat colour map, built on first use: matplotlib is imported only when a picture is drawn, so
    ``pneumo.load()`` + predict (which imports this package for the analysis service) does not pay for it."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("pneumo_evidence", HEAT_COLOURS)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first drawing (see :func:`_cmap`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heat_rgba(heatmap: np.ndarray) -> np.ndarray:
    """``H×W`` heat in [0, 1] → ``H×W×4`` float RGBA in [0, 1]: alpha 0 below :data:`FLOOR`, rising to
    1 at :data:`FULL`; colour from yellow (at the floor) to red (at 1)."""
    hm = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    rgba = _cmap()(np.clip((hm - FLOOR) / (1.0 - FLOOR), 0.0, 1.0)).astype(np.float32)
    rgba[..., 3] = np.clip((hm - FLOOR) / (FULL - FLOOR), 0.0, 1.0)
    return rgba


def blend_heat(rgb: np.ndarray, heatmap: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """The film as float RGB ``H×W×3`` in [0, 1] with the heat (same ``H×W``) laid over it at
    ``opacity``: untouched wherever the map shows no evidence."""
    rgba = heat_rgba(heatmap)
    a = rgba[..., 3:] * float(opacity)
    return np.asarray(rgb, dtype=np.float32) * (1.0 - a) + rgba[..., :3] * a


def legend_strip(width: int = 256, height: int = 12, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The legend bar as an RGB image, weakest on the left: ``background`` (no colour) up to the floor,
    then the heat colours at their opacity."""
    rgba = heat_rgba(np.linspace(0.0, 1.0, width))
    bg = np.asarray(background, dtype=np.float32) / 255.0
    rgb = bg * (1.0 - rgba[:, 3:]) + rgba[:, :3] * rgba[:, 3:]
    return Image.fromarray((np.repeat(rgb[None], height, axis=0) * 255 + 0.5).astype(np.uint8), mode="RGB")


def _fit(a: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """A float ``H×W`` array at display size (long side ≤ ``max_side``, aspect kept)."""
    size = fit_long_side(a.shape, max_side)
    return a.astype(np.float32, copy=False) if size == a.shape else resample(a, *size)


def _check_pair(pixels: np.ndarray, heatmap: np.ndarray) -> None:
    if np.ndim(pixels) != 2 or np.shape(pixels) != np.shape(heatmap):
        raise ConfigError(f"image {np.shape(pixels)} and heatmap {np.shape(heatmap)} must be the same H×W")


def overlay_png(pixels: np.ndarray, heatmap: np.ndarray, caption: str, alpha: float = 0.6) -> bytes:
    """The X-ray (``H×W`` in [0, 1], original aspect, long side ≤ 1024 px) with ``heatmap`` (same
    ``H×W``, [0, 1]) laid over it by :func:`blend_heat`, the two-phrase legend and ``caption``
    underneath → PNG bytes."""
    _check_pair(pixels, heatmap)
    img, hm = np.clip(_fit(np.asarray(pixels)), 0.0, 1.0), np.clip(_fit(np.asarray(heatmap)), 0.0, 1.0)
    h, w = img.shape
    dpi, left, right, top = 100, 20, 20, 10  # margins in pixels
    fontsize = max(9, min(14, w // 60))
    fig_w = w + left + right
    lines = textwrap.wrap(caption, width=max(20, int(fig_w / (0.62 * fontsize * dpi / 72)))) or [""]
    line_px = fontsize * 1.5 * dpi / 72
    legend_px = int(line_px) + 14
    bottom = int(len(lines) * line_px) + 16 + legend_px
    fig_h = h + top + bottom
    plt = _pyplot()
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, w / fig_w, h / fig_h))
    ax.imshow(blend_heat(np.repeat(img[..., None], 3, axis=2), hm, alpha), interpolation="bilinear")
    ax.set_axis_off()
    bar_w = min(200, w // 3)
    lax = fig.add_axes((left / fig_w, (bottom - legend_px + 4) / fig_h, bar_w / fig_w, 10 / fig_h))
    lax.imshow(np.asarray(legend_strip(256, 4, (128, 128, 128))), aspect="auto")
    lax.set_axis_off()
    fig.text((left + bar_w + 8) / fig_w, (bottom - legend_px + 9) / fig_h, f"{LEGEND_HIGH}; {LEGEND_NONE}",
             ha="left", va="center", fontsize=fontsize)
    fig.text(0.5, ((bottom - legend_px) / 2) / fig_h, "\n".join(lines), ha="center", va="center", fontsize=fontsize,
             linespacing=1.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def heatmap_rgba_png(heatmap: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """Transparent coloured layer for the web viewer (and the PDF): :func:`heat_rgba`, fully
    transparent where the map shows no evidence, so the page stacks it on the film under its
    opacity slider.

    ``size`` is the output ``(width, height)`` (the displayed image's size); default: the map's own.
    """
    hm = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if hm.ndim != 2:
        raise ConfigError(f"heatmap must be 2-D, got shape {hm.shape}")
    if size is not None:
        w, h = int(size[0]), int(size[1])
        if w < 1 or h < 1:
            raise ConfigError(f"size must be positive (width, height), got {size!r}")
        hm = np.clip(resample(hm, h, w), 0.0, 1.0)
    buf = io.BytesIO()
    Image.fromarray((heat_rgba(hm) * 255).round().astype(np.uint8), mode="RGBA").save(buf, format="PNG", optimize=False)
    return buf.getvalue()
