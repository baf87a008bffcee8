"""``read_image``: the only way pneumo turns a file into pixels.

Training, evaluation, ``predict``, ``explain`` and the server all call this one function, so a model
is never fed differently at serving time than at training time.

Intensity convention (the one to remember): a float32 2-D array ``H×W`` in ``[0, 1]`` at the image's
original geometry, where **brighter means more X-ray attenuation** (bone is bright, air is dark), as a
radiologist sees it on screen. DICOM ``MONOCHROME1`` is inverted to honour this.

Whatever the bytes, the only exception that leaves :func:`read_image` is :class:`ImageError`
(a fuzz test holds it to that): images come from users and the server must answer 4xx, not 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumo.errors import ImageError

DEFAULT_MAX_PIXELS = 50_000_000
DICOM_MAGIC_OFFSET = 128


@dataclass(frozen=True)
class ImageMeta:
    """What was read: where from, its format, its original size and how its pixels were stored."""

    source: str
    format: str
    width: int
    height: int
    mode: str
    bit_depth: int
    sha256: str
    n_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def _load_bytes(src: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src), "<bytes>"
    path = Path(src)
    try:
        if not path.exists():
            raise ImageError(f"{path}: no such file", code="not_found", status=404)
        if not path.is_file():
            raise ImageError(f"{path}: not a file")
        return path.read_bytes(), str(path)
    except (OSError, ValueError) as exc:  # permission denied, name too long, NUL in the name, I/O error
        raise ImageError(f"{path}: cannot read the file ({getattr(exc, 'strerror', None) or exc})", code="unreadable") from exc


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return len(data) >= DICOM_MAGIC_OFFSET + 4 and data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def read_image(
    src: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    frame: int | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read a JPEG, PNG (or other Pillow format) or DICOM file into pneumo's intensity convention.

    Args:
        src: a path, or the file's bytes (as uploaded to the server).
        max_pixels: refuse images with more pixels than this (decompression bombs); checked from the
            header, before anything is decoded.
        frame: for multi-frame DICOM, which frame to read; without it such files are refused.
            Multi-page rasters (TIFF, GIF) read page ``frame`` (default the first).

    Returns:
        ``(pixels, meta)``: ``pixels`` is float32 ``H×W`` in ``[0, 1]``, brighter = denser, upright
        (EXIF orientation applied).

    Raises:
        ImageError: empty, truncated, not an image, too many pixels, unsupported DICOM.
    """
    data, source = _load_bytes(src)
    if not data:
        raise ImageError(f"{source}: the file is empty", code="empty")
    digest = hashlib.sha256(data).hexdigest()
    try:
        if is_dicom(data):
            from pneumo.data.dicom import read_dicom_pixels

            pixels, fmt_mode, bits = read_dicom_pixels(data, source, max_pixels=max_pixels, frame=frame)
            fmt = "DICOM"
        else:
            with warnings.catch_warnings():  # Pillow warns on every odd tag; callers get pixels or an ImageError
                warnings.simplefilter("ignore")
                pixels, fmt, fmt_mode, bits = _read_raster(data, source, max_pixels, frame)
    except ImageError:
        raise
    except MemoryError as exc:
        raise ImageError(f"{source}: not enough memory to decode the image", code="too_many_pixels", status=413) from exc
    except Exception as exc:  # a decoder bug on hostile bytes is still the input's fault, never a 500
        raise ImageError(f"{source}: the image cannot be decoded ({type(exc).__name__}: {exc})", code="undecodable") from exc
    if pixels.ndim != 2 or pixels.size == 0:
        raise ImageError(f"{source}: decoded to an empty or non-2-D array {pixels.shape}", code="undecodable")
    pixels = np.clip(np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32, copy=False)
    h, w = pixels.shape
    meta = ImageMeta(source, fmt, w, h, fmt_mode, bits, digest, len(data))
    return pixels, meta


def _open_checked(data: bytes, source: str, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse over-large images before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{source}: image too large ({exc})", code="too_many_pixels", status=413) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{source}: not an image pneumo can read (expected JPEG, PNG or DICOM)", code="not_an_image"
        ) from exc
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(
            f"{source}: {w}×{h} = {w * h:,} pixels is over the limit of {max_pixels:,}",
            code="too_many_pixels",
            status=413,
        )
    if w <= 0 or h <= 0:
        raise ImageError(f"{source}: the image has no pixels ({w}×{h})", code="empty")
    return im


def _read_raster(data: bytes, source: str, max_pixels: int, frame: int | None) -> tuple[np.ndarray, str, str, int]:
    im = _open_checked(data, source, max_pixels)
    fmt = im.format or "unknown"
    n_frames = getattr(im, "n_frames", 1)
    if frame is not None and not 0 <= frame < n_frames:
        raise ImageError(f"{source}: frame {frame} does not exist (the file has {n_frames})", code="bad_frame")
    try:
        if n_frames > 1:
            im.seek(frame or 0)
        mode = im.mode
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{source}: the image is damaged or truncated ({exc})", code="truncated") from exc
    with contextlib.suppress(Exception):  # a broken EXIF block: keep the pixels as stored, don't refuse
        im = ImageOps.exif_transpose(im)
    return _to_unit_gray(im), fmt, mode, _bit_depth(mode)


def _bit_depth(mode: str) -> int:
    return {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}.get(mode, 8)


def _to_unit_gray(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → float32 luminance ``H×W`` in [0, 1]; transparent pixels are composited on black."""
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        hi = 1.0 if mode == "F" and peak <= 1.0 else 65535.0 if peak > 255 else 255.0
        return np.clip(arr / hi, 0.0, 1.0)
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im.convert("RGBA"))
    if im.mode != "L":
        try:
            im = im.convert("L")
        except ValueError:  # e.g. LAB: its first band is the lightness
            im = im.getchannel(0)
    return np.asarray(im, dtype=np.float32) / 255.0
