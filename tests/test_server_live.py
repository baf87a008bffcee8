"""A real ``pneumo serve`` process on 127.0.0.1: concurrent clients over HTTP, and the page in headless
Chromium (Debian's, never a downloaded one) — upload, result, heatmap, error messages, DICOM."""

from __future__ import annotations

import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pneumo.data import read_image
from server_support import LiveServer, make_dicom

SHOT = Path("/tmp/server_page.png")


@pytest.fixture(scope="module")
def live(tiny_bundle, small_samples, tmp_path_factory):
    """The tiny bundle plus a real OOD detector fitted on its training images (about a second)."""
    from pneumo.inference import fit_ood

    tmp = tmp_path_factory.mktemp("live")
    bundle = shutil.copytree(tiny_bundle, tmp / "tiny-ood")
    fit_ood(bundle, [s for s in small_samples if s.split == "train"], [s for s in small_samples if s.split == "val"])
    server = LiveServer(bundle, tmp, "--queue", "32").wait()
    yield server
    server.stop()


@pytest.mark.slow
def test_concurrent_requests_all_answered_and_audited(live, val_originals):
    files = [s.path for s in val_originals[::2]]

    def one(path):
        return httpx.post(live.url + "/api/v1/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                          timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, files))
    assert [r.status_code for r in answers] == [200] * len(files)
    ids = {r.json()["request_id"] for r in answers}
    with sqlite3.connect(live.db) as con:
        rows = con.execute("SELECT request_id, outcome FROM predictions").fetchall()
    assert {rid for rid, outcome in rows if outcome == "ok"} >= ids
    assert httpx.get(live.url + "/api/v1/health").json()["in_flight"] == 0


@pytest.fixture(scope="module")
def page(live, chromium):
    pg = chromium.new_page(viewport={"width": 1280, "height": 860})
    outside = []
    # blob: URLs are the page's own in-memory copies of the dropped file (blob:<this server>/<uuid>)
    local = (live.url, "data:", f"blob:{live.url}")
    pg.on("request", lambda req: outside.append(req.url) if not req.url.startswith(local) else None)
    pg.goto(live.url + "/")
    yield pg
    pg.close()
    assert outside == [], f"the page fetched from outside the server: {outside}"


@pytest.mark.browser
@pytest.mark.slow
def test_page_shows_probability_heatmap_and_notice(page, val_originals, tmp_path):
    from playwright.sync_api import expect

    expect(page.locator("#model-line")).to_contain_text("tiny-test")
    expect(page.locator("#op-line")).to_contain_text("sensitivity")
    expect(page.locator(".notice")).to_contain_text("Decision support, not a diagnosis")
    sample = next(s for s in val_originals if s.label == 1)
    page.set_input_files("#file", str(sample.path))
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    expect(page.locator("#prob")).to_have_text(__import__("re").compile(r"\d+\.\d%"))
    expect(page.locator("#label")).to_have_text(__import__("re").compile("Pneumonia suspected|No pneumonia detected"))
    expect(page.locator("#heat")).to_be_visible()
    assert page.locator("#xray").evaluate("img => img.naturalWidth") > 100
    assert page.locator("#heat").evaluate("img => img.naturalWidth") == page.locator("#xray").evaluate(
        "img => img.naturalWidth"
    )
    page.locator("#opacity").fill("80")
    assert page.locator("#heat").evaluate("img => getComputedStyle(img).opacity") == "0.8"
    page.locator("#heat-on").uncheck()
    expect(page.locator("#heat")).to_be_hidden()
    page.locator("#heat-on").check()
    page.locator("#opacity").fill("50")
    expect(page.locator("#ood-info")).to_contain_text("passed")
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    shutil.copy(tmp_path / "page.png", SHOT)
    page.set_viewport_size({"width": 800, "height": 1100})  # tablet portrait: one column
    page.screenshot(path=str(tmp_path / "tablet.png"), full_page=True)
    shutil.copy(tmp_path / "tablet.png", SHOT.with_name("server_page_tablet.png"))
    page.set_viewport_size({"width": 1280, "height": 860})


@pytest.mark.browser
@pytest.mark.slow
def test_page_explains_a_bad_file(page, tmp_path):
    from playwright.sync_api import expect

    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an x-ray\n")
    page.set_input_files("#file", str(notes))
    expect(page.locator("#error")).to_be_visible(timeout=15_000)
    expect(page.locator("#error")).to_contain_text("not a JPEG, PNG or DICOM image")
    expect(page.locator("#result")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
    shutil.copy(tmp_path / "error.png", SHOT.with_name("server_page_error.png"))


@pytest.mark.browser
@pytest.mark.slow
def test_page_shows_a_dicom(page, val_originals, tmp_path):
    from playwright.sync_api import expect

    dcm = tmp_path / "study.dcm"
    dcm.write_bytes(make_dicom(read_image(val_originals[0].path)[0]))
    page.set_input_files("#file", str(dcm))
    expect(page.locator("#img-info")).to_contain_text("DICOM", timeout=30_000)
    expect(page.locator("#error")).to_be_hidden()
    assert page.locator("#xray").evaluate("img => img.complete && img.naturalWidth") > 100
    assert "Secretname" not in page.content() and "PID-7731-XYZZY" not in page.content()


@pytest.mark.browser
@pytest.mark.slow
def test_page_refuses_a_non_xray_plainly(page, tmp_path):
    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    y, x = np.mgrid[0:480, 0:640]
    photo = tmp_path / "holiday.png"  # a smooth colour gradient: a photo, not a radiograph
    Image.fromarray(np.stack([x * 255 // 640, y * 255 // 480, 255 - x * 255 // 640], -1).astype(np.uint8)).save(photo)
    page.set_input_files("#file", str(photo))
    expect(page.locator("#label")).to_have_text("Not a chest X-ray", timeout=30_000)
    expect(page.locator("#refusal")).to_have_text(__import__("re").compile(r"\w"))  # the reason, under the headline
    expect(page.locator("#prob-block")).to_be_hidden()
    expect(page.locator("#heat")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
    shutil.copy(tmp_path / "refused.png", SHOT.with_name("server_page_refused.png"))


@pytest.mark.browser
@pytest.mark.slow
def test_page_leads_with_outside_the_population(page, val_originals, tmp_path):
    """Issue 21: a flagged film (here an adult's, from its DICOM header) leads with the flag; the model's
    answer is only a small secondary line, never the large verdict."""
    from playwright.sync_api import expect
    from pydicom import dcmread

    dcm = tmp_path / "adult.dcm"
    dcm.write_bytes(make_dicom(read_image(val_originals[0].path)[0][::2, ::2]))
    ds = dcmread(dcm)
    ds.PatientAge = "045Y"
    ds.save_as(dcm)
    page.set_input_files("#file", str(dcm))
    expect(page.locator("#label")).to_have_text("Outside the validated population", timeout=30_000)
    expect(page.locator("#refusal")).to_contain_text("patient age 45 years")
    expect(page.locator("#secondary")).to_contain_text("not validated for films like this one")
    expect(page.locator("#prob-block")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "flagged.png"), full_page=True)
    shutil.copy(tmp_path / "flagged.png", SHOT.with_name("server_page_flagged.png"))
