"""Where a heatmap puts evidence that cannot be anatomy: outside the body, on the film border, on
burned-in text. A share of heat there is a shortcut indicator (a model that reads the "R" marker or the
collimation edge), found from the image itself — no lung model, no annotation.

- border: a strip of ``BORDER`` of the side along every edge (collimation, scanner frames).
- outside the body: the dark background connected to the border (air around the patient). Lungs are
  dark too but enclosed by the chest wall, so a flood fill from the border does not reach them.
- text: small, bright, sharp components (white top-hat) in or next to that background: burned-in
  letters and markers such as "R", "L", "A-P", "PORTABLE".
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

BORDER = 0.03


def regions(img: np.ndarray) -> dict[str, np.ndarray]:
    """``S×S`` image (any intensity scale) → boolean masks ``border``, ``background``, ``text`` and
    ``outside`` (their union: everything that is not the patient's body)."""
    a = np.asarray(img, dtype=np.float32)
    lo, hi = np.percentile(a, [1, 99])
    a = np.clip((a - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    s = a.shape[0]
    border = np.zeros(a.shape, dtype=bool)
    k = max(1, round(BORDER * s))
    border[:k], border[-k:], border[:, :k], border[:, -k:] = True, True, True, True
    smooth = ndi.gaussian_filter(a, sigma=max(1.0, s / 112))
    dark = smooth < 0.2 + 0.2 * float(np.median(smooth[border]) if border.any() else 0.0)
    lab, _ = ndi.label(dark)
    edge_labels = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    background = np.isin(lab, edge_labels[edge_labels > 0])
    size = max(3, s // 28)
    tophat = a - ndi.grey_opening(a, size=(size, size))
    band = np.ones(a.shape, dtype=bool)  # markers are placed towards the film's edges, not mid-chest
    m = round(0.22 * s)
    band[m:-m, m:-m] = False
    lab_t, _ = ndi.label((tophat > 0.25) & (a > 0.45) & band)
    text = np.zeros(a.shape, dtype=bool)
    for i, sl in enumerate(ndi.find_objects(lab_t), start=1):
        comp = lab_t[sl] == i
        if not 4 <= comp.sum() <= 0.005 * a.size:
            continue
        grow = tuple(slice(max(0, d.start - 3), d.stop + 3) for d in sl)
        mine = np.zeros(a.shape, dtype=bool)
        mine[sl] = comp
        ring = ndi.binary_dilation(mine[grow], iterations=3) & ~mine[grow]
        # letters are bright strokes on a much darker surround; the skin line and ribs are not
        if ring.any() and a[grow][mine[grow]].mean() - a[grow][ring].mean() > 0.3:
            text[grow] |= ndi.binary_dilation(mine[grow], iterations=1)
    return {"border": border, "background": background, "text": text, "outside": border | background | text}


def outside_share(heatmap: np.ndarray, img: np.ndarray) -> dict[str, float]:
    """Share of the map's total heat (≥ 0) in each region of :func:`regions`, and each region's area
    share (``*_area``: what a map that ignores the image would score)."""
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0.0, None)
    total = float(h.sum())
    out = {}
    for name, mask in regions(img).items():
        out[name] = float(h[mask].sum() / total) if total > 0 else 0.0
        out[f"{name}_area"] = float(mask.mean())
    return out
