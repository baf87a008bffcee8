"""Files that declare far more than they hold are refused from their headers: fast and with flat memory.

Each hostile file is read by ``read_image`` in a fresh Python process that reports its peak-RSS growth
and the wall time of the call (imports excluded), so one case cannot hide behind another's memory.
Before these checks, the same files cost: deflated 1 GB bomb +3 GB, 1×50,000,000 PNG +860 MB,
7 KB JPEG claiming 7000×7000 +610 MB (see the report of issue 13).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicom_support import new_dataset, to_bytes
from pneumo.data import read_image
from pneumo.errors import ImageError

PROBE = r"""
import json, os, resource, sys, time
import numpy, PIL.Image, pydicom  # imports are not what is measured
import pneumo.data.dicom
from pneumo.data import read_image
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    child = os.fork()  # one fresh process per file, imports shared: one file's peak cannot hide another's
    if child:
        os.waitpid(child, 0)
        continue
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    try:
        read_image(data)
        out = {"code": None, "message": None}
    except Exception as exc:
        out = {"code": getattr(exc, "code", type(exc).__name__), "message": str(exc), "type": type(exc).__name__}
    out["seconds"] = time.perf_counter() - t
    out["peak_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    out["name"], out["kb"] = os.path.basename(path), len(data) / 1024
    print(json.dumps(out), flush=True)
    os._exit(0)
"""
MAX_GROWTH_MB, MAX_SECONDS = 300, 1.0


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> dict[str, dict]:
    """Every hostile file of this module, read once each in its own forked process."""
    folder = tmp_path_factory.mktemp("hostile")
    files = {
        "deflate_bomb.dcm": deflated_dicom(512, 512, 256 << 20),  # declares 0.5 MB of pixels, inflates to 256 MB
        "deflate_20000x20000.dcm": deflated_dicom(20000, 20000, 64 << 20),
        "deflate_private_block.dcm": deflated_dicom(512, 512, 512 * 512 * 2, 128 << 20),
        "png_1x50M.png": png(1, 50_000_000, b"\x00\x80"),  # 100 MB raw in ~97 KB: the probe
        "jpeg_7000x7000.jpg": jpeg_claiming(7000, 7000),
        "control_2500x2500.png": png(2500, 2500),  # honest and big: shows the probe sees real growth
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    run = subprocess.run([sys.executable, "-c", PROBE, *(str(folder / n) for n in files)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = {r["name"]: r for r in map(json.loads, run.stdout.strip().splitlines())}
    for r in results.values():
        print(f"\n{r['name']:28s} {r['kb']:6.0f} KB  {r['seconds']:.3f} s  +{r['peak_growth_mb']:.0f} MB  "
              f"{r['code']}: {r['message']}")
    assert set(results) == set(files), run.stderr[-2000:]
    return results


def _assert_refused_cheaply(result: dict, code: str) -> None:
    assert result.get("type") == "ImageError" and result["code"] == code, result
    assert result["peak_growth_mb"] < MAX_GROWTH_MB, result
    assert result["seconds"] < MAX_SECONDS, result


def deflated_dicom(rows: int, cols: int, pixel_bytes: int, private_bytes: int = 0) -> bytes:
    """A Deflated DICOM whose header declares rows×cols and whose data inflates to ``pixel_bytes``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    parts = [_deflate_segment(body.getvalue())]
    for group, element, vr, n in ((0x0029, 0x1010, b"OB", private_bytes), (0x7FE0, 0x0010, b"OW", pixel_bytes)):
        if n:
            parts += [_deflate_segment(struct.pack("<HH2sHI", group, element, vr, 0, n)), _zeros(n)]
    return head.getvalue() + b"".join(parts) + DEFLATE_END


DEFLATE_END = b"\x03\x00"  # an empty final block: ends any byte-aligned raw deflate stream


def _deflate_segment(raw: bytes) -> bytes:
    """Raw deflate of ``raw`` ending on a full flush: byte-aligned, self-contained, freely concatenable."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(raw) + comp.flush(zlib.Z_FULL_FLUSH)


def _zeros(n: int, block: int = 1 << 20) -> bytes:
    """``n`` zero bytes, deflated in milliseconds by repeating one compressed megabyte."""
    whole, rest = divmod(n, block)
    return _deflate_segment(bytes(block)) * whole + (_deflate_segment(bytes(rest)) if rest else b"")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, row: bytes | None = None, rows: int | None = None) -> bytes:
    """A greyscale PNG declaring width×height whose data is ``rows`` copies of ``row`` (zeros by default)."""
    row = bytes(width + 1) if row is None else row
    rows = height if rows is None else rows
    block = row * max(1, (1 << 20) // len(row))
    whole, rest = divmod(rows, len(block) // len(row))
    idat = b"\x78\xda" + _deflate_segment(block) * whole + _deflate_segment(row * rest) + DEFLATE_END
    checksum = 1
    for _ in range(whole):
        checksum = zlib.adler32(block, checksum)
    checksum = zlib.adler32(row * rest, checksum)
    idat += struct.pack(">I", checksum)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 96×96 JPEG whose frame header is rewritten to claim width×height."""
    noise = np.random.default_rng(0).integers(0, 255, (96, 96), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_deflated_bomb_is_refused_with_flat_memory(probed):
    result = probed["deflate_bomb.dcm"]
    assert result["kb"] < 400
    _assert_refused_cheaply(result, "too_many_pixels")
    assert "decompression bomb" in result["message"]


def test_deflated_bombs_in_the_header_are_refused_with_flat_memory(probed):
    huge = probed["deflate_20000x20000.dcm"]
    _assert_refused_cheaply(huge, "too_many_pixels")
    assert "20000×20000" in huge["message"] and "50,000,000" in huge["message"]
    _assert_refused_cheaply(probed["deflate_private_block.dcm"], "too_many_pixels")


def test_the_probe_measures_real_decoding(probed):
    control = probed["control_2500x2500.png"]
    assert control["code"] is None and control["peak_growth_mb"] > 20, control  # 6.25 M float32 pixels = 25 MB


def test_honest_deflated_dicom_still_reads():
    stored = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200) % 4096
    ds = new_dataset("DX", DeflatedExplicitVRLittleEndian)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 300, 200, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    pixels, meta = read_image(to_bytes(ds))
    assert (meta.height, meta.width) == (300, 200)
    np.testing.assert_allclose(pixels, stored / 4095.0, atol=1e-6)


def test_png_declaring_1x50_million_is_refused_before_decoding(probed):
    result = probed["png_1x50M.png"]
    assert result["kb"] < 150
    _assert_refused_cheaply(result, "bad_geometry")
    assert "1×50000000" in result["message"]


def test_jpeg_claiming_7000x7000_in_7_kb_is_refused_before_decoding(probed):
    result = probed["jpeg_7000x7000.jpg"]
    assert result["kb"] < 12
    _assert_refused_cheaply(result, "truncated")
    assert "7000×7000" in result["message"]


def test_png_whose_data_is_far_short_of_its_size_is_refused():
    with pytest.raises(ImageError) as info:
        read_image(png(6000, 6000, rows=100))  # only 100 of 6000 rows of data
    assert info.value.code == "truncated" and "6000×6000" in str(info.value)


def test_pillow_limits_never_reach_the_user():
    """Over Pillow's 178,956,970-pixel bomb limit and over ours: pneumo's limit and words."""
    for data in (png(20_000, 20_000), jpeg_claiming(15_000, 15_000)):
        with pytest.raises(ImageError) as info:
            read_image(data)
        message = str(info.value)
        assert info.value.code == "too_many_pixels" and info.value.status == 413
        assert "50,000,000" in message and "178,956,970" not in message and "Pillow" not in message
        assert "DecompressionBomb" not in message
    # with a limit above Pillow's own, Pillow's check must not speak either
    with pytest.raises(ImageError) as info:
        read_image(jpeg_claiming(15_000, 15_000), max_pixels=400_000_000)
    assert "DecompressionBomb" not in str(info.value) and "178,956,970" not in str(info.value)


def test_shape_limits_from_the_header():
    with pytest.raises(ImageError) as info:
        read_image(png(10, 4000))  # 400:1 - no radiograph
    assert info.value.code == "bad_geometry" and "10×4000" in str(info.value)
    assert read_image(png(300, 5000))[0].shape == (5000, 300)  # 17:1 is odd, but the reader is not the judge
    with pytest.raises(ImageError) as info:
        read_image(png(40, 40), min_side=64)
    assert info.value.code == "image_too_small" and "40×40" in str(info.value)


def test_real_images_pass_the_header_checks(val_originals):
    for sample in val_originals[:4]:
        pixels, meta = read_image(sample.path)
        assert min(pixels.shape) > 224 and meta.format == "JPEG"
