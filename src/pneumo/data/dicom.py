"""DICOM pixels through pydicom, in pneumo's intensity convention.

Kept apart from :mod:`pneumo.data.imageio` so that pydicom is imported only when a DICOM arrives.
Patient fields are never read here: only pixel data and the tags that say how to display it.

Display pipeline (PS3.3 C.11): stored values → Modality LUT (rescale slope/intercept or LUT sequence)
→ VOI LUT sequence, else window centre/width (LINEAR, LINEAR_EXACT or SIGMOID), else min–max → [0, 1];
``MONOCHROME1`` is then inverted so that brighter always means denser.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from pneumo.errors import ImageError


def read_dicom_pixels(
    data: bytes, source: str, *, max_pixels: int, frame: int | None
) -> tuple[np.ndarray, str, int]:
    """Decode DICOM bytes → (float32 ``H×W`` in [0, 1], photometric interpretation, bits stored)."""
    import pydicom

    with warnings.catch_warnings():  # pydicom warns on every odd tag; the caller wants pixels or an ImageError
        warnings.simplefilter("ignore")
        return _read(pydicom, data, source, max_pixels, frame)


def _read(pydicom, data: bytes, source: str, max_pixels: int, frame: int | None) -> tuple[np.ndarray, str, int]:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise ImageError(f"{source}: the DICOM file is damaged or truncated ({exc})", code="truncated") from exc
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(f"{source}: the DICOM file has no pixel data (not an image object)", code="dicom_no_pixels")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise ImageError(f"{source}: the DICOM file declares no image size (Rows×Columns = {rows}×{cols})", code="truncated")
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
        raise ImageError(f"{source}: frame {frame} does not exist (the file has {n_frames})", code="bad_frame")
    arr = _decode(ds, source, frame if n_frames > 1 else None)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", 8 if photometric not in ("MONOCHROME1", "MONOCHROME2") else 16) or 16)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return _colour_to_gray(arr, ds, photometric, source, bits), photometric, bits
    if arr.ndim != 2:
        raise ImageError(f"{source}: expected a 2-D image, got a pixel array of shape {arr.shape}", code="dicom_unsupported")
    out = _display(arr, ds)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32, copy=False), photometric, bits


def _decode(ds, source: str, index: int | None) -> np.ndarray:
    """Decode one frame (``index``) or the only frame; a missing decoder is a 415, bad bytes a 422."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", None) or str(syntax or "unknown")
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(syntax) if syntax is not None else None
    except Exception:  # noqa: BLE001 - pydicom raises NotImplementedError for syntaxes it does not know
        decoder = None
    if syntax is not None and (decoder is None or not decoder.is_available):
        raise ImageError(
            f"{source}: DICOM transfer syntax {name} ({syntax}) cannot be decoded here "
            "(no installed decoder; convert the file to uncompressed or JPEG/RLE DICOM, or to PNG)",
            code="dicom_unsupported",
            status=415,
        )
    try:
        if index is not None:
            ds.pixel_array_options(index=index)
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for bad streams
        raise ImageError(
            f"{source}: cannot decode the DICOM pixel data ({name}): {exc}", code="truncated"
        ) from exc


def _display(arr: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        lut = ds.VOILUTSequence[0]
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        top = float(np.max(np.asarray(lut.LUTData, dtype=np.float64))) if "LUTData" in lut else 0.0
        return np.clip(out / top, 0.0, 1.0) if top > 0 else _unit(out)
    window = _window(ds)
    if window is None:
        return _unit(values)
    centre, width = window
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return _unit(values)
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


def _colour_to_gray(arr: np.ndarray, ds, photometric: str, source: str, bits: int) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        bits = 16 if arr.dtype == np.uint16 else 8
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        gray = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(gray / float(2 ** min(max(bits, 1), 16) - 1), 0.0, 1.0)
    raise ImageError(f"{source}: unsupported DICOM photometric interpretation {photometric}", code="dicom_unsupported", status=415)


def _unit(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)
