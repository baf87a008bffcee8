"""``preprocess``: from ``read_image`` pixels to the tensor a model eats, per a saved spec.

The spec travels inside every model bundle (``pneumo.json`` → ``preprocess``), so evaluation,
``predict`` and the server feed a model exactly as it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
from PIL import Image

from pneumo.errors import ConfigError

ResizeRule = Literal["stretch", "letterbox", "center_crop"]
NormRule = Literal["unit", "zscore"]


@dataclass(frozen=True)
class PreprocessSpec:
    """How to turn pixels into model input.

    Args:
        size: output side in pixels (the model sees ``1×size×size``).
        resize: ``stretch`` (the shared training set was made this way: aspect ratio not kept),
            ``letterbox`` (keep aspect, pad with black) or ``center_crop`` (keep aspect, crop the long side).
        normalise: ``unit`` leaves ``[0, 1]``; ``zscore`` maps to ``(x - mean) / std``.
        mean, std: used by ``zscore``.
        equalise: histogram-equalise each image (256 bins, mid-rank CDF) before ``normalise``. It makes
            the input invariant to any monotonic change of exposure (gamma, window/level, contrast,
            brightness): on this dataset exposure differs between the classes' acquisition series, a
            cue that does not hold on new films. :func:`equalise_hist` and
            ``training.cache.normalise_batch`` compute the same values.
    """

    size: int = 224
    resize: ResizeRule = "stretch"
    normalise: NormRule = "zscore"
    mean: float = 0.5
    std: float = 0.25
    equalise: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 16 <= self.size <= 2048:
            raise ConfigError(f"preprocess.size must be an integer in 16..2048, got {self.size!r}")
        if self.resize not in ("stretch", "letterbox", "center_crop"):
            raise ConfigError(f"preprocess.resize must be stretch, letterbox or center_crop, got {self.resize!r}")
        if self.normalise not in ("unit", "zscore"):
            raise ConfigError(f"preprocess.normalise must be unit or zscore, got {self.normalise!r}")
        if self.std <= 0:
            raise ConfigError(f"preprocess.std must be positive, got {self.std!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown preprocess keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)


# -- the model's geometry, both ways: every caller (training cache, serving, heatmaps, displays) uses these --
def placement(shape: tuple[int, int], size: int, rule: ResizeRule) -> tuple[int, int, int, int]:
    """``(nh, nw, top, left)``: the film scaled for ``rule`` and where it sits. letterbox: the scaled
    film inside the ``size×size`` grid at ``(top, left)``; center_crop: the grid inside the scaled film
    at ``(top, left)``; stretch: the grid itself."""
    h, w = shape
    if rule == "stretch":
        return size, size, 0, 0
    scale = size / max(h, w) if rule == "letterbox" else size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if rule == "letterbox":
        return nh, nw, (size - nh) // 2, (size - nw) // 2
    return nh, nw, (nh - size) // 2, (nw - size) // 2


def resize_image(pixels: np.ndarray, size: int, rule: ResizeRule = "stretch") -> np.ndarray:
    """Resize a float32 H×W image to ``size×size`` by ``rule`` (antialiased bilinear)."""
    if rule == "stretch" and pixels.shape == (size, size):
        return pixels.astype(np.float32, copy=False)
    nh, nw, top, left = placement(pixels.shape, size, rule)
    resized = resample(pixels, nh, nw)
    if rule == "letterbox":
        out = np.zeros((size, size), dtype=np.float32)
        out[top : top + nh, left : left + nw] = resized
        return out
    return resized[top : top + size, left : left + size]


def undo_resize(grid: np.ndarray, shape: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    """The inverse of :func:`resize_image`: a ``S×S`` model-grid map → ``H×W`` at the film's geometry.

    letterbox: the padding bands are cut off; center_crop: the cropped-off margins, which the model
    never saw, get 0.
    """
    m = np.asarray(grid, dtype=np.float32)
    nh, nw, top, left = placement(shape, spec.size, spec.resize)
    if spec.resize == "letterbox":
        m = m[top : top + nh, left : left + nw]
    elif spec.resize == "center_crop":
        frame = np.zeros((nh, nw), dtype=np.float32)
        frame[top : top + spec.size, left : left + spec.size] = m
        m = frame
    return resample(m, *shape)


def valid_region(shape: tuple[int, int], spec: PreprocessSpec) -> tuple[slice, slice]:
    """The part of the model grid that shows the film (all of it but letterbox's padding)."""
    if spec.resize != "letterbox":
        return slice(None), slice(None)
    nh, nw, top, left = placement(shape, spec.size, spec.resize)
    return slice(top, top + nh), slice(left, left + nw)


def fit_long_side(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(h, w)`` with the long side at most ``max_side`` and the aspect kept (never enlarged): the
    size every display of a film (page, overlay, report, DICOM picture) is drawn at."""
    h, w = shape
    scale = min(1.0, max_side / max(h, w))
    return (h, w) if scale == 1.0 else (max(1, round(h * scale)), max(1, round(w * scale)))


def resample(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float ``H×W`` array resampled to ``height×width`` (PIL bilinear, antialiased when shrinking)."""
    if a.shape == (height, width):
        return np.asarray(a, dtype=np.float32).copy()
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


EQ_BINS = 256


def equalise_hist(pixels: np.ndarray) -> np.ndarray:
    """``[0, 1]`` H×W → each pixel's mid-rank CDF value in its image (256 bins), float32 in (0, 1).

    Ties get the middle of their bin's CDF step, so an image's output has mean 0.5 whatever its exposure.
    """
    q = np.clip((pixels * EQ_BINS).astype(np.int64), 0, EQ_BINS - 1)
    hist = np.bincount(q.ravel(), minlength=EQ_BINS).astype(np.float64)
    cdf = (np.cumsum(hist) - 0.5 * hist) / q.size
    return cdf[q].astype(np.float32)


def normalise(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply the spec's intensity normalisation to already-resized pixels."""
    if spec.equalise:
        pixels = equalise_hist(pixels)
    if spec.normalise == "zscore":
        return (pixels - np.float32(spec.mean)) / np.float32(spec.std)
    return pixels


def preprocess(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """``read_image`` pixels (float32 H×W in [0, 1]) → float32 ``1×size×size`` model input."""
    if pixels.ndim != 2:
        raise ValueError(f"preprocess expects a 2-D grayscale array, got shape {pixels.shape}")
    out = normalise(resize_image(pixels, spec.size, spec.resize), spec)
    return np.ascontiguousarray(out[None, :, :], dtype=np.float32)
