"""Reading one uploaded file safely: bounded while streaming, then recognised by its bytes.

The body is counted while it arrives, so a 2 GB upload costs at most ``max_upload_bytes`` of
memory/disk before it is refused with 413. The format is decided from the file's magic bytes, not
from its name or declared type; a declared type or extension that contradicts the content is refused,
because in a clinic a mislabelled file is often the wrong file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import PurePath

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from pneumo.data.imageio import is_dicom
from pneumo.errors import PneumoError

MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and small fields around the file
ACCEPTED = ("JPEG", "PNG", "DICOM")
TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG",
         "application/dicom": "DICOM", "image/dicom": "DICOM"}
GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".dcm": "DICOM", ".dicom": "DICOM"}
HELP = "Send one chest X-ray as a JPEG, PNG or DICOM file."


class UploadError(PneumoError):
    """A request whose upload is missing, malformed, too large or of the wrong kind."""

    code = "bad_upload"
    status = 400


def _too_large(limit: int) -> UploadError:
    return UploadError(
        f"The upload is larger than the limit of {limit / 2**20:.0f} MB. Send a smaller image "
        "(a chest X-ray is rarely over 20 MB; export it as JPEG/PNG or uncompressed DICOM).",
        code="upload_too_large",
        status=413,
    )


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit - MULTIPART_SLACK)
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str, str]:
    """The one uploaded file → ``(data, declared content type, file name)``; UploadError otherwise."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UploadError(
            f"Expected a multipart/form-data upload, got {ctype or 'no content type'!r}. {HELP}",
            code="wrong_content_type",
            status=415,
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise _too_large(max_bytes)
    parser = MultiPartParser(
        request.headers, _limited(request.stream(), max_bytes + MULTIPART_SLACK), max_files=4, max_fields=16
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(f"The upload is not valid multipart form data ({exc}). {HELP}", code="bad_multipart") from exc
    try:
        return await _the_file(form, max_bytes)
    finally:
        await form.close()


async def _the_file(form, max_bytes: int) -> tuple[bytes, str, str]:
    files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    chosen = [v for k, v in files if k == "file"]
    if not chosen:
        got = sorted({k for k, _ in form.multi_items()})
        where = f" (received fields: {', '.join(got)})" if got else ""
        raise UploadError(
            f"No file in the form field 'file'{where}. Send one chest X-ray (JPEG, PNG or DICOM) as the "
            "multipart field 'file'.",
            code="missing_file",
            status=422,
        )
    if len(files) > 1:
        raise UploadError(
            f"{len(files)} files were sent; send exactly one image per request.", code="too_many_files", status=422
        )
    upload = chosen[0]
    if upload.size is not None and upload.size > max_bytes:
        raise _too_large(max_bytes)
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data, (upload.content_type or "").split(";")[0].strip().lower(), upload.filename or ""


def sniff(data: bytes) -> str:
    """What the bytes are: JPEG, PNG, DICOM, or a short description of something else."""
    head = data[:64].lstrip()
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if is_dicom(data):
        return "DICOM"
    for magic, kind in ((b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"),
                        (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
                        (b"\x1f\x8b", "a gzip archive"), (b"RIFF", "a RIFF file (WebP/WAV/AVI)")):
        if data.startswith(magic):
            return kind
    lower = head.lower()
    if lower.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if lower.startswith(b"<?xml") or lower.startswith(b"<svg"):
        return "an XML/SVG document"
    if lower.startswith((b"{", b"[")):
        return "JSON text"
    if data and _looks_like_text(data[:4096]):
        return "plain text"
    return "unknown"


def _looks_like_text(sample: bytes) -> bool:
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def check_kind(data: bytes, content_type: str, filename: str) -> str:
    """Refuse what pneumo does not read, before decoding; return the format found."""
    if not data:
        raise UploadError("The file is empty (0 bytes). " + HELP, code="empty", status=422)
    kind = sniff(data)
    if kind not in ACCEPTED:
        what = "" if kind == "unknown" else f" It looks like {kind}."
        raise UploadError(
            f"This file is not a JPEG, PNG or DICOM image.{what} {HELP}", code="unsupported_format", status=415
        )
    declared = TYPES.get(content_type)
    if declared is None and content_type not in GENERIC_TYPES:
        raise UploadError(
            f"The file was sent as {content_type!r}, which is not an image type. {HELP}",
            code="wrong_content_type",
            status=415,
        )
    by_name = EXTENSIONS.get(PurePath(filename).suffix.lower())
    for label, claimed in (("declared as", declared), ("named as", by_name)):
        if claimed is not None and claimed != kind:
            raise UploadError(
                f"The file is {label} {claimed} but its content is {kind}. Check that this is the intended "
                "image and send it with the right type and extension.",
                code="type_mismatch",
                status=415,
            )
    return kind
