"""What a file is, decided by its bytes alone: one answer for the CLI, the server, the DICOM node and
dataset discovery — the one format table (what pneumo reads is :data:`ACCEPTED`, exactly what
``read_image`` decodes; file names only pick candidates and word warnings).

A name or a declared type is a claim; the bytes are the file. The order matters: ``DICM`` at offset
128 is checked first because the 128-byte DICOM preamble is free-form and may itself begin with the
JPEG magic ``FF D8 FF`` (some modalities put a thumbnail or a TIFF header there). Then JPEG and PNG,
then formats pneumo knows but does not read, then a DICOM data set without preamble or file meta
(legal, and what many older modalities write).
"""

from __future__ import annotations

import struct
from pathlib import Path, PurePath

ACCEPTED = ("JPEG", "PNG", "DICOM")
HELP = "Send one chest X-ray as a JPEG, PNG or DICOM file."
DICOM_MAGIC_OFFSET = 128
EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".png": "PNG",
              ".dcm": "DICOM", ".dicom": "DICOM", ".dic": "DICOM"}
# Names of image files, read or not: what a folder walk looks at, and what `pneumo predict` takes for an
# input rather than a mistyped bundle. A BMP/TIFF/GIF found this way is refused by its bytes, with a reason.
IMAGE_SUFFIXES = frozenset(EXTENSIONS) | {".gif", ".bmp", ".tif", ".tiff", ".webp"}
HEAD_BYTES = 4096  # enough for every check below (DICM at 128, a bare data set's first element, text)

_OTHER_MAGIC = (
    (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"), (b"\xff\x4f\xff\x51", "a JPEG 2000 image"),
    (b"\xff\x0a", "a JPEG XL image"), (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"), (b"8BPS", "a Photoshop file"),
    (b"\x00\x00\x01\x00", "an icon file"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"),
)
# Value representations (PS3.5 6.2): what bytes 4–5 of an explicit-VR data element must be.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
# Groups a data set without preamble starts with: file meta (0002), or identification (0008).
_FIRST_GROUPS = (0x0002, 0x0008)


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def looks_like_bare_dicom(data: bytes) -> bool:
    """True when the bytes start like a DICOM data set written without preamble and file meta.

    Only a first guess: the DICOM reader then parses the data set and refuses it unless it holds an
    image, so a text or binary file that happens to start with ``08 00`` is still "not an image".
    """
    if len(data) < 12:
        return False
    group_le, element_le, length_le = struct.unpack("<HHI", data[:8])
    group_be = struct.unpack(">H", data[:2])[0]
    explicit = data[4:6] in _VRS
    if group_le in _FIRST_GROUPS:
        return explicit or (length_le < min(len(data), 2**16) and element_le < 0x2000)
    return group_be in _FIRST_GROUPS and explicit


def sniff(data: bytes) -> str:
    """``"DICOM"``, ``"JPEG"``, ``"PNG"``, or a short description of what else the bytes are."""
    if is_dicom(data):
        return "DICOM"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    for magic, kind in _OTHER_MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if data[4:8] == b"ftyp":
        return "a HEIC/AVIF image or a video" if data[8:12] in (b"heic", b"heix", b"mif1", b"avif") else "a video file"
    if looks_like_bare_dicom(data):
        return "DICOM"
    lower = data[:64].lstrip().lower()
    if lower.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if lower.startswith((b"<?xml", b"<svg")):
        return "an XML/SVG document"
    if lower.startswith((b"{", b"[")):
        return "JSON text"
    if data and _looks_like_text(data[:4096]):
        return "plain text"
    return "unknown"


def sniff_file(path: str | Path) -> str:
    """:func:`sniff` of a file's first bytes; ``"unreadable"`` when it cannot be opened."""
    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(HEAD_BYTES))
    except OSError:
        return "unreadable"


def unsupported_message(kind: str) -> str:
    """The one refusal for bytes that are not JPEG, PNG or DICOM (CLI and server say the same)."""
    what = "" if kind == "unknown" else f" (it looks like {kind})"
    return f"this file is not a JPEG, PNG or DICOM image{what}. {HELP}"


def misleading_name(kind: str, filename: str) -> str | None:
    """A warning when the file's extension names another format than its bytes (read by the bytes)."""
    claimed = EXTENSIONS.get(PurePath(filename or "").suffix.lower())
    if claimed is None or claimed == kind:
        return None
    return (
        f"The file is named as {claimed} but its content is {kind}; it was read as {kind}. "
        "Check that this is the intended image."
    )


def _looks_like_text(sample: bytes) -> bool:
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)
