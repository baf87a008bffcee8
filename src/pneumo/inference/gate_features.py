"""What the chest-X-ray gate looks at: image geometry and a low-resolution, exposure-normalised view.

Independent of any pneumonia model on purpose, so a retrained model keeps its gate. Every frontal
chest film shares a coarse layout (two dark lung fields either side of a bright mediastinum, shoulders
at the top, diaphragm domes below) whatever the hospital, the exposure or the patient's age; these
features describe that layout after histogram equalisation (exposure and detector differences gone)
plus a little texture and intensity shape that separate photos, documents, CT/MR and noise.
"""

from __future__ import annotations

import numpy as np
from skimage.feature import hog

from pneumo.data.preprocess import equalise_hist, resize_image

VIEW = 64  # side of the square low-resolution view
MIN_SIDE = 64
MAX_ASPECT = 3.0


def geometry_reason(height: int, width: int) -> str | None:
    """Why an image of this size cannot be a chest radiograph, or ``None`` when its shape is plausible."""
    if min(height, width) < MIN_SIDE:
        return f"image is {width}×{height} px: a chest radiograph has at least {MIN_SIDE} px a side"
    aspect = max(height, width) / min(height, width)
    if aspect > MAX_ASPECT:
        return f"image is {width}×{height} px (aspect {aspect:.1f}): a chest radiograph is not that elongated"
    return None


def _pool(a: np.ndarray, k: int) -> np.ndarray:
    n = a.shape[0] // k
    return a.reshape(n, k, n, k).mean(axis=(1, 3))


def gate_features(pixels: np.ndarray) -> np.ndarray:
    """``read_image`` pixels (float32 H×W in [0, 1], any size) → a float64 feature vector.

    Layout: 16×16 equalised thumbnail (256), its left–right mirror differences (128), HOG of the 64-px
    equalised view (324), row and column profiles (2×32), 16-bin raw histogram, and 10 scalars (raw
    mean/std, clipped fractions, gradient and Laplacian energy, left–right and top–bottom contrasts,
    centre–border contrast).
    """
    small = resize_image(np.asarray(pixels, dtype=np.float32), VIEW, "stretch").astype(np.float64)
    small = np.clip(small, 0.0, 1.0)
    eq = equalise_hist(small.astype(np.float32)).astype(np.float64)
    t16 = _pool(eq, 4)
    thumb = t16.ravel()
    mirror = np.abs(t16 - t16[:, ::-1])[:, :8].ravel()  # a frontal film is roughly left-right symmetric
    grad = hog(eq, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2), feature_vector=True)
    rows = eq.mean(axis=1).reshape(32, 2).mean(axis=1)
    cols = eq.mean(axis=0).reshape(32, 2).mean(axis=1)
    hist = np.histogram(small, bins=16, range=(0.0, 1.0))[0] / small.size
    gy, gx = np.gradient(small)
    lap = np.abs(4 * small[1:-1, 1:-1] - small[:-2, 1:-1] - small[2:, 1:-1] - small[1:-1, :-2] - small[1:-1, 2:])
    h = VIEW // 2
    centre = eq[16:48, 16:48].mean()
    scalars = [
        small.mean(),
        small.std(),
        float((small <= 0.02).mean()),
        float((small >= 0.98).mean()),
        float(np.hypot(gx, gy).mean()),
        float(lap.mean()),
        float(np.abs(eq - eq[:, ::-1]).mean()),
        float(eq[:h].mean() - eq[h:].mean()),
        float(eq[:, :h].mean() - eq[:, h:].mean()),
        float(centre - (eq.sum() - eq[16:48, 16:48].sum()) / (eq.size - 32 * 32)),
    ]
    return np.concatenate([thumb, mirror, grad, rows, cols, hist, scalars])


N_FEATURES = 256 + 128 + 324 + 64 + 16 + 10
