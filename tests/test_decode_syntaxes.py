"""Every transfer syntax a PACS sends, from a real val X-ray and from pydicom's real test files.

Each compressed file is compared with the uncompressed file of the same pixels, through the whole
``read_image`` path (display mapping included): lossless syntaxes must agree exactly, lossy ones
closely. The printed table (``pytest -s``) is the decoding table of the report.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread, uid
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from dicom_support import encode_jpeg_lossless, new_dataset, to_bytes
from pneumo.data import read_image
from pneumo.errors import ImageError


@pytest.fixture(scope="module")
def xray12(val_originals) -> np.ndarray:
    """A real val X-ray, shrunk to about 240 px (fast codecs), as 12-bit stored values 0..4095."""
    pixels, _ = read_image(val_originals[0].path)
    step = max(1, max(pixels.shape) // 240)
    small = pixels[::step, ::step][:200, :240]
    return np.round(small * 4095).astype(np.uint16)


def _dataset(stored: np.ndarray, bits_stored: int, syntax=uid.ExplicitVRLittleEndian):
    ds = new_dataset("DX", syntax)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.PixelData = stored.astype(np.uint8 if bits_stored <= 8 else np.uint16).tobytes()
    return ds


def _encapsulated(stored: np.ndarray, bits: int, syntax, codestream: bytes) -> bytes:
    ds = _dataset(stored, bits)
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    return to_bytes(ds)


def _build(name: str, stored12: np.ndarray) -> tuple[bytes, bytes, float]:
    """(file in the syntax, the same pixels uncompressed, largest allowed difference in [0, 1] units)."""
    stored8 = (stored12 >> 4).astype(np.uint8)
    plain12, plain8 = to_bytes(_dataset(stored12, 12)), to_bytes(_dataset(stored8, 8))
    if name == "Implicit VR Little Endian":
        ds = _dataset(stored12, 12, uid.ImplicitVRLittleEndian)
        return to_bytes(ds), plain12, 0.0
    if name == "Deflated Explicit VR Little Endian":
        return to_bytes(_dataset(stored12, 12, uid.DeflatedExplicitVRLittleEndian)), plain12, 0.0
    if name == "JPEG Baseline (8-bit)":
        buf = io.BytesIO()
        Image.fromarray(stored8).save(buf, "JPEG", quality=95)
        return _encapsulated(stored8, 8, uid.JPEGBaseline8Bit, buf.getvalue()), plain8, 0.06
    if name == "JPEG Lossless SV1 (process 14)":
        return _encapsulated(stored12, 12, uid.JPEGLosslessSV1, encode_jpeg_lossless(stored12, 12, 1)), plain12, 0.0
    if name == "JPEG Lossless process 14 (predictor 6)":
        return _encapsulated(stored12, 12, uid.JPEGLossless, encode_jpeg_lossless(stored12, 12, 6)), plain12, 0.0
    syntax, kwargs, tol = {
        "RLE Lossless": (uid.RLELossless, {}, 0.0),
        "JPEG-LS Lossless": (uid.JPEGLSLossless, {}, 0.0),
        "JPEG-LS Near-Lossless": (uid.JPEGLSNearLossless, {"jls_error": 3}, 8 / 4095),
        "JPEG 2000 Lossless": (uid.JPEG2000Lossless, {}, 0.0),
        "JPEG 2000 (lossy)": (uid.JPEG2000, {"j2k_psnr": [50]}, 0.05),
    }[name]
    ds = _dataset(stored12, 12)
    ds.compress(syntax, **kwargs)
    return to_bytes(ds), plain12, tol


SYNTAXES = [
    "Implicit VR Little Endian", "Deflated Explicit VR Little Endian", "RLE Lossless", "JPEG Baseline (8-bit)",
    "JPEG Lossless SV1 (process 14)", "JPEG Lossless process 14 (predictor 6)", "JPEG-LS Lossless",
    "JPEG-LS Near-Lossless", "JPEG 2000 Lossless", "JPEG 2000 (lossy)",
]


@pytest.mark.parametrize("name", SYNTAXES)
def test_real_xray_in_every_syntax_decodes_to_its_pixels(name, xray12):
    data, plain, tol = _build(name, xray12)
    expected, _ = read_image(plain)
    pixels, meta = read_image(data)
    diff = float(np.abs(pixels - expected).max())
    mean = float(np.abs(pixels - expected).mean())
    print(f"\n{name:42s} {meta.width}×{meta.height} {len(data):>8,} bytes  max |Δ| {diff:.4f}  mean {mean:.5f}")
    assert meta.format == "DICOM" and pixels.shape == xray12.shape
    assert diff <= tol + 1e-6 and mean <= max(tol / 4, 1e-6)


def test_uncompressed_reference_is_the_stored_values(xray12):
    pixels, meta = read_image(to_bytes(_dataset(xray12, 12)))
    lo, hi = int(xray12.min()), int(xray12.max())
    np.testing.assert_allclose(pixels, (xray12 - lo) / (hi - lo), atol=1e-6)
    assert meta.bit_depth == 12


# (compressed file, uncompressed twin or None, frame, tolerance): real files from DICOM toolkits
PAIRS = [
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", None, None, 0.0),
    ("JPEG-LL.dcm", None, None, 0.0),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm", None, 0.0),  # JPEG Lossless SV1, RGB
    ("JPGExtended.dcm", None, None, 0.0),  # JPEG Extended, 12 bit
    ("JPEG-lossy.dcm", "JPGExtended.dcm", None, 1 / 264 + 1e-6),  # the same, with a scan header to repair
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", None, 0.0),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", 4, 0.0),
    ("MR_small_RLE.dcm", "MR_small.dcm", None, 0.0),
    ("emri_small_RLE.dcm", "emri_small.dcm", 7, 0.0),
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm", None, 0.0),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", 2, 0.0),
    ("RG3_J2KR.dcm", "RG3_UNCR.dcm", None, 0.0),
    ("image_dfl.dcm", None, None, 0.0),
    ("MR_small_bigendian.dcm", "MR_small.dcm", None, 0.0),
]


@pytest.mark.parametrize("name,twin,frame,tol", PAIRS, ids=[p[0] for p in PAIRS])
def test_real_toolkit_files_decode(name, twin, frame, tol):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is in pydicom-data, which is not installed")
    pixels, meta = read_image(path, frame=frame)
    syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert meta.format == "DICOM" and pixels.ndim == 2 and float(pixels.max()) > float(pixels.min())
    line = f"\n{name:34s} {syntax.name[:60]:60s} {meta.width}×{meta.height}"
    if twin is not None:
        expected, _ = read_image(get_testdata_file(twin), frame=frame)
        diff = float(np.abs(pixels - expected).max())
        line += f"  max |Δ| vs {twin}: {diff:.4f}"
        assert diff <= tol
    print(line)


def test_twelve_bit_repair_is_needed_and_only_for_the_broken_scan():
    """JPEG-lossy.dcm's scan header says Ss/Se = 0/0; every decoder refuses it as is."""
    from pydicom.pixels import get_decoder

    ds = dcmread(get_testdata_file("JPEG-lossy.dcm"))
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    with pytest.raises(Exception):  # noqa: B017 - whatever the plugins raise: the point is that they fail
        decoder.as_array(ds)
    pixels, _ = read_image(get_testdata_file("JPEG-lossy.dcm"))
    assert pixels.shape == (1024, 256)


def test_missing_pixel_format_tags_take_their_standard_defaults(xray12):
    ds = _dataset(xray12, 16)
    for key in ("BitsStored", "HighBit", "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel"):
        del ds[key]
    pixels, _ = read_image(to_bytes(ds))
    expected, _ = read_image(to_bytes(_dataset(xray12, 16)))
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_unsupported_syntax_is_one_line_naming_it(xray12):
    for syntax in (uid.MPEG2MPML, "1.2.840.10008.1.2.4.110", "1.3.6.1.4.1.99999.1"):  # MPEG-2, JPEG XL, private
        ds = _dataset(xray12, 12)
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=False, little_endian=True, force_encoding=True)
        data = buf.getvalue()
        with pytest.raises(ImageError) as info:
            read_image(data)
        message = str(info.value)
        assert info.value.code == "dicom_unsupported" and info.value.status == 415, message
        assert str(syntax) in message and "\n" not in message and "plugin" not in message.lower()
