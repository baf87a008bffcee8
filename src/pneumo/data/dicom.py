"""DICOM pixels through pydicom, in pneumo's intensity convention, as a PACS sends them.

Kept apart from :mod:`pneumo.data.imageio` so that pydicom is imported only when a DICOM arrives.
Patient fields are never read here: only pixel data and the tags that say how to display it.

Reading is done in two passes over the bytes, and the cheap one decides first: the header (everything
before Pixel Data) is parsed alone and its declared Rows × Columns × frames is checked against the
pixel limit before the pixel data is touched. A Deflated data set is inflated here, not by pydicom
(which inflates all of it at once: a 1 MB upload can become gigabytes): the header is inflated up to a
fixed bound, and the rest only up to what the declared image needs. Files without preamble or file
meta (legal, and common from older modalities) are read with the encoding guessed from their first
element, as pydicom's ``force=True`` does.

Decoders: RLE with pydicom's own (pylibjpeg-rle panics on damaged input), JPEG with Pillow or
pylibjpeg-libjpeg (12-bit, lossless, JPEG-LS), JPEG 2000 with pylibjpeg-openjpeg, then whatever else
is installed. Every failure becomes an :class:`ImageError` in plain words that names the transfer
syntax; library messages (tags, dtypes, plugin lists) never reach a user.

Display (:mod:`pneumo.data.dicom_display`, PS3.3 C.11): stored values → Modality LUT (rescale
slope/intercept or LUT sequence) → VOI LUT sequence, else window centre/width (LINEAR, LINEAR_EXACT
or SIGMOID), else min–max → [0, 1];
``MONOCHROME1`` is then inverted so that brighter always means denser.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib

import numpy as np
from pydicom import uid
from pydicom.dataset import FileDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filereader import _read_file_meta_info, read_dataset  # pinned: pydicom>=3.0,<3.1
from pydicom.pixels import get_decoder

from pneumo.data.dicom_display import colour_to_gray, display, unit
from pneumo.data.headers import codestream_size, jpeg_frame
from pneumo.data.limits import (
    DEFLATE_SLACK_BYTES,
    MAX_DICOM_HEADER_BYTES,
    check_decoded_bytes,
    check_geometry,
)
from pneumo.data.sniff import is_dicom, unsupported_message
from pneumo.errors import ImageError

_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_PLUGIN_ORDER = {
    uid.JPEGBaseline8Bit: ("pillow", "pylibjpeg", "gdcm"),
    uid.JPEGExtended12Bit: ("pylibjpeg", "pillow", "gdcm"),
    uid.JPEGLossless: ("pylibjpeg", "gdcm"),
    uid.JPEGLosslessSV1: ("pylibjpeg", "gdcm"),
    uid.JPEGLSLossless: ("pylibjpeg", "pyjpegls", "gdcm"),
    uid.JPEGLSNearLossless: ("pylibjpeg", "pyjpegls", "gdcm"),
    uid.JPEG2000Lossless: ("pylibjpeg", "pillow", "gdcm"),
    uid.JPEG2000: ("pylibjpeg", "pillow", "gdcm"),
    uid.RLELossless: ("pydicom",),
}
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


def read_dicom_pixels(
    data: bytes, source: str, *, max_pixels: int, frame: int | None, min_side: int = 1
) -> tuple[np.ndarray, str, int]:
    """Decode DICOM bytes → (float32 ``H×W`` in [0, 1], photometric interpretation, bits stored)."""
    with warnings.catch_warnings():  # pydicom warns on every odd tag; the caller wants pixels or an ImageError
        warnings.simplefilter("ignore")
        ds, syntax_name = _parse(data, source, max_pixels, min_side)
        return _pixels(ds, source, syntax_name, frame)


# ------------------------------------------------------------------ parsing, header first


def _parse(data: bytes, source: str, max_pixels: int, min_side: int) -> tuple[FileDataset, str]:
    part10 = is_dicom(data)
    try:
        fp = io.BytesIO(data)
        fp.seek(132 if part10 else 0)
        meta = _read_file_meta_info(fp)
        body_at = fp.tell()
        syntax = meta.get("TransferSyntaxUID")
        implicit, little = _encoding(syntax, data[body_at : body_at + 6])
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged file meta
        raise _damaged_header(source, part10) from exc
    name = _syntax_name(syntax)
    deflated = syntax == uid.DeflatedExplicitVRLittleEndian
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
    if inflater is not None:
        body, start = _inflate_header(inflater, data[body_at:], implicit, little, source), 0
    else:
        body, start = data, body_at
    header, pixel_at, short = _read_header(body, start, implicit, little, source, part10)
    if short and pixel_at is None:
        raise ImageError(f"{source}: the DICOM file is truncated (its header stops in the middle)", code="truncated")
    if pixel_at is None:
        if not part10 and not any(k in header for k in ("SOPClassUID", "Modality", "Rows")):
            raise ImageError(f"{source}: {unsupported_message('unknown')}", code="unsupported_format", status=415)
        raise ImageError(f"{source}: the DICOM file has no pixel data (not an image object)", code="dicom_no_pixels")
    rows, cols, frames, sample_bytes = _declared(header, source)
    check_geometry(cols, rows, source, max_pixels=max_pixels, min_side=min_side, frames=frames)
    # one frame is decoded: its raster, not the file's size, is what a compressed (RLE, JPEG) bomb costs
    check_decoded_bytes(cols, rows, sample_bytes, source, max_pixels=max_pixels, what="pixels of one frame")
    if inflater is not None:
        budget = pixel_at + 16 + rows * cols * frames * sample_bytes + DEFLATE_SLACK_BYTES
        body = _inflate_rest(inflater, body, budget, source)
        meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian  # the inflated data set is plain explicit VR
    elif syntax is None:
        meta.TransferSyntaxUID = _guessed(implicit, little)
    try:
        fp = io.BytesIO(body)
        fp.seek(start)
        full = read_dataset(fp, implicit, little)
        ds = FileDataset(source, full, data[:128] if part10 else None, meta, implicit, little)
        ds.set_original_encoding(implicit, little, full._character_set)
    except Exception as exc:  # noqa: BLE001
        raise ImageError(
            f"{source}: the DICOM pixel data ({name}) is damaged or truncated", code="truncated"
        ) from exc
    return ds, name


def _read_header(body: bytes, start: int, implicit: bool, little: bool, source: str, part10: bool):
    """The data set up to Pixel Data, where Pixel Data starts (``None``: none), and the length of an
    element that runs past the end of ``body`` (0: none), without reading any element's value twice."""
    seen: list[int] = []
    short: list[int] = []
    fp = io.BytesIO(body)

    def at_pixels(tag, vr, length) -> bool:
        if int(tag) in _PIXEL_TAGS:
            seen.append(int(tag))
            return True
        if length != 0xFFFFFFFF and fp.tell() + length > len(body):
            short.append(length)
            return True
        return False

    fp.seek(start)
    try:
        header = read_dataset(fp, implicit, little, stop_when=at_pixels)
        pixel_at = fp.tell() if seen else None
        _ = [header.get(k) for k in ("Rows", "Columns", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel")]
    except RecursionError as exc:
        raise ImageError(f"{source}: the DICOM header is damaged (it nests without end)", code="truncated") from exc
    except Exception as exc:  # noqa: BLE001 - any damaged element
        raise _damaged_header(source, part10) from exc
    return header, pixel_at, (short[0] if short else 0)


def _declared(header, source: str) -> tuple[int, int, int, int]:
    """Rows, columns, frames and bytes per pixel (all samples) as the header declares them."""
    try:
        rows, cols = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
        frames = int(header.get("NumberOfFrames") or 1)
        spp = int(header.get("SamplesPerPixel") or 1)
        bits = int(header.get("BitsAllocated") or 16)
    except (TypeError, ValueError) as exc:
        raise ImageError(
            f"{source}: the DICOM header is damaged (its image size or pixel format cannot be read)", code="truncated"
        ) from exc
    if rows <= 0 or cols <= 0:
        raise ImageError(f"{source}: the DICOM file does not say how large its image is (no rows/columns)",
                         code="truncated")
    if frames < 1 or not 1 <= spp <= 4 or not 1 <= bits <= 64:
        raise ImageError(
            f"{source}: the DICOM header declares an impossible pixel format "
            f"({frames} frames, {spp} samples per pixel, {bits} bits)",
            code="dicom_unsupported",
            status=415,
        )
    return rows, cols, frames, spp * math.ceil(bits / 8)


def _inflate(inflater, tail: bytes, limit: int, source: str) -> bytes:
    try:
        return inflater.decompress(tail, max(limit, 1))
    except zlib.error as exc:
        raise ImageError(f"{source}: the compressed (Deflated) DICOM data is damaged", code="truncated") from exc


def _more_output(inflater, source: str) -> bool:
    """Whether the stream would still inflate further (it is over its budget)."""
    return not inflater.eof and bool(_inflate(inflater, inflater.unconsumed_tail, 1, source))


def _inflate_header(inflater, zipped: bytes, implicit: bool, little: bool, source: str) -> bytes:
    """Inflate a Deflated data set in growing steps until its header (up to Pixel Data) is complete."""
    body, step = b"", 64 * 1024
    tail = zipped
    while True:
        body += _inflate(inflater, tail, step - len(body), source)
        tail = inflater.unconsumed_tail
        try:
            _, pixel_at, short = _read_header(body, 0, implicit, little, source, True)
        except ImageError:
            pixel_at, short = None, 0
        if pixel_at is not None or inflater.eof or not tail:
            return body
        if len(body) >= MAX_DICOM_HEADER_BYTES or short > MAX_DICOM_HEADER_BYTES:
            raise ImageError(
                f"{source}: the DICOM header inflates to more than {MAX_DICOM_HEADER_BYTES // 2**20} MB before any "
                "image data; this is not a normal image file",
                code="too_many_pixels",
                status=413,
            )
        step = min(step * 4, MAX_DICOM_HEADER_BYTES)


def _inflate_rest(inflater, head: bytes, budget: int, source: str) -> bytes:
    """The rest of a Deflated data set, refused as soon as it outgrows what its image needs."""
    rest = _inflate(inflater, inflater.unconsumed_tail, budget - len(head), source) if not inflater.eof else b""
    if _more_output(inflater, source):
        raise ImageError(
            f"{source}: the compressed (Deflated) DICOM file inflates to more than the {budget / 2**20:,.1f} MB "
            "its declared image needs; refused as a decompression bomb",
            code="too_many_pixels",
            status=413,
        )
    return head + rest


def _encoding(syntax, first: bytes) -> tuple[bool, bool]:
    """(implicit VR, little endian) from the transfer syntax, or guessed from the first element."""
    if syntax is not None and _known(syntax):
        return syntax.is_implicit_VR, syntax.is_little_endian
    if syntax is not None:  # an unknown/private syntax: the standard says explicit VR little endian
        return False, True
    if len(first) < 6:
        return True, True
    group = struct.unpack("<H", first[:2])[0]
    vr = first[4:6]
    explicit = vr.isalpha() and vr.isupper()
    return (not explicit), not (explicit and group >= 1024)


def _known(syntax) -> bool:
    try:
        return syntax.is_transfer_syntax
    except Exception:  # noqa: BLE001 - a malformed UID string
        return False


def _guessed(implicit: bool, little: bool):
    if implicit:
        return uid.ImplicitVRLittleEndian
    return uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


def _syntax_name(syntax) -> str:
    if syntax is None:
        return "no transfer syntax given"
    name = getattr(syntax, "name", "") or ""
    text = "".join(c if c.isprintable() else "?" for c in str(syntax))[:64]
    return f"{name} ({text})" if name and name != str(syntax) else f"{text} (not a known transfer syntax)"


def _damaged_header(source: str, part10: bool) -> ImageError:
    if not part10:
        return ImageError(f"{source}: {unsupported_message('unknown')}", code="unsupported_format", status=415)
    return ImageError(f"{source}: the DICOM file is damaged or truncated (its header cannot be read)", code="truncated")


# ------------------------------------------------------------------ pixels


def _pixels(ds: FileDataset, source: str, name: str, frame: int | None) -> tuple[np.ndarray, str, int]:
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames > 1 and frame is None:
        raise ImageError(
            f"{source}: the DICOM file has {n_frames} frames; choose one (frame=0..{n_frames - 1})",
            code="dicom_multiframe",
        )
    if frame is not None and not 0 <= frame < n_frames:
        raise ImageError(f"{source}: frame {frame} does not exist (the file has {n_frames})", code="bad_frame")
    _fill_defaults(ds, source)
    arr = _decode(ds, source, name, frame if n_frames > 1 else None, n_frames)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored") or 8)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return colour_to_gray(arr, ds, photometric, source, bits), photometric, bits
    if arr.ndim != 2:
        raise ImageError(f"{source}: the DICOM image is not a single greyscale picture", code="dicom_unsupported",
                         status=415)
    try:
        out = display(arr, ds)
    except Exception:  # noqa: BLE001 - a damaged LUT or window: show the stored values, as viewers do
        out = unit(arr)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.asarray(out, dtype=np.float32), photometric, bits


def _fill_defaults(ds: FileDataset, source: str) -> None:
    """Give absent pixel-format tags the values the standard implies, so a sloppy writer still reads."""
    def absent(key: str) -> bool:
        return key not in ds or ds[key].value in (None, "", b"")

    photometric = "" if absent("PhotometricInterpretation") else str(ds.PhotometricInterpretation).upper()
    if absent("SamplesPerPixel"):
        ds.SamplesPerPixel = 3 if photometric.startswith(("RGB", "YBR")) else 1
    if absent("PhotometricInterpretation"):
        ds.PhotometricInterpretation = "MONOCHROME2" if int(ds.SamplesPerPixel) == 1 else "RGB"
    if absent("BitsAllocated"):
        ds.BitsAllocated = _guess_bits(ds, source)
    if absent("BitsStored"):
        ds.BitsStored = int(ds.BitsAllocated)
    if absent("HighBit"):
        ds.HighBit = int(ds.BitsStored) - 1
    if absent("PixelRepresentation"):
        ds.PixelRepresentation = 0
    if int(ds.SamplesPerPixel) > 1 and absent("PlanarConfiguration"):
        ds.PlanarConfiguration = 0


def _guess_bits(ds: FileDataset, source: str) -> int:
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return 16
    per_pixel = len(ds.PixelData) / max(int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel)
                                        * int(ds.get("NumberOfFrames") or 1), 1)
    for nbytes in (1, 2, 4):
        if per_pixel == nbytes:
            return 8 * nbytes
    raise ImageError(f"{source}: the DICOM file does not say how many bits each pixel has", code="dicom_unsupported",
                     status=415)


def _decode(ds: FileDataset, source: str, name: str, index: int | None, n_frames: int) -> np.ndarray:
    """Decode one frame; a missing decoder is a 415 naming the syntax, bad data a 422 naming it too."""
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except Exception:  # noqa: BLE001 - NotImplementedError / ValueError for syntaxes pydicom cannot decode
        decoder = None
    if decoder is None or not decoder.is_available:
        raise ImageError(
            f"{source}: DICOM transfer syntax {name} cannot be decoded by pneumo; convert the file to "
            "uncompressed, JPEG, JPEG 2000 or RLE DICOM, or to PNG",
            code="dicom_unsupported",
            status=415,
        )
    if syntax.is_compressed:
        _check_codestream(ds, source, name, index, n_frames)
    available = tuple(decoder.available_plugins)
    order = [p for p in _PLUGIN_ORDER.get(syntax, available) if p in available] or [""]
    for plugin in order:
        try:
            return decoder.as_array(ds, index=index, decoding_plugin=plugin)[0]
        except _FATAL:
            raise
        except BaseException:  # noqa: BLE001, S110 - native decoders raise anything, Rust ones panic
            continue
    repaired = _repaired_scan(ds, syntax, index, n_frames)
    if repaired is not None:
        ds.PixelData = encapsulate([repaired])
        ds.NumberOfFrames = 1
        for plugin in order:
            try:
                return decoder.as_array(ds, decoding_plugin=plugin)[0]
            except _FATAL:
                raise
            except BaseException:  # noqa: BLE001, S110
                continue
    raise ImageError(
        f"{source}: the DICOM image data ({name}) is damaged or truncated and cannot be decoded",
        code="truncated",
    )


def _frame_bytes(ds: FileDataset, index: int | None, n_frames: int) -> bytes:
    return get_frame(ds.PixelData, index or 0, number_of_frames=n_frames)


def _check_codestream(ds: FileDataset, source: str, name: str, index: int | None, n_frames: int) -> None:
    """The compressed frame's own header may declare far more pixels than Rows × Columns: refuse it."""
    try:
        size = codestream_size(_frame_bytes(ds, index, n_frames)[:65536])
    except Exception as exc:  # noqa: BLE001 - broken encapsulation
        raise ImageError(
            f"{source}: the DICOM image data ({name}) is damaged or truncated and cannot be decoded", code="truncated"
        ) from exc
    if size is not None and size[0] * size[1] > int(ds.Rows) * int(ds.Columns):
        raise ImageError(
            f"{source}: the compressed image inside the DICOM file is {size[0]}×{size[1]} pixels, larger than the "
            f"{int(ds.Columns)}×{int(ds.Rows)} its header declares; the file is damaged",
            code="truncated",
        )


def _repaired_scan(ds: FileDataset, syntax, index: int | None, n_frames: int) -> bytes | None:
    """Sequential JPEG whose scan header says Ss/Se ≠ 0/63 (some 12-bit writers): fix it as libjpeg-turbo does."""
    if syntax not in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit):
        return None
    try:
        src = bytearray(_frame_bytes(ds, index, n_frames))
    except Exception:  # noqa: BLE001
        return None
    head = jpeg_frame(bytes(src[:65536]))
    if head is None or head.marker not in (0xC0, 0xC1):
        return None
    sos = src.find(b"\xff\xda")
    if sos < 0 or sos + 5 >= len(src):
        return None
    at = sos + 5 + 2 * src[sos + 4]
    if at + 3 > len(src) or src[at : at + 3] == b"\x00\x3f\x00":
        return None
    src[at : at + 3] = b"\x00\x3f\x00"
    return bytes(src)
