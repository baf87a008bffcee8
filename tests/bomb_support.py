"""Small files that decode large: an RGBA PNG and an RLE DICOM of any side, a few hundred KB each.

Shared by the decode-memory tests and ``benchmarks/decode_memory.py``; built in memory, never stored."""

from __future__ import annotations

import struct
import zlib

from dicom_support import new_dataset, to_bytes


def rgba_png(side: int, rgba: tuple[int, int, int, int] = (90, 120, 200, 128)) -> bytes:
    """A ``side×side`` 8-bit RGBA PNG of one colour (rows of filter 0; they deflate to almost nothing)."""
    row = b"\x00" + bytes(rgba) * side
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _rle_segment(n: int, value: int) -> bytes:
    full, rest = divmod(n, 128)
    out = bytes([0x81, value]) * full  # 0x81: repeat the next byte 128 times
    if rest:
        out += bytes([(257 - rest) & 0xFF, value]) if rest > 1 else bytes([0, value])
    return out


def rle_dicom(side: int, *, stored: tuple[int, int] = (7, 9), window: tuple[float, float] | None = None) -> bytes:
    """A ``side×side`` 16-bit (12 stored) MONOCHROME2 RLE Lossless DICOM whose pixels all hold the
    value ``stored[0] * 256 + stored[1]``, hand-encoded (pydicom's encoder is slow at this size)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = new_dataset("CR", RLELossless)
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    segments = [_rle_segment(side * side, v) for v in stored]
    offsets = [64, 64 + len(segments[0])]
    header = struct.pack("<16I", len(segments), *offsets, *([0] * 13))
    ds.PixelData = encapsulate([header + b"".join(segments)])
    return to_bytes(ds)
