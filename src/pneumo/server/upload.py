"""Reading one uploaded file safely: bounded while streaming, then recognised by its bytes.

The body is counted while it arrives, so a 2 GB upload costs at most ``max_upload_bytes`` of
memory/disk before it is refused with 413. The format is decided from the file's magic bytes, not
from its name or declared type, by the same :func:`pneumo.data.sniff.sniff` as the CLI: a PNG named
``.jpg`` is read as the PNG it is, a GIF is refused in the same words everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from pneumo.data.sniff import ACCEPTED, HELP, sniff, unsupported_message
from pneumo.errors import PneumoError

MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and small fields around the file
TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG",
         "application/dicom": "DICOM", "image/dicom": "DICOM"}
GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}


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


def _stalled(idle_s: float, deadline_s: float, whole: bool) -> UploadError:
    why = f"took longer than {deadline_s:g} s" if whole else f"sent nothing for {idle_s:g} s"
    return UploadError(f"The upload {why} and was stopped. Check the network connection and send the image again.",
                       code="upload_timeout", status=408)


async def _limited(stream: AsyncIterator[bytes], limit: int, idle_s: float = 15.0,
                   deadline_s: float = 120.0) -> AsyncGenerator[bytes, None]:
    """The body, refused beyond ``limit`` bytes, after ``idle_s`` without data or ``deadline_s`` in all,
    and when the client goes away (ClientDisconnect → ``client_disconnected``, not an internal error)."""
    seen, end = 0, asyncio.get_running_loop().time() + deadline_s
    chunks = stream.__aiter__()
    while True:
        left = end - asyncio.get_running_loop().time()
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout=max(0.0, min(idle_s, left)))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _stalled(idle_s, deadline_s, whole=left <= idle_s) from None
        except ClientDisconnect:
            raise UploadError("The client closed the connection before the upload was complete.",
                              code="client_disconnected", status=499) from None
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit - MULTIPART_SLACK)
        yield chunk


async def read_upload(request: Request, max_bytes: int, idle_s: float = 15.0,
                      deadline_s: float = 120.0) -> tuple[bytes, str, str]:
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
        request.headers, _limited(request.stream(), max_bytes + MULTIPART_SLACK, idle_s, deadline_s),
        max_files=4, max_fields=16,
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


def check_kind(data: bytes, content_type: str, filename: str) -> str:
    """Refuse what pneumo does not read, before decoding; return the format found."""
    if not data:
        raise UploadError("The file is empty (0 bytes). " + HELP, code="empty", status=422)
    kind = sniff(data)
    if kind not in ACCEPTED:  # the same refusal, in the same words, as read_image's in the CLI
        message = unsupported_message(kind)
        raise UploadError(message[0].upper() + message[1:], code="unsupported_format", status=415)
    if TYPES.get(content_type) is None and content_type not in GENERIC_TYPES and not content_type.startswith("image/"):
        raise UploadError(
            f"The file was sent as {content_type!r}, which is not an image type. {HELP}",
            code="wrong_content_type",
            status=415,
        )
    return kind  # read by its bytes, as the CLI does (pneumo.data.sniff.misleading_name words a warning)
