"""read_image on images the tests build themselves: every format, every refusal, and a fuzzer."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pneumo.data import read_image
from pneumo.errors import ImageError, PneumoError

# a left-to-right ramp with a bright block top-left: orientation and intensity are both checkable
RAMP = np.tile(np.linspace(0, 255, 48, dtype=np.float32), (32, 1))
RAMP[:8, :8] = 255
RAMP_U8 = RAMP.round().astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _close(pixels: np.ndarray, expected_u8: np.ndarray, tol: float) -> bool:
    return pixels.shape == expected_u8.shape and float(np.abs(pixels - expected_u8 / 255.0).mean()) < tol


# ---------------------------------------------------------------- rasters


@pytest.mark.parametrize(
    "mode,fmt,tol",
    [("L", "PNG", 1e-6), ("RGB", "PNG", 1e-6), ("L", "JPEG", 0.02), ("RGB", "JPEG", 0.02), ("CMYK", "JPEG", 0.03)],
)
def test_grey_rgb_cmyk_give_luminance(mode, fmt, tol):
    im = Image.fromarray(RAMP_U8, "L").convert(mode)
    pixels, meta = read_image(_save(im, fmt))
    assert pixels.dtype == np.float32 and pixels.ndim == 2
    assert meta.format == fmt and meta.mode == mode and (meta.height, meta.width) == (32, 48)
    assert _close(pixels, RAMP_U8, tol), float(np.abs(pixels - RAMP_U8 / 255).mean())


def test_png_16_bit_keeps_precision():
    ramp16 = (np.tile(np.linspace(0, 65535, 48), (32, 1))).astype(np.uint16)
    pixels, meta = read_image(_save(Image.fromarray(ramp16), "PNG"))
    assert meta.bit_depth == 16
    np.testing.assert_allclose(pixels, ramp16 / 65535.0, atol=1e-6)
    # distinct 16-bit levels survive (8-bit would collapse neighbours)
    assert len(np.unique(pixels[0])) == 48


def test_palette_and_alpha_png():
    pal = Image.fromarray(RAMP_U8, "L").convert("P")
    pixels, meta = read_image(_save(pal, "PNG"))
    assert meta.mode == "P" and _close(pixels, RAMP_U8, 0.01)
    rgba = Image.fromarray(RAMP_U8, "L").convert("RGBA")
    alpha = np.full(RAMP_U8.shape, 255, np.uint8)
    alpha[:, 24:] = 0  # right half transparent → composited on black
    rgba.putalpha(Image.fromarray(alpha))
    pixels, meta = read_image(_save(rgba, "PNG"))
    assert meta.mode == "RGBA"
    assert pixels[:, 24:].max() == 0.0 and _close(pixels[:, :24], RAMP_U8[:, :24], 1e-6)
    la = Image.fromarray(RAMP_U8, "L").convert("LA")
    assert _close(read_image(_save(la, "PNG"))[0], RAMP_U8, 1e-6)


@pytest.mark.parametrize("orientation,undo", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                                              (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_comes_out_upright(orientation, undo):
    # store the image as a camera would (rotated) and say in EXIF how to turn it upright
    stored = Image.fromarray(RAMP_U8, "L").transpose(undo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels, meta = read_image(_save(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert pixels.shape == RAMP_U8.shape
    assert _close(pixels, RAMP_U8, 0.03)
    assert pixels[:8, :8].mean() > 0.9  # the bright block is back top-left


def test_reads_paths_and_real_xray(tmp_path, val_originals):
    p = tmp_path / "x.png"
    p.write_bytes(_save(Image.fromarray(RAMP_U8), "PNG"))
    pixels, meta = read_image(p)
    assert meta.source == str(p) and meta.n_bytes == p.stat().st_size
    pixels, meta = read_image(val_originals[0].path)
    assert meta.format == "JPEG" and min(pixels.shape) > 224


# ---------------------------------------------------------------- refusals


def _refused(src, code: str | None = None, **kw) -> ImageError:
    with pytest.raises(ImageError) as info:
        read_image(src, **kw)
    if code:
        assert info.value.code == code, str(info.value)
    return info.value


def test_refuses_empty_missing_text_random(tmp_path):
    empty = tmp_path / "empty.jpeg"
    empty.write_bytes(b"")
    assert "empty" in str(_refused(empty, "empty"))
    assert _refused(tmp_path / "nope.png", "not_found").status == 404
    _refused(tmp_path, None)
    text = tmp_path / "notes.jpeg"
    text.write_text("patient notes, not an image\n" * 20)
    err = _refused(text, "unsupported_format")
    assert "not a JPEG, PNG or DICOM image (it looks like plain text)" in str(err) and err.status == 415
    _refused(np.random.default_rng(0).bytes(4096), "unsupported_format")
    _refused("bad\0name.png")
    _refused("x" * 5000, "unreadable")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_refuses_truncated(fmt):
    noise = np.random.default_rng(1).integers(0, 255, (256, 256), dtype=np.uint8)
    data = _save(Image.fromarray(noise), fmt)
    err = _refused(data[: len(data) // 2])
    assert err.code in ("truncated", "undecodable") and err.status == 422


def test_pixel_limit_small_and_decompression_bomb_header():
    err = _refused(_save(Image.fromarray(RAMP_U8), "PNG"), "too_many_pixels", max_pixels=1000)
    assert err.status == 413 and "48×32" in str(err)
    # a real bomb: a valid PNG header claiming 100,000×100,000 pixels, a few bytes long
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))
    assert len(bomb) < 200
    assert _refused(bomb, "too_many_pixels").status == 413
    # under Pillow's own bomb threshold but over ours (8,000×8,000 = 64 MP > 50 MP)
    ihdr = struct.pack(">IIBBBBB", 8_000, 8_000, 8, 0, 0, 0, 0)
    header_only = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    assert "over the limit" in str(_refused(header_only, "too_many_pixels"))


# ---------------------------------------------------------------- fuzzing

_SEEDS = [
    _save(Image.fromarray(RAMP_U8), "JPEG"),
    _save(Image.fromarray(RAMP_U8), "PNG"),
    _save(Image.fromarray(RAMP_U8).convert("P"), "GIF"),
]


def _only_image_errors(data: bytes) -> None:
    try:
        pixels, _ = read_image(data, max_pixels=4_000_000)
    except ImageError:
        return
    except PneumoError as exc:  # pragma: no cover - a wrong subclass is a bug too
        raise AssertionError(f"non-ImageError {exc!r}") from exc
    assert pixels.ndim == 2 and pixels.dtype == np.float32
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data):
    _only_image_errors(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(_SEEDS))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_fuzz_mutated_images(which, flips, cut):
    data = bytearray(_SEEDS[which])
    for pos, value in flips:
        data[pos % len(data)] = value
    _only_image_errors(bytes(data[: max(1, len(data) - cut % len(data))]))
