"""DICOM display: stored values → what a radiologist sees, in [0, 1] (PS3.3 C.11).

Stored values → Modality LUT (rescale slope/intercept or LUT sequence) → VOI LUT sequence, else window
centre/width (LINEAR, LINEAR_EXACT or SIGMOID), else min–max; colour and palette images → luminance.
Split from :mod:`pneumo.data.dicom` (which parses and decodes) to keep each module readable.
"""

from __future__ import annotations

import numpy as np
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from pneumo.errors import ImageError


def display(arr: np.ndarray, ds) -> np.ndarray:
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        lut = ds.VOILUTSequence[0]
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        top = float(np.max(np.asarray(lut.LUTData, dtype=np.float64))) if "LUTData" in lut else 0.0
        return np.clip(out / top, 0.0, 1.0) if top > 0 else unit(out)
    window = _window(ds)
    if window is None:
        return unit(values)
    centre, width = window
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return unit(values)
    return np.clip((values - (centre - 0.5)) / max(width - 1.0, 1e-9) + 0.5, 0.0, 1.0)


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


def unit(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)
