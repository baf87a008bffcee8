"""read_image on real DICOM files written here with pydicom: photometric, LUTs, compression, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicom_support import new_dataset, to_bytes
from pneumo.data import read_image
from pneumo.errors import ImageError

STORED = (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 3)  # 0..3837, 12 bits


def make_dicom(
    pixels: np.ndarray = STORED,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 16,
    frames: int = 1,
    syntax=ExplicitVRLittleEndian,
    with_pixels: bool = True,
    **tags,
) -> bytes:
    ds = new_dataset("DX")
    if with_pixels:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = bits
        ds.BitsStored = bits if bits == 8 else 12
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint8 if bits == 8 else np.uint16)).tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    return to_bytes(ds)


def test_monochrome2_min_max():
    pixels, meta = read_image(make_dicom())
    assert meta.format == "DICOM" and meta.mode == "MONOCHROME2" and meta.bit_depth == 12
    np.testing.assert_allclose(pixels, STORED / STORED.max(), atol=1e-6)


def test_monochrome1_is_inverted():
    m2, _ = read_image(make_dicom())
    m1, meta = read_image(make_dicom(photometric="MONOCHROME1"))
    assert meta.mode == "MONOCHROME1"
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == pytest.approx(1.0)  # stored 0 in MONOCHROME1 is white (dense)


def test_rescale_and_window_are_applied():
    # HU = 2·stored − 1000; window 500 ± 250 HU → stored 625..875 maps to 0..1 (DICOM LINEAR formula)
    pixels, _ = read_image(make_dicom(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=500, WindowWidth=500))
    hu = STORED.astype(np.float64) * 2 - 1000
    expected = np.clip((hu - (500 - 0.5)) / (500 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(pixels, expected, atol=1e-5)
    assert (pixels == 0).any() and (pixels == 1).any() and ((pixels > 0) & (pixels < 1)).any()
    # without the window the rescale is invisible after min–max: the window is what makes the difference
    plain, _ = read_image(make_dicom(RescaleSlope=2, RescaleIntercept=-1000))
    assert not np.allclose(plain, pixels)


def test_window_on_monochrome1_then_inverted():
    win = {"WindowCenter": 1000, "WindowWidth": 1000}
    a, _ = read_image(make_dicom(**win))
    b, _ = read_image(make_dicom(photometric="MONOCHROME1", **win))
    np.testing.assert_allclose(b, 1.0 - a, atol=1e-6)


def test_rle_lossless_roundtrip():
    data = make_dicom(syntax=RLELossless)
    assert RLELossless.encode() in data[:400]
    pixels, _ = read_image(data)
    np.testing.assert_allclose(pixels, STORED / STORED.max(), atol=1e-6)


def test_jpeg_baseline_dicom_via_installed_decoder():
    from PIL import Image
    from pydicom.encaps import encapsulate

    img8 = (STORED / STORED.max() * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img8).save(buf, "JPEG", quality=95)
    data = make_dicom(img8, bits=8)
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    pixels, _ = read_image(out.getvalue())
    assert np.abs(pixels - img8 / 255.0).mean() < 0.02


def test_unsupported_transfer_syntax_is_415():
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    ds = dcmread(io.BytesIO(make_dicom()))
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3 an MPEG-2 video stream"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(ImageError) as info:
        read_image(out.getvalue())
    assert info.value.status == 415 and info.value.code == "dicom_unsupported"
    message = str(info.value)
    assert "MPEG2" in message and MPEG2MPML in message and "\n" not in message


def test_no_pixel_data_and_multiframe():
    with pytest.raises(ImageError, match="no pixel data") as info:
        read_image(make_dicom(with_pixels=False))
    assert info.value.code == "dicom_no_pixels"
    stack = np.stack([STORED, STORED[::-1], STORED[:, ::-1]])
    data = make_dicom(stack, frames=3)
    with pytest.raises(ImageError, match="3 frames") as info:
        read_image(data)
    assert info.value.code == "dicom_multiframe"
    second, _ = read_image(data, frame=1)
    np.testing.assert_allclose(second, STORED[::-1] / STORED.max(), atol=1e-6)
    with pytest.raises(ImageError, match="frame 5"):
        read_image(data, frame=5)


def test_truncated_dicom_and_pixel_limit():
    data = make_dicom()
    with pytest.raises(ImageError):
        read_image(data[: len(data) - 500])
    with pytest.raises(ImageError) as info:
        read_image(data, max_pixels=100)
    assert info.value.status == 413


_SEED = make_dicom(STORED[:8, :8])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 300))
def test_fuzz_mutated_dicom(flips, cut):
    data = bytearray(_SEED)
    for pos, value in flips:
        if pos >= 132:  # keep the DICM magic so the DICOM path is what gets fuzzed
            data[pos] = value
    try:
        pixels, _ = read_image(bytes(data[: len(data) - cut]))
    except ImageError:
        return
    assert pixels.ndim == 2 and float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
