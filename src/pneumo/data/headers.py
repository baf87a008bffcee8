"""Sizes read straight from JPEG, PNG and JPEG 2000 headers, and what the rest of the file must hold.

Decoders allocate the whole declared image before they find that the data stops short: a 7 KB JPEG
that claims 7000×7000 costs hundreds of MB before "truncated". These parsers read a few header bytes,
so :func:`check_raster` can refuse such files before Pillow allocates anything. The bounds are lower
bounds that no valid file can break (they never refuse a real image):

- Huffman-coded JPEG: every 8×8 block of the first component costs at least one bit (its DC code);
- lossless JPEG: at least one bit per sample;
- PNG: deflate never compresses better than 1032:1, so the IDAT chunks must hold ≥ raw/1032 bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from pneumo.data.limits import check_geometry
from pneumo.errors import ImageError

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # F7: JPEG-LS
_HUFFMAN_DCT = {0xC0, 0xC1, 0xC2, 0xC5, 0xC6}
_HUFFMAN_LOSSLESS = {0xC3, 0xC7}
_DEFLATE_MAX_RATIO = 1032
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass(frozen=True)
class JpegFrame:
    marker: int  # the SOFn marker: says baseline / progressive / lossless / arithmetic / JPEG-LS
    precision: int
    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) per component


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The frame header (SOFn) of a JPEG or JPEG-LS codestream, or ``None`` if there is none before SOS."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in _SOF:
            seg = data[pos + 4 : pos + 2 + length]
            if len(seg) < 6:
                return None
            precision, height, width, count = struct.unpack(">BHHB", seg[:6])
            comps = seg[6 : 6 + 3 * count]
            sampling = tuple((comps[i + 1] >> 4, comps[i + 1] & 15) for i in range(0, len(comps) - 2, 3))
            return JpegFrame(marker, precision, width, height, sampling)
        pos += 2 + length
    return None


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """``(width, height, bit depth, colour type)`` from the IHDR chunk, or ``None``."""
    if len(data) < 29 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


def j2k_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG 2000 codestream's SIZ marker (bare or inside a JP2 box)."""
    at = data.find(b"\xff\x4f\xff\x51", 0, 4096)
    if at < 0 or len(data) < at + 24:
        return None
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[at + 8 : at + 24])
    return max(xsiz - xo, 0), max(ysiz - yo, 0)


def codestream_size(fragment: bytes) -> tuple[int, int] | None:
    """The size a compressed DICOM frame declares inside its own codestream (JPEG, JPEG-LS, J2K)."""
    frame = jpeg_frame(fragment)
    if frame is not None:
        return frame.width, frame.height
    return j2k_size(fragment)


def _png_idat_bytes(data: bytes) -> int:
    pos, total, n = 8, 0, len(data)
    while pos + 8 <= n:
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            total += min(length, n - pos - 8)
        elif kind == b"IEND":
            break
        pos += 12 + length
    return total


def check_raster(data: bytes, kind: str, source: str, *, max_pixels: int, min_side: int = 1) -> tuple[int, int]:
    """Refuse a JPEG/PNG by its header alone: bad size or shape, or too few bytes for that size."""
    if kind == "PNG":
        head = png_header(data)
        if head is None:
            raise ImageError(f"{source}: the PNG file is damaged (its image header is missing)", code="truncated")
        width, height, depth, colour = head
        check_geometry(width, height, source, max_pixels=max_pixels, min_side=min_side)
        channels = _PNG_CHANNELS.get(colour)
        if channels is not None and depth in (1, 2, 4, 8, 16):
            raw = height * (1 + math.ceil(width * channels * depth / 8))
            if _png_idat_bytes(data) * _DEFLATE_MAX_RATIO + 1024 < raw:
                raise _short(source, "PNG", width, height, len(data))
        return width, height
    frame = jpeg_frame(data)
    if frame is None:
        raise ImageError(
            f"{source}: the JPEG file is damaged or truncated (its image header is missing)", code="truncated"
        )
    check_geometry(frame.width, frame.height, source, max_pixels=max_pixels, min_side=min_side)
    h0, v0 = frame.sampling[0] if frame.sampling else (1, 1)
    hmax = max((h for h, _ in frame.sampling), default=1) or 1
    vmax = max((v for _, v in frame.sampling), default=1) or 1
    comp_w = math.ceil(frame.width * max(h0, 1) / hmax)
    comp_h = math.ceil(frame.height * max(v0, 1) / vmax)
    if frame.marker in _HUFFMAN_DCT:
        min_bits = math.ceil(comp_w / 8) * math.ceil(comp_h / 8)
    elif frame.marker in _HUFFMAN_LOSSLESS:
        min_bits = comp_w * comp_h
    else:  # arithmetic coding and JPEG-LS can code a flat image in almost nothing: no honest bound
        min_bits = 0
    if len(data) * 8 < min_bits:
        raise _short(source, "JPEG", frame.width, frame.height, len(data))
    return frame.width, frame.height


def _short(source: str, fmt: str, width: int, height: int, n_bytes: int) -> ImageError:
    return ImageError(
        f"{source}: the {fmt} file is truncated or damaged: it declares {width}×{height} pixels but holds "
        f"only {n_bytes:,} bytes, far less than any image of that size needs",
        code="truncated",
    )
