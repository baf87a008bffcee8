"""Issue 22 item 6: a frame of a multi-frame DICOM can be chosen in `pneumo predict --frame N` and on the
page (it asks which frame); the page's batch/folder upload takes files by content, not extension, and
lists what it skipped and why."""

from __future__ import annotations

import io
import json

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from pneumo.cli import main
from pneumo.inference import default_bundle_path
from test_dicom_node_support import chest_dicom

pytest_plugins = ["page_support"]


def multiframe(image, frames: int = 3) -> bytes:
    """A 3-frame CR of a shared film (the same film in every frame)."""
    ds = pydicom.dcmread(io.BytesIO(chest_dicom(image, generate_uid())))
    arr = ds.pixel_array
    ds.NumberOfFrames = frames
    ds.PixelData = np.stack([arr] * frames).astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_predict_frame_option(tmp_path, val_originals):
    f = tmp_path / "three-frames.dcm"
    f.write_bytes(multiframe(val_originals[0].path))
    bundle = str(default_bundle_path())
    no_frame = CliRunner().invoke(main, ["predict", bundle, str(f), "--json"])
    row = json.loads(no_frame.stdout)["rows"][0]
    assert row["status"] == "error" and "--frame N" in row["error"] and "frame=0..2" in row["error"]
    chosen = CliRunner().invoke(main, ["predict", bundle, str(f), "--json", "--frame", "2"])
    assert chosen.exit_code == 0, chosen.output
    row = json.loads(chosen.stdout)["rows"][0]
    assert row["status"] in ("decided", "flagged") and 0.0 <= row["probability"] <= 1.0
    single = CliRunner().invoke(main, ["predict", bundle, str(val_originals[0].path), "--json"])
    # same film: the JPEG is decoded at a reduced DCT scale for the model, the DICOM frame at full size
    assert abs(json.loads(single.stdout)["rows"][0]["probability"] - row["probability"]) < 5e-3


@pytest.mark.browser
@pytest.mark.slow
def test_page_takes_files_by_content_and_asks_for_a_frame(chromium, page_server, val_originals, tmp_path):
    from playwright.sync_api import expect

    bare = tmp_path / "IM000001"  # a PACS export: DICOM without an extension
    bare.write_bytes(chest_dicom(val_originals[1].path, generate_uid()))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    fake = tmp_path / "fake.png"  # a name that lies about the content
    fake.write_text("not a PNG either")
    films = [val_originals[0].path, bare, notes, fake]
    ctx = chromium.new_context(viewport={"width": 1366, "height": 768})
    page = ctx.new_page()
    try:
        page.goto(page_server.url + "/")
        page.set_input_files("#file", [str(p) for p in films])
        expect(page.locator("#batch-status")).to_contain_text("2 files in", timeout=120_000)
        expect(page.locator("#batch-body tr")).to_have_count(2)
        skipped = page.locator("#batch-skipped")
        expect(skipped).to_contain_text("2 file(s) skipped")
        expect(skipped).to_contain_text("notes.txt: not a JPEG, PNG or DICOM file (by its content)")
        expect(skipped).to_contain_text("fake.png: not a JPEG, PNG or DICOM file")
        assert "IM000001" in page.locator("#batch-body").inner_text()

        three = tmp_path / "three-frames.dcm"
        three.write_bytes(multiframe(val_originals[2].path))
        asked = []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept("1")))
        page.set_input_files("#file", [str(three)])
        expect(page.locator("#status")).to_contain_text("Result for three-frames.dcm", timeout=120_000)
        assert asked and "frame=0..2" in asked[0]
    finally:
        ctx.close()
