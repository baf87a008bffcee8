"""A corpus of bad uploads: every one gets a 4xx JSON error a person can act on, an audit row, and
the server stays healthy (never a 5xx, never the catch-all handler)."""

from __future__ import annotations

import io
import sqlite3
import struct
import zipfile
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pneumo.data import read_image
from pneumo.server import ServerSettings, create_app
from server_support import make_dicom

LIMIT_MB = 2
DAMAGED = ("truncated", "undecodable")  # read_image's codes for bytes that stop or break mid-image


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def huge_png_header(w: int = 100_000, h: int = 100_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def gif_animated() -> bytes:
    frames = [Image.new("L", (64, 64), c) for c in (0, 128, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def zip_bytes(jpeg: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("xray.jpeg", jpeg)
    return buf.getvalue()


def bmp_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (256, 256), 100).save(buf, format="BMP")
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(val_originals) -> list[tuple[str, dict, int, str]]:
    """(case, request kwargs, expected status, expected error code(s)); None: any 4xx / any code."""
    jpeg = val_originals[0].path.read_bytes()
    pixels, _ = read_image(val_originals[0].path)
    small = pixels[::8, ::8]
    png = png_bytes((pixels * 255).astype(np.uint8))
    rng = np.random.default_rng(0)

    def f(data, name="x.jpeg", ctype="image/jpeg", field="file"):
        return {"files": {field: (name, data, ctype)}}

    oversized = b"\xff\xd8\xff\xe0" + rng.bytes((LIMIT_MB + 1) * 2**20)
    dicom_ok = make_dicom(small)
    return [
        ("empty", f(b""), 422, "empty"),
        ("one byte", f(b"\xff"), 415, "unsupported_format"),
        ("truncated JPEG", f(jpeg[: len(jpeg) // 2]), 422, DAMAGED),
        ("JPEG header only", f(jpeg[:200]), 422, DAMAGED),
        ("truncated PNG", f(png[: len(png) // 3], "x.png", "image/png"), 422, DAMAGED),
        ("plain text", f(b"patient is fine\n" * 10, "notes.txt", "text/plain"), 415, "unsupported_format"),
        ("HTML page", f(b"<!DOCTYPE html><html><body>hi</body></html>", "a.html", "text/html"),
         415, "unsupported_format"),
        ("PDF header", f(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "scan.pdf", "application/pdf"),
         415, "unsupported_format"),
        ("ZIP archive", f(zip_bytes(jpeg), "x.zip", "application/zip"), 415, "unsupported_format"),
        ("random bytes", f(rng.bytes(4096), "x.bin", "application/octet-stream"), 415, "unsupported_format"),
        ("JPEG sent as text/plain", f(jpeg, "x.jpeg", "text/plain"), 415, "wrong_content_type"),
        ("PNG declaring 100000x100000", f(huge_png_header(), "x.png", "image/png"), 413, "too_many_pixels"),
        ("body over the size limit", f(oversized), 413, "upload_too_large"),
        ("DICOM without pixels", f(make_dicom(None), "x.dcm", "application/dicom"), 422, "dicom_no_pixels"),
        ("multi-frame DICOM", f(make_dicom(small, frames=3), "x.dcm", "application/dicom"), 422, "dicom_multiframe"),
        ("DICOM declaring JPEG 2000 over raw bytes",
         f(make_dicom(small, syntax="1.2.840.10008.1.2.4.90"), "x.dcm", "application/dicom"), None, None),
        ("truncated DICOM", f(dicom_ok[: len(dicom_ok) // 2], "x.dcm", "application/dicom"), 422, None),
        ("DICM magic then garbage", f(b"\x00" * 128 + b"DICM" + rng.bytes(300), "x.dcm", ""), 422, None),
        ("missing file field", {"data": {"comment": "no file"}, "files": {"other": ("a.txt", b"x", "text/plain")}},
         422, "missing_file"),
        ("wrong field name", f(jpeg, field="image"), 422, "missing_file"),
        ("two files", {"files": [("file", ("a.jpeg", jpeg, "image/jpeg")), ("file", ("b.jpeg", jpeg, "image/jpeg"))]},
         422, "too_many_files"),
        ("animated GIF", f(gif_animated(), "x.gif", "image/gif"), 415, "unsupported_format"),
        ("BMP image", f(bmp_bytes(), "x.bmp", "image/bmp"), 415, "unsupported_format"),
        ("1x1 PNG", f(png_bytes(np.zeros((1, 1), np.uint8)), "x.png", "image/png"), 422, "image_too_small"),
        ("SVG", f(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "x.svg", "image/svg+xml"), 415, "unsupported_format"),
        ("JSON body, not multipart", {"json": {"file": "abc"}}, 415, "wrong_content_type"),
        ("no body at all", {}, 415, "wrong_content_type"),
        ("multipart without boundary", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
         400, "bad_multipart"),
        ("bad query parameter", {**f(jpeg), "params": {"heatmap": "banana"}}, 422, "invalid_request"),
    ]


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    app = create_app(tiny_bundle, ServerSettings(audit_db=str(db), max_upload_mb=LIMIT_MB, threads=1))
    with TestClient(app, base_url="http://localhost") as client:
        yield client, app, db


def test_every_malformed_upload_is_a_clear_4xx_with_an_audit_row(served, corpus, val_originals):
    client, app, db = served
    assert len(corpus) >= 20
    results = []
    for case, kwargs, status, code in corpus:
        r = client.post("/api/v1/predict", **kwargs)
        body = r.json()
        assert 400 <= r.status_code < 500, f"{case}: {r.status_code} {r.text[:300]}"
        if status is not None:
            assert r.status_code == status, f"{case}: {r.status_code} {body}"
        if code is not None:
            assert body["error"]["code"] in ((code,) if isinstance(code, str) else code), f"{case}: {body}"
        message = body["error"]["message"]
        assert len(message) > 15 and "Traceback" not in message and "<bytes>" not in message, f"{case}: {message}"
        assert body["request_id"] == r.headers["x-request-id"]
        results.append((case, r.status_code, body["error"]["code"], message))
        with sqlite3.connect(db) as con:
            row = con.execute(
                "SELECT outcome, error_code, probability FROM predictions WHERE request_id = ?", (body["request_id"],)
            ).fetchone()
        assert row == ("error", body["error"]["code"], None), f"{case}: audit row {row}"
    assert app.state.unhandled_errors == 0
    assert client.get("/api/v1/health").json()["status"] == "ok"
    assert app.state.gate.active == 0  # every refused request gave its slot back
    ok = client.post("/api/v1/predict", files={"file": ("v.jpeg", val_originals[3].path.read_bytes(), "image/jpeg")})
    assert ok.status_code == 200
    for case, status, code, message in results:
        print(f"{status} {code:20s} {case}: {message[:110]}")


def test_size_limit_is_enforced_while_streaming(served):
    """A chunked body with no Content-Length is cut off at the limit, not read to the end."""
    client, _, _ = served
    sent = 0

    def body():
        nonlocal sent
        yield (b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.jpeg"\r\n'
               b"Content-Type: image/jpeg\r\n\r\n")
        for _ in range(64):  # 64 MB offered
            sent += 2**20
            yield b"\xff" * 2**20
        yield b"\r\n--B--\r\n"

    r = client.post("/api/v1/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"
    assert "2 MB" in r.json()["error"]["message"]
