"""Pictures of heatmaps: a captioned overlay PNG for people, a transparent layer for the web page."""

from __future__ import annotations

import io
import textwrap

import numpy as np
from PIL import Image

from pneumo.data.preprocess import fit_long_side, resample
from pneumo.errors import ConfigError

CMAP = "jet"
MAX_SIDE = 1024


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first drawing: ``pneumo.load()`` + predict
    (which imports this package for the analysis service) should not pay ~0.5 s for a plotting library."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fit(a: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """A float ``H×W`` array at display size (long side ≤ ``max_side``, aspect kept)."""
    size = fit_long_side(a.shape, max_side)
    return a.astype(np.float32, copy=False) if size == a.shape else resample(a, *size)


def _check_pair(pixels: np.ndarray, heatmap: np.ndarray) -> None:
    if np.ndim(pixels) != 2 or np.shape(pixels) != np.shape(heatmap):
        raise ConfigError(f"image {np.shape(pixels)} and heatmap {np.shape(heatmap)} must be the same H×W")


def overlay_png(pixels: np.ndarray, heatmap: np.ndarray, caption: str, alpha: float = 0.45) -> bytes:
    """The X-ray (``H×W`` in [0, 1], original aspect, long side ≤ 1024 px) with ``heatmap`` (same
    ``H×W``, [0, 1]) blended over it in ``jet``, a colour bar and ``caption`` underneath → PNG bytes."""
    _check_pair(pixels, heatmap)
    img, hm = _fit(np.asarray(pixels)), np.clip(_fit(np.asarray(heatmap)), 0.0, 1.0)
    h, w = img.shape
    dpi, left, right, top = 100, 20, 110, 10  # margins in pixels (right: the colour bar and its label)
    fontsize = max(9, min(14, w // 60))
    fig_w = w + left + right
    lines = textwrap.wrap(caption, width=max(20, int(fig_w / (0.62 * fontsize * dpi / 72)))) or [""]
    bottom = int(len(lines) * fontsize * 1.5 * dpi / 72) + 16
    fig_h = h + top + bottom
    plt = _pyplot()
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, w / fig_w, h / fig_h))
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
    shown = ax.imshow(hm, cmap=CMAP, vmin=0.0, vmax=1.0, alpha=float(alpha), interpolation="bilinear")
    ax.set_axis_off()
    cax = fig.add_axes(((left + w + 8) / fig_w, bottom / fig_h, 14 / fig_w, h / fig_h))
    fig.colorbar(shown, cax=cax, label="relative importance")
    fig.text(0.5, (bottom / 2) / fig_h, "\n".join(lines), ha="center", va="center", fontsize=fontsize, linespacing=1.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def heatmap_rgba_png(heatmap: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """Transparent coloured layer for the web viewer: ``jet`` colours, opacity rising with the heat
    (0 where the map is 0), so the page can stack it on the image under an opacity slider.

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
    rgba = _pyplot().get_cmap(CMAP)(hm)
    rgba[..., 3] = np.sqrt(hm)  # faint heat stays faintly visible, cold areas fully transparent
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).round().astype(np.uint8), mode="RGBA").save(buf, format="PNG", optimize=False)
    return buf.getvalue()
