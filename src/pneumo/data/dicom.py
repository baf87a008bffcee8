"""DICOM pixels through pydicom, in pneumo's intensity convention.

Kept apart from :mod:`pneumo.data.imageio` so that pydicom is imported only when a DICOM arrives.
Patient fields are never read here: only pixel data and the tags that say how to display it.
"""

from __future__ import annotations

import io

import numpy as np

from pneumo.errors import ImageError


def read_dicom_pixels(
    data: bytes, source: str, *, max_pixels: int, frame: int | None
) -> tuple[np.ndarray, str, int]:
    """Decode DICOM bytes → (float32 H×W in [0, 1], photometric interpretation, bits stored).

    Applies the Modality LUT (rescale slope/intercept), then the VOI LUT or window (else min–max),
    and inverts MONOCHROME1 so that brighter always means denser.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{source}: the DICOM file is damaged or truncated ({exc})", code="truncated") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError(f"{source}: the DICOM file has no pixel data", code="dicom_no_pixels")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise ImageError(
            f"{source}: {cols}×{rows} = {rows * cols:,} pixels is over the limit of {max_pixels:,}",
            code="too_many_pixels",
            status=413,
        )
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1 and frame is None:
        raise ImageError(
            f"{source}: the DICOM file has {n_frames} frames; choose one (frame=0..{n_frames - 1})",
            code="dicom_multiframe",
        )
    if frame is not None and not 0 <= frame < n_frames:
        raise ImageError(f"{source}: frame {frame} does not exist (the file has {n_frames})", code="dicom_frame")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing handlers / bad streams
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageError(
            f"{source}: cannot decode DICOM pixel data (transfer syntax {syntax}): {exc}",
            code="dicom_unsupported",
            status=415,
        ) from exc
    if n_frames > 1:
        arr = arr[frame]
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            return _unit(arr), photometric, int(ds.get("BitsStored", 8))
        raise ImageError(f"{source}: unsupported photometric interpretation {photometric}", code="dicom_unsupported")
    if arr.ndim != 2:
        raise ImageError(f"{source}: expected a 2-D image, got pixel array of shape {arr.shape}", code="dicom_unsupported")
    arr = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr, ds, index=0)
    out = _unit(np.asarray(arr, dtype=np.float32))
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out, photometric, int(ds.get("BitsStored", 16))


def _unit(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return (arr - lo) / (hi - lo)
