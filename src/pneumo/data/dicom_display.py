"""DICOM display: stored values → what a radiologist sees, in [0, 1] (PS3.3 C.11).

Stored values → Modality LUT (rescale slope/intercept or LUT sequence) → VOI LUT sequence, else window
centre/width (LINEAR, LINEAR_EXACT or SIGMOID), else min–max; colour and palette images → luminance.
Split from :mod:`pneumo.data.dicom` (which parses and decodes) to keep each module readable.
"""

from __future__ import annotations

import numpy as np
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from pneumo.errors import ImageError

STRIP_ROWS = 256  # rows mapped at a time: float64 work arrays of a strip, never of the whole film


def display(arr: np.ndarray, ds) -> np.ndarray:
    """Stored values ``H×W`` → float32 ``H×W`` in [0, 1], a strip of rows at a time (every step is per
    pixel; the min–max fallback takes its range over the whole image first), so a 25 MP film costs its
    float32 result, not five float64 copies of it."""
    def modality(a: np.ndarray) -> np.ndarray:
        return np.asarray(apply_modality_lut(a, ds), dtype=np.float64)

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        lut = ds.VOILUTSequence[0]
        top = float(np.max(np.asarray(lut.LUTData, dtype=np.float64))) if "LUTData" in lut else 0.0

        def voi(a: np.ndarray) -> np.ndarray:
            return np.asarray(apply_voi_lut(modality(a), ds, index=0, prefer_lut=True), dtype=np.float64)

        return _by_strips(arr, lambda a: np.clip(voi(a) / top, 0.0, 1.0)) if top > 0 else unit(arr, voi)
    window = _window(ds)
    if window is None:
        return unit(arr, modality)
    centre, width = window
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
    if function == "SIGMOID":
        return _by_strips(arr, lambda a: 1.0 / (1.0 + np.exp(-4.0 * (modality(a) - centre) / width)))
    if function == "LINEAR_EXACT":
        return _by_strips(arr, lambda a: np.clip((modality(a) - centre) / width + 0.5, 0.0, 1.0))
    if width < 1:
        return unit(arr, modality)
    return _by_strips(
        arr, lambda a: np.clip((modality(a) - (centre - 0.5)) / max(width - 1.0, 1e-9) + 0.5, 0.0, 1.0))


def _by_strips(arr: np.ndarray, fn) -> np.ndarray:
    """``fn`` (per pixel, any float dtype out) over ``arr``'s rows in strips → float32 of ``arr``'s shape."""
    out = np.empty(arr.shape[:2], dtype=np.float32)
    for y in range(0, arr.shape[0], STRIP_ROWS):
        out[y : y + STRIP_ROWS] = fn(arr[y : y + STRIP_ROWS])
    return out


def _window(ds) -> tuple[float, float] | None:
    """First window centre/width, or ``None`` when absent or unusable."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        c, w = ds.WindowCenter, ds.WindowWidth
        c = float(c[0] if _is_multi(c) else c)
        w = float(w[0] if _is_multi(w) else w)
    except (TypeError, ValueError, IndexError):
        return None
    return (c, w) if np.isfinite(c) and np.isfinite(w) and w > 0 else None


def _is_multi(v) -> bool:
    return not isinstance(v, str | bytes | int | float) and hasattr(v, "__getitem__")


def colour_to_gray(arr: np.ndarray, ds, photometric: str, source: str, bits: int) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:  # noqa: BLE001 - missing or damaged palette tables
            raise ImageError(
                f"{source}: the DICOM file is a palette-colour image whose colour palette is missing or damaged",
                code="dicom_unsupported",
                status=415,
            ) from exc
        bits = 16 if arr.dtype == np.uint16 else 8
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        gray = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(gray / float(2 ** min(max(bits, 1), 16) - 1), 0.0, 1.0)
    raise ImageError(
        f"{source}: the DICOM colour format {photometric} is not supported", code="dicom_unsupported", status=415
    )


def unit(arr: np.ndarray, values=None) -> np.ndarray:
    """Min–max of ``values(arr)`` (default: the stored values as float64; non-finite → 0) → [0, 1]
    float32, in strips: one pass for the range, one to map."""
    def finite(a: np.ndarray) -> np.ndarray:
        v = np.asarray(a if values is None else values(a), dtype=np.float64)
        return v if np.isfinite(v).all() else np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)

    lo, hi = np.inf, -np.inf
    for y in range(0, arr.shape[0], STRIP_ROWS):
        v = finite(arr[y : y + STRIP_ROWS])
        lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if hi <= lo:
        return np.zeros(arr.shape[:2], dtype=np.float32)
    return _by_strips(arr, lambda a: (finite(a) - lo) / (hi - lo))
