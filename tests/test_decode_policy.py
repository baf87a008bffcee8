"""One decision by the bytes, one policy and one set of words for the CLI and the server.

The DICOM magic wins over a preamble that looks like JPEG; a DICOM without preamble still reads; a PNG
named ``.jpg`` is read as a PNG everywhere; a GIF is refused everywhere in the same words; and no
refusal speaks the language of the libraries underneath.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicom_support import bare_bytes, new_dataset, to_bytes
from pneumo.data import read_image
from pneumo.data.sniff import misleading_name, sniff
from pneumo.errors import ImageError, PneumoError
from pneumo.inference import default_bundle_path
from pneumo.server import ServerSettings, create_app
from pneumo.server.upload import check_kind

STORED = (np.add.outer(np.arange(96), np.arange(80)) * 20 % 4096).astype(np.uint16)
JARGON = ("Error", "Traceback", "PIL", "Pillow", "pydicom", "plugin", "MAX_TEXT_CHUNK", "recursion", "dtype",
          "NoneType", "(0028,", "(7FE0", "178,956,970", "DecompressionBomb", "buffer", "unpack", "Truncated File Read")


def _dataset(stored=STORED, syntax=ExplicitVRLittleEndian):
    ds = new_dataset("DX", syntax)
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    return ds


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _with_jpeg_preamble(data: bytes) -> bytes:
    preamble = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(128))[:128]
    return preamble + data[128:]


def test_dicom_whose_preamble_looks_like_jpeg_is_read_as_dicom():
    data = _with_jpeg_preamble(to_bytes(_dataset()))
    assert data[:3] == b"\xff\xd8\xff" and data[128:132] == b"DICM"
    assert sniff(data) == "DICOM" and check_kind(data, "application/dicom", "x.dcm") == "DICOM"
    pixels, meta = read_image(data)
    assert meta.format == "DICOM"
    np.testing.assert_allclose(pixels, STORED / STORED.max(), atol=1e-6)


@pytest.mark.parametrize("implicit", [True, False])
def test_dicom_without_preamble_or_file_meta_reads(implicit):
    ds = _dataset(syntax=ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    data = bare_bytes(ds, implicit=implicit)
    assert b"DICM" not in data[:200] and data[:2] == b"\x08\x00"
    assert sniff(data) == "DICOM" and check_kind(data, "", "") == "DICOM"
    pixels, meta = read_image(data)
    assert meta.format == "DICOM"
    np.testing.assert_allclose(pixels, STORED / STORED.max(), atol=1e-6)


def test_bytes_that_only_start_like_dicom_are_not_an_image():
    fake = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + np.random.default_rng(3).bytes(500)
    with pytest.raises(ImageError) as info:
        read_image(fake)
    assert info.value.code in ("unsupported_format", "dicom_no_pixels", "truncated"), str(info.value)


def test_gif_is_refused_in_the_same_words_by_cli_and_server(tmp_path):
    gif = _save(Image.new("L", (64, 64), 90), "GIF")
    path = tmp_path / "film.gif"
    path.write_bytes(gif)
    with pytest.raises(ImageError) as cli:
        read_image(path)
    with pytest.raises(PneumoError) as server:
        check_kind(gif, "image/gif", "film.gif")
    assert cli.value.code == server.value.code == "unsupported_format"
    assert cli.value.status == server.value.status == 415
    cli_words = str(cli.value).split(": ", 1)[1]
    assert cli_words.lower() == str(server.value).lower()
    assert "GIF" in cli_words and "which is not an image type" not in str(server.value)


def test_png_named_jpg_is_read_by_its_bytes(tmp_path, caplog):
    png = _save(Image.fromarray((STORED >> 4).astype(np.uint8)), "PNG")
    path = tmp_path / "chest.jpg"
    path.write_bytes(png)
    with caplog.at_level("WARNING", logger="pneumo.data.imageio"):
        pixels, meta = read_image(path)
    assert meta.format == "PNG" and pixels.shape == STORED.shape
    assert "named as JPEG but its content is PNG" in caplog.text
    assert check_kind(png, "image/jpeg", "chest.jpg") == "PNG"
    assert misleading_name("PNG", "chest.jpg") and misleading_name("PNG", "chest.png") is None


def test_multiframe_is_a_clear_message_or_a_frame():
    stack = np.stack([STORED, STORED[::-1]])
    ds = _dataset(stack)
    ds.NumberOfFrames = 2
    with pytest.raises(ImageError) as info:
        read_image(to_bytes(ds))
    assert info.value.code == "dicom_multiframe" and "2 frames" in str(info.value)
    pixels, _ = read_image(to_bytes(ds), frame=1)
    np.testing.assert_allclose(pixels, STORED[::-1] / STORED.max(), atol=1e-6)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _hostile_corpus(jpeg: bytes) -> dict[str, bytes]:
    """Inputs that used to leak library messages (issue 13 item 9), one of each kind."""
    png = _save(Image.fromarray((STORED >> 4).astype(np.uint8)), "PNG")
    # a zTXt chunk that inflates past Pillow's text limit
    ztxt = _png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * (64 << 20)))
    text_bomb = png[:33] + ztxt + png[33:]
    nested = bytearray(to_bytes(_dataset(STORED[:4, :4])))
    deep = (struct.pack("<HH2sHI", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)) * 6000
    at = nested.find(b"\x08\x00\x60\x00")  # before Modality: the sequence nests without end
    deep_dicom = bytes(nested[:at]) + deep
    no_bits = _dataset()
    no_bits["PixelData"].VR = "OW"
    del no_bits["BitsAllocated"]
    no_bits.PixelData = no_bits.PixelData[:-7]
    palette = _dataset((STORED % 256).astype(np.uint16))
    palette.PhotometricInterpretation = "PALETTE COLOR"
    palette.RedPaletteColorLookupTableDescriptor = [256, 0, 16]  # green and blue tables missing
    palette.compress(RLELossless)
    rle = to_bytes(palette)
    dtype = _dataset()
    dtype.BitsAllocated = 13
    return {
        "truncated JPEG": jpeg[: len(jpeg) // 3],
        "JPEG header only": jpeg[:300],
        "PNG with a zTXt bomb": text_bomb,
        "truncated PNG": png[: len(png) // 2],
        "DICOM nesting without end": deep_dicom,
        "DICOM without Bits Allocated": to_bytes(no_bits),
        "RLE palette DICOM without its palette": rle,
        "DICOM with 13 bits allocated": to_bytes(dtype),
        "PNG over Pillow's limit": b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)),
        "GIF": _save(Image.new("L", (8, 8)), "GIF"),
        "DICM then garbage": bytes(128) + b"DICM" + np.random.default_rng(5).bytes(400),
    }


def test_refusals_speak_plain_words(val_originals):
    corpus = _hostile_corpus(val_originals[0].path.read_bytes())
    for case, data in corpus.items():
        with pytest.raises(ImageError) as info:
            read_image(data)
        message = str(info.value)
        print(f"\n{case:40s} {info.value.status} {info.value.code:18s} {message}")
        assert "\n" not in message and len(message) < 300, case
        leaked = [word for word in JARGON if word in message]
        assert not leaked, f"{case}: {leaked} in {message!r}"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The real server on the shipped model (no training: this file is about reading, not the model)."""
    db = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    app = create_app(default_bundle_path(), ServerSettings(audit_db=str(db), threads=1))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def test_server_reads_what_the_cli_reads(client, val_originals):
    pixels, _ = read_image(val_originals[1].path)
    big = (pixels[::4, ::4] * 4095).round().astype(np.uint16)
    dicom = _with_jpeg_preamble(to_bytes(_dataset(big)))
    bare = bare_bytes(_dataset(big, ImplicitVRLittleEndian))
    png = _save(Image.fromarray((pixels[::4, ::4] * 255).astype(np.uint8)), "PNG")
    jpeg = val_originals[1].path.read_bytes()
    for name, data, ctype, fmt in (
        ("x.dcm", dicom, "application/dicom", "DICOM"),
        ("old_modality", bare, "application/octet-stream", "DICOM"),
        ("chest.jpg", png, "image/jpeg", "PNG"),
        ("chest.png", jpeg, "image/png", "JPEG"),
    ):
        r = client.post("/api/v1/predict", files={"file": (name, data, ctype)})
        assert r.status_code == 200, f"{name}: {r.text[:300]}"
        assert r.json()["image"]["format"] == fmt
        named_as_other = name.endswith((".jpg", ".png")) and fmt not in name.upper().replace("JPG", "JPEG")
        assert any("its content is" in w for w in r.json()["warnings"]) == named_as_other, (name, r.json()["warnings"])
    gif = client.post("/api/v1/predict", files={"file": ("x.gif", _save(Image.new("L", (64, 64)), "GIF"), "image/gif")})
    assert gif.status_code == 415 and gif.json()["error"]["code"] == "unsupported_format"
    assert "GIF" in gif.json()["error"]["message"] and "not an image type" not in gif.json()["error"]["message"]
