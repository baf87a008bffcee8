"""``read_image``: the only way pneumo turns a file into pixels.

Training, evaluation, ``predict``, ``explain``, the server and the DICOM node all call this one
function, so a model is never fed differently at serving time than at training time, and a file is
accepted or refused with the same words everywhere.

Intensity convention (the one to remember): a float32 2-D array ``H×W`` in ``[0, 1]`` at the image's
original geometry, where **brighter means more X-ray attenuation** (bone is bright, air is dark), as a
radiologist sees it on screen. DICOM ``MONOCHROME1`` is inverted to honour this.

Order of work, cheapest first: the bytes decide the format (:mod:`pneumo.data.sniff`), the header
decides whether the declared image is acceptable (:mod:`pneumo.data.limits`, :mod:`pneumo.data.headers`),
and only then is anything decoded. Whatever the bytes, the only exception that leaves
:func:`read_image` is :class:`ImageError` (a fuzz test holds it to that), and its message names what is
wrong with the file in plain words: images come from users and the server must answer 4xx, not 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import struct
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pneumo.data.headers import check_raster
from pneumo.data.limits import DECODED_BYTES_PER_PIXEL, DEFAULT_MAX_PIXELS, check_decoded_bytes
from pneumo.data.sniff import (
    ACCEPTED,
    DICOM_MAGIC_OFFSET,
    is_dicom,
    misleading_name,
    sniff,
    unsupported_message,
)
from pneumo.errors import ImageError

__all__ = ["DEFAULT_MAX_PIXELS", "DICOM_MAGIC_OFFSET", "ImageMeta", "decode_image", "is_dicom", "load_bytes",
           "read_image"]

log = logging.getLogger(__name__)


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


def load_bytes(src: str | Path | bytes) -> tuple[bytes, str]:
    """A path or bytes → ``(the file's bytes, the name errors use)``: the one file read of
    :func:`read_image`, apart so a caller that must look at the bytes first (the DICOM header policy)
    reads the file once and hands them to :func:`decode_image`."""
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src), "<bytes>"
    path = Path(src)
    try:
        if not path.exists():
            raise ImageError(f"{path}: no such file", code="not_found", status=404)
        if path.is_dir():
            raise ImageError(f"{path}: is a folder; give image files (pneumo predict expands folders)",
                             code="is_a_directory")
        if not path.is_file():
            raise ImageError(f"{path}: not a file")
        return path.read_bytes(), str(path)
    except (OSError, ValueError) as exc:  # permission denied, name too long, NUL in the name, I/O error
        raise ImageError(f"{path}: cannot read the file ({getattr(exc, 'strerror', None) or exc})",
                         code="unreadable") from exc


def read_image(
    src: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    frame: int | None = None,
    min_side: int = 1,
    target: int | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read a JPEG, PNG or DICOM file into pneumo's intensity convention.

    Args:
        src: a path, or the file's bytes (as uploaded to the server).
        max_pixels: refuse images with more pixels than this (decompression bombs); checked from the
            header, before anything is decoded (for DICOM: rows × columns × frames).
        frame: for multi-frame DICOM, which frame to read; without it such files are refused.
            An animated PNG reads frame ``frame`` (default the first).
        min_side: refuse images with a side shorter than this, from the header.
        target: only the model input is needed, at ``target`` pixels a side: a JPEG may then be
            decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling (``Image.draft``), never
            below ``target`` a side, for the caller to resample once (:func:`pneumo.data.preprocess`).
            Other formats, and ``None``, read at the original geometry.

    Returns:
        ``(pixels, meta)``: ``pixels`` is float32 ``H×W`` in ``[0, 1]``, brighter = denser, upright
        (EXIF orientation applied). ``meta.width``/``meta.height`` are always the original image's,
        also when ``target`` gave smaller pixels.

    Raises:
        ImageError: empty, truncated, not JPEG/PNG/DICOM, too many pixels, absurd shape, unsupported DICOM.
    """
    data, source = load_bytes(src)
    return decode_image(data, source, max_pixels=max_pixels, frame=frame, min_side=min_side, target=target)


def decode_image(
    data: bytes,
    source: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    frame: int | None = None,
    min_side: int = 1,
    target: int | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """:func:`read_image` of bytes already read by :func:`load_bytes`; ``source`` names them in errors
    (``"<bytes>"`` for an upload)."""
    if not data:
        raise ImageError(f"{source}: the file is empty", code="empty")
    kind = sniff(data)
    if kind not in ACCEPTED:
        raise ImageError(f"{source}: {unsupported_message(kind)}", code="unsupported_format", status=415)
    if source != "<bytes>" and (note := misleading_name(kind, source)):
        log.warning("%s: %s", source, note)
    digest = hashlib.sha256(data).hexdigest()
    try:
        if kind == "DICOM":
            from pneumo.data.dicom import read_dicom_pixels  # lazy: pydicom costs start-up time

            pixels, fmt_mode, bits = read_dicom_pixels(
                data, source, max_pixels=max_pixels, frame=frame, min_side=min_side
            )
            fmt, size = "DICOM", None
        else:
            check_raster(data, kind, source, max_pixels=max_pixels, min_side=min_side)
            with warnings.catch_warnings():  # Pillow warns on every odd tag; callers get pixels or an ImageError
                warnings.simplefilter("ignore")
                pixels, fmt_mode, bits, size = _read_raster(data, kind, source, max_pixels, frame, target)
            fmt = kind
    except ImageError:
        raise
    except MemoryError as exc:
        raise ImageError(f"{source}: not enough memory to decode this image", code="too_many_pixels",
                         status=413) from exc
    except RecursionError as exc:
        raise ImageError(f"{source}: the file's structure is damaged (it nests without end)",
                         code="undecodable") from exc
    except Exception as exc:  # a decoder bug on hostile bytes is still the input's fault, never a 500
        raise ImageError(f"{source}: the {kind} file is damaged and cannot be decoded", code="undecodable") from exc
    if pixels.ndim != 2 or pixels.size == 0:
        raise ImageError(f"{source}: the file decoded to no usable image", code="undecodable")
    pixels = np.asarray(pixels, dtype=np.float32)
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    if fmt == "DICOM" or fmt_mode in ("I", "F"):  # integer rasters ÷ their maximum are finite and in [0, 1]
        np.nan_to_num(pixels, copy=False, nan=0.0, posinf=1.0, neginf=0.0)  # in place: 50 MP is 200 MB a copy
        np.clip(pixels, 0.0, 1.0, out=pixels)
    h, w = pixels.shape
    w, h = size or (w, h)
    meta = ImageMeta(source, fmt, w, h, fmt_mode, bits, digest, len(data))
    return pixels, meta


def _open(data: bytes, kind: str, source: str, max_pixels: int) -> Image.Image:
    """Open the header with Pillow's guesser restricted to the format the bytes already showed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[kind])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # only reachable with a max_pixels above Pillow's own threshold: still answer in pneumo's words
        raise ImageError(f"{source}: the image is too large to decode here", code="too_many_pixels",
                         status=413) from exc
    except ValueError as exc:  # e.g. a PNG text/ICC block that inflates past Pillow's safety limit
        raise ImageError(f"{source}: the {kind} file carries an oversized or damaged metadata block",
                         code="undecodable") from exc
    except (OSError, SyntaxError, EOFError, struct.error) as exc:
        raise ImageError(f"{source}: the {kind} file is damaged or truncated", code="truncated") from exc


def _read_raster(data: bytes, kind: str, source: str, max_pixels: int, frame: int | None,
                 target: int | None = None) -> tuple[np.ndarray, str, int, tuple[int, int]]:
    """Decode → ``(pixels, mode, bits, (width, height) of the whole upright image)``."""
    im = _open(data, kind, source, max_pixels)
    n_frames = getattr(im, "n_frames", 1)
    if frame is not None and not 0 <= frame < n_frames:
        raise ImageError(f"{source}: frame {frame} does not exist (the file has {n_frames})", code="bad_frame")
    try:
        if n_frames > 1:
            im.seek(frame or 0)
        mode, full = im.mode, im.size
        gray = _over_budget_colour_jpeg(im, kind, max_pixels)
        if gray or (kind == "JPEG" and target):  # libjpeg's DCT scaling: ÷2/4/8, never below target a side
            im.draft("L" if gray else im.mode, (target, target) if target else None)
        check_decoded_bytes(*im.size, _raster_bytes(im.mode), source, max_pixels=max_pixels,
                            what=f"{im.mode} pixels")
        drafted = im.size
        im.load()
    except ImageError:
        raise
    except ValueError as exc:
        raise ImageError(f"{source}: the {kind} file carries an oversized or damaged metadata block",
                         code="undecodable") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise ImageError(
            f"{source}: the {kind} file is damaged or truncated (its image data stops or breaks before the "
            "image is complete)",
            code="truncated",
        ) from exc
    with contextlib.suppress(Exception):  # a broken EXIF block: keep the pixels as stored, don't refuse
        ImageOps.exif_transpose(im, in_place=True)  # not a copy of every upright film's raster
    upright = full if im.size == drafted else (full[1], full[0])  # EXIF turned it a quarter
    return _to_unit_gray(im), mode, _bit_depth(mode), upright


def _raster_bytes(mode: str) -> int:
    """Bytes a pixel takes in Pillow's memory once decoded (every multi-band mode is stored in 32 bits)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _over_budget_colour_jpeg(im: Image.Image, kind: str, max_pixels: int) -> bool:
    """A colour JPEG whose RGB raster is over the decoded-bytes limit: libjpeg decodes it straight to
    its luma plane instead (the BT.601 weights of Pillow's RGB → L, within one grey level), so a large
    phone photo of a film still reads. Every other raster over the limit is refused from its header."""
    w, h = im.size
    return kind == "JPEG" and im.mode == "RGB" and w * h * 4 > max_pixels * DECODED_BYTES_PER_PIXEL


def _bit_depth(mode: str) -> int:
    return {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}.get(mode, 8)


STRIP_ROWS = 256  # rows converted at a time in a wide image: the work copies of a strip, not of the image
STRIP_PIXELS = STRIP_ROWS * 4096  # a narrower image takes more rows a strip; a small one is one strip, uncopied


def _to_unit_gray(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → float32 luminance ``H×W`` in [0, 1]; transparent pixels are composited on black.

    Converted a strip of rows at a time into one float32 array, so the memory beyond the decoded
    raster and the result is a strip's worth (a whole-image RGBA composite + float copy cost 4× the
    raster). Each strip goes through :func:`_strip_to_unit_gray`, a per-pixel rule, so the values are
    those of converting the whole image at once."""
    w, h = im.size
    rows = max(STRIP_ROWS, STRIP_PIXELS // max(w, 1))
    strips = [(y, min(h, y + rows)) for y in range(0, h, rows)]
    peak = None
    if im.mode in ("I", "F"):  # the scale depends on the whole image's brightest pixel
        with warnings.catch_warnings():  # an all-NaN float image: its peak is NaN, as before
            warnings.simplefilter("ignore", RuntimeWarning)
            peak = float(np.nanmax([np.nanmax(np.asarray(_rows(im, y0, y1), np.float32)) for y0, y1 in strips]))
    if len(strips) == 1:
        return np.asarray(_strip_to_unit_gray(im, peak), dtype=np.float32)
    out = np.empty((h, w), dtype=np.float32)
    for y0, y1 in strips:
        out[y0:y1] = _strip_to_unit_gray(_rows(im, y0, y1), peak)
    return out


def _rows(im: Image.Image, y0: int, y1: int) -> Image.Image:
    return im if (y0, y1) == (0, im.size[1]) else im.crop((0, y0, im.size[0], y1))


def _strip_to_unit_gray(im: Image.Image, peak: float | None) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 0.0 if peak is None else peak
        hi = 1.0 if mode == "F" and top <= 1.0 else 65535.0 if top > 255 else 255.0
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
