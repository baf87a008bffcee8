"""Issue 24, third round: files that decode large, wrong-typed bundle metadata, query dates at the
ends of the calendar, 500s inside the middlewares, a full disk under the audit log, a bad --audit-db.

Memory is measured as the peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) of a fresh
interpreter that reads one file: generous bounds on one read, never a timing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bomb_support import rgba_png, rle_dicom
from pneumo.data import dicom_display, read_image
from pneumo.data.imageio import STRIP_ROWS, _strip_to_unit_gray, _to_unit_gray
from pneumo.errors import ImageError

TESTS = Path(__file__).parent
MB = 2**20
BOUND_MB = 300  # issue 24: one request may raise RSS by at most this


def peak_rss_of_read(kind: str, side: int) -> tuple[float, str]:
    """Peak RSS rise (MB) of ``read_image`` on one bomb in a fresh interpreter, and what it answered."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import bomb_support
        from pneumo.data import read_image
        from pneumo.errors import ImageError
        data = bomb_support.{'rgba_png' if kind == 'png' else 'rle_dicom'}({side})
        read_image(bomb_support.rgba_png(64)); read_image(bomb_support.rle_dicom(64))  # imports, caches
        def status(key):
            return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024
        open('/proc/self/clear_refs', 'w').write('5')  # VmHWM := VmRSS
        base = status('VmRSS')
        try:
            px, meta = read_image(data)
            answer = f'ok {{px.shape}} {{meta.width}}x{{meta.height}}'
        except ImageError as exc:
            answer = f'{{exc.status}} {{exc.code}}: {{exc}}'
        print(status('VmHWM') - base)
        print(answer)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rise, answer = out.stdout.strip().splitlines()[-2:]
    return int(rise) / MB, answer


# ---------------------------------------------------------------- 1. RGBA PNG bomb


def test_rgba_png_bomb_is_refused_from_its_header():
    """7071×7071 RGBA is under the 50 MP pixel cap but decodes to 191 MB of raster (the issue: +912 MB)."""
    rise, answer = peak_rss_of_read("png", 7071)
    assert answer.startswith("413 too_many_pixels"), answer
    assert "RGBA" in answer and "MB" in answer
    assert rise < 50, f"refusing from the header should decode nothing, RSS rose {rise:.0f} MB"


def test_largest_rgba_png_allowed_reads_within_bound():
    """The largest RGBA square the byte limit allows (3535², 12.5 MP) reads, under the issue's bound."""
    rise, answer = peak_rss_of_read("png", 3535)
    assert answer == "ok (3535, 3535) 3535x3535", answer
    assert rise < BOUND_MB, f"peak RSS rose {rise:.0f} MB"


def _gallery() -> list[Image.Image]:
    """One image per Pillow mode a PNG/JPEG can decode to, taller than a strip, with odd values."""
    rng = np.random.default_rng(0)
    h, w = STRIP_ROWS * 2 + 37, 61
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    pal = Image.fromarray(rgba[..., 0]).convert("P")
    pal.info["transparency"] = 7
    f = rng.random((h, w), dtype=np.float32) * 3
    f[0, 0] = np.nan
    rgba_im = Image.fromarray(rgba)
    return [
        rgba_im, rgba_im.convert("RGB"), Image.fromarray(rgba[..., 0]), rgba_im.convert("LA"), pal,
        Image.fromarray(rgba[..., 1]).convert("1"), Image.fromarray(rgba[..., 0].astype(np.uint16) * 257),
        Image.fromarray(rgba[..., 0].astype(np.int32) * 300), Image.fromarray(f), Image.fromarray(f / 4),
        rgba_im.convert("CMYK"),
    ]


@pytest.mark.parametrize("im", _gallery(), ids=lambda im: im.mode)
def test_strip_conversion_equals_whole_image_conversion(im):
    """The strips are a memory measure only: every value equals converting the whole image at once."""
    arr = np.asarray(im, dtype=np.float32) if im.mode in ("I", "F") else None
    peak = None if arr is None else float(np.nanmax(arr))
    np.testing.assert_array_equal(_to_unit_gray(im), _strip_to_unit_gray(im, peak))


# ---------------------------------------------------------------- 2. RLE DICOM bomb


def test_rle_dicom_bomb_is_refused_from_its_header():
    """1.5 MB of RLE that decodes to 7071×7071×16 bit (the issue: +653 MB)."""
    rise, answer = peak_rss_of_read("rle", 7071)
    assert answer.startswith("413 too_many_pixels"), answer
    assert "one frame" in answer
    assert rise < 50, f"refusing from the header should decode nothing, RSS rose {rise:.0f} MB"


def test_largest_rle_dicom_allowed_reads_within_bound():
    """5000×5000 16-bit (the byte limit's largest square) decodes and maps to display in strips."""
    rise, answer = peak_rss_of_read("rle", 5000)
    assert answer == "ok (5000, 5000) 5000x5000", answer
    assert rise < BOUND_MB, f"peak RSS rose {rise:.0f} MB"


@pytest.mark.parametrize("window", [None, (1800.0, 400.0), (1800.0, 0.5)], ids=["minmax", "window", "narrow"])
def test_dicom_display_in_strips_equals_whole_image(window, monkeypatch):
    from pneumo.data.dicom import read_dicom_pixels

    side = STRIP_ROWS * 2 + 11
    rng = np.random.default_rng(1)
    data = rle_dicom(side, window=window)
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.decompress()
    arr = rng.integers(0, 4096, (side, side), dtype=np.uint16)
    ds.PixelData = arr.tobytes()
    stripped = dicom_display.display(arr, ds)
    monkeypatch.setattr(dicom_display, "STRIP_ROWS", 10**9)
    np.testing.assert_array_equal(stripped, dicom_display.display(arr, ds))
    assert stripped.dtype == np.float32 and stripped.shape == (side, side)
    assert read_dicom_pixels(data, "x", max_pixels=50_000_000, frame=None)[0].shape == (side, side)


def test_refusal_names_the_byte_limit_and_the_pixel_limit_still_holds():
    with pytest.raises(ImageError) as info:
        read_image(rgba_png(1000), max_pixels=1_000_000)  # 1 MP: under the pixel cap, 4 MB of RGBA
    assert info.value.status == 413 and "4 bytes a pixel" in str(info.value)
    pixels, meta = read_image(rgba_png(1000), max_pixels=4_000_000)
    assert pixels.shape == (1000, 1000) and (meta.width, meta.height) == (1000, 1000)
