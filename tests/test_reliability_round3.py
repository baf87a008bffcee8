"""Issue 24, third round: files that decode large, wrong-typed bundle metadata, query dates at the
ends of the calendar, 500s inside the middlewares, a full disk under the audit log, a bad --audit-db.

Memory is measured as the peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) of a fresh
interpreter that reads one file: generous bounds on one read, never a timing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bomb_support import rgba_png, rle_dicom
from pneumo.data import dicom_display, imageio, read_image
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
    h, w = 100, 61
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
def test_strip_conversion_equals_whole_image_conversion(im, monkeypatch):
    """The strips are a memory measure only: every value equals converting the whole image at once."""
    monkeypatch.setattr(imageio, "STRIP_ROWS", 16)
    monkeypatch.setattr(imageio, "STRIP_PIXELS", 16 * 32)  # 100 rows of 61: 7 strips
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


# ---------------------------------------------------------------- 3. wrong-typed pneumo.json


def pneumo_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("pneumo")
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent / "src")}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("architecture", ["tiny_cnn"], "an object"),
    ("operating_point", 0.5, "an object"),
    ("preprocess", [224], "an object"),
    ("operating_point.logit", "high", "an integer or a number"),
    ("preprocess.std", "0.25", "an integer or a number"),
    ("temperature", {"t": 1}, "an integer or a number"),
    ("architecture.kwargs", [8, 3], "an object"),
])
def test_wrong_typed_bundle_meta_is_one_line_naming_the_key(tiny_bundle, val_originals, tmp_path, key, value,
                                                            expected):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    meta = json.loads((bundle / "pneumo.json").read_text())
    parent, _, leaf = key.rpartition(".")
    (meta[parent] if parent else meta)[leaf] = value
    (bundle / "pneumo.json").write_text(json.dumps(meta))
    out = pneumo_cli("predict", bundle, val_originals[0].path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"'{key}'" in lines[0] and expected in lines[0], lines[0]


def test_top_level_list_meta_is_one_line(tiny_bundle, tmp_path):
    import shutil

    from pneumo.bundle import load_bundle
    from pneumo.errors import BundleError

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "pneumo.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="JSON object at the top level, got a list"):
        load_bundle(bundle)


# ---------------------------------------------------------------- 4. monitor dates at the ends of the calendar

SECURITY_HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy",
                    "x-request-id")


@pytest.fixture(scope="module")
def live(tiny_bundle, tmp_path_factory):
    from server_support import LiveServer

    server = LiveServer(tiny_bundle, tmp_path_factory.mktemp("round3")).wait(timeout=180)
    yield server
    server.stop()


@pytest.mark.parametrize(("query", "param"), [
    ("since=0001-01-01T00:00%2B01:00", "since"),
    ("until=9999-12-31T23:59-01:00", "until"),
    ("until=W", "until"),
    ("since=yesterday", "since"),
])
def test_monitor_dates_out_of_range_are_400_naming_the_parameter(live, query, param):
    import httpx

    r = httpx.get(f"{live.url}/api/v1/monitor?{query}", timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "bad_parameter"
    assert err["message"].startswith(f"{param} "), err["message"]
    assert "--" not in err["message"]  # a query parameter, not a CLI flag
    assert all(h in r.headers for h in SECURITY_HEADERS)


def test_audit_export_names_the_flag_that_was_wrong(tmp_path):
    from pneumo.server.audit_store import AuditStore

    AuditStore(tmp_path / "a.sqlite").close()
    out = pneumo_cli("audit", "export", "--db", tmp_path / "a.sqlite", "--since", "2026-01-01",
                     "--until", "9999-12-31T23:59-01:00")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--until '9999-12-31T23:59-01:00'" in out.stderr and "0001-01-01 to 9999-12-31 UTC" in out.stderr


# ---------------------------------------------------------------- 5. a 500 inside the middlewares


@pytest.fixture(scope="module")
def crashing(tiny_bundle, tmp_path_factory):
    """The real app with one route that fails as a bug would, served by uvicorn on 127.0.0.1 in a thread."""
    import threading
    import time

    import uvicorn

    from pneumo.server.app import create_app
    from pneumo.server.settings import ServerSettings
    from server_support import free_port

    app = create_app(tiny_bundle, ServerSettings(audit_db=str(tmp_path_factory.mktemp("crash") / "a.sqlite")))

    async def boom():
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom", boom)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started
    yield port, app
    server.should_exit = True
    thread.join(timeout=30)


def test_a_500_carries_the_security_headers_and_keeps_the_connection(crashing):
    import http.client

    port, app = crashing
    before = app.state.unhandled_errors
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/v1/boom")
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 500 and body["error"]["code"] == "internal_error"
    headers = {k.lower(): v for k, v in r.getheaders()}
    missing = [h for h in SECURITY_HEADERS if h not in headers]
    assert not missing, f"the 500 lacks {missing}"
    assert headers["x-request-id"] == body["request_id"] and body["request_id"] in body["error"]["message"]
    assert "a bug" not in json.dumps(body)  # never the exception text
    assert app.state.unhandled_errors == before + 1
    # the same connection answers the next request (before: uvicorn dropped it, the next request got a reset)
    conn.request("GET", "/api/v1/health")
    r2 = conn.getresponse()
    assert r2.status == 200 and json.loads(r2.read())["status"] == "ok"
    conn.close()


# ---------------------------------------------------------------- 7. the audit log on a full disk

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root")


def fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to the last byte; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_root
@pytest.mark.slow
def test_full_disk_under_the_audit_log_is_503_and_reported_by_health(tiny_bundle, val_originals, small_disk, tmp_path):
    import httpx

    from server_support import LiveServer

    server = LiveServer(tiny_bundle, tmp_path, "--audit-db", str(small_disk / "audit.sqlite")).wait(timeout=180)
    film = Path(val_originals[0].path).read_bytes()

    def predict() -> httpx.Response:
        return httpx.post(server.url + "/api/v1/predict", files={"file": ("x.jpeg", film, "image/jpeg")}, timeout=60)

    try:
        assert predict().status_code == 200
        filler = fill(small_disk)
        r = predict()
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "audit_unavailable"
        assert "audit log cannot be written" in r.json()["error"]["message"] and "full" in r.json()["error"]["message"]
        assert "retry-after" in r.headers and all(h in r.headers for h in SECURITY_HEADERS)
        h = httpx.get(server.url + "/api/v1/health", timeout=30)
        assert h.status_code == 503 and h.json()["status"] == "degraded", h.text
        assert "full" in h.json()["problems"][0]
        filler.unlink()  # space freed: health says so before any prediction, and predictions are served
        h = httpx.get(server.url + "/api/v1/health", timeout=30)
        assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["problems"] == [], h.text
        assert predict().status_code == 200
    finally:
        server.stop()


# ---------------------------------------------------------------- 8. an audit database that cannot be written


@pytest.mark.parametrize("where", ["/proc/x.sqlite", "dir", "full"])
def test_serve_with_an_unwritable_audit_db_is_one_line_before_serving(tiny_bundle, tmp_path, where, request):
    if where == "full":
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs to fill needs root")
        disk = request.getfixturevalue("small_disk")
        fill(disk)
        db = disk / "audit.sqlite"
    else:
        db = tmp_path if where == "dir" else Path(where)
    out = pneumo_cli("serve", tiny_bundle, "--port", "0", "--audit-db", db)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --audit-db {db}"), out.stderr[-3000:]
    assert "serving" not in out.stderr
