"""The REST API through FastAPI's TestClient over a genuinely trained tiny bundle."""

from __future__ import annotations

import base64
import io
import shutil
import sqlite3

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pneumo.bundle import load_bundle
from pneumo.data import read_image
from pneumo.inference import Predictor
from pneumo.inference.ood_fit import fit_ood
from pneumo.server import ServerSettings, create_app
from server_support import PATIENT, make_dicom


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    app = create_app(tiny_bundle, ServerSettings(audit_db=str(db), threads=1, queue=4))
    with TestClient(app, base_url="http://localhost") as client:
        yield client, app, db


def audit_row(db, request_id: str) -> dict:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute("SELECT * FROM predictions WHERE request_id = ?", (request_id,)).fetchall()
    finally:
        con.close()
    assert len(rows) == 1, f"expected one audit row for {request_id}, got {len(rows)}"
    return dict(rows[0])


def post(client, data: bytes, name="x.jpeg", ctype="image/jpeg", **params):
    return client.post("/api/v1/predict", params=params, files={"file": (name, data, ctype)})


def test_predict_val_image_all_fields_match_predictor(served, val_originals, tiny_bundle):
    client, _, db = served
    sample = val_originals[0]
    r = post(client, sample.path.read_bytes(), name=sample.path.name)
    assert r.status_code == 200, r.text
    body = r.json()
    # a path, read as every surface reads it (reduced JPEG decode for the model input)
    expected = Predictor(load_bundle(tiny_bundle), backend="torch").predict([sample.path])[0]
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert body["label"] == expected.decision
    assert body["threshold"] == pytest.approx(expected.threshold, abs=1e-5)
    meta = load_bundle(tiny_bundle).meta
    assert body["operating_point"]["val_sensitivity"] == meta["operating_point"]["val_sensitivity"]
    assert body["model"] == {"name": "tiny-test", "version": meta["pneumo_version"], "sha256": meta["weights_sha256"]}
    w, h = Image.open(sample.path).size
    assert body["image"]["width"] == w and body["image"]["height"] == h and body["image"]["format"] == "JPEG"
    assert body["image"]["display_png"] is None and body["heatmap"] is None
    assert set(body["ood"]) == {"available", "flag", "score", "threshold"}
    assert body["latency_ms"] > 0 and len(body["request_id"]) == 32
    assert r.headers["x-request-id"] == body["request_id"]
    assert "not a diagnosis" in body["notice"]
    row = audit_row(db, body["request_id"])
    assert row["outcome"] == "ok" and row["decision"] == body["label"]
    assert row["probability"] == pytest.approx(body["probability"])
    assert row["image_sha256"] == body["image"]["sha256"] and row["model_sha256"] == meta["weights_sha256"]
    assert row["width"] == w and row["error_code"] is None and row["time"].endswith("+00:00")


def test_heatmap_and_display_are_decodable_pngs(served, val_originals):
    client, _, _ = served
    r = post(client, val_originals[-1].path.read_bytes(), heatmap="true", display="true")
    assert r.status_code == 200, r.text
    body = r.json()
    shown = Image.open(io.BytesIO(base64.b64decode(body["image"]["display_png"])))
    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap"]["png"])))
    assert shown.format == heat.format == "PNG" and heat.mode == "RGBA"
    assert heat.size == shown.size == (body["image"]["display_width"], body["image"]["display_height"])
    assert max(shown.size) <= 1024
    alpha = np.asarray(heat)[..., 3]
    assert alpha.max() > 200 and alpha.min() < alpha.max()  # a real map, not a blank layer


def test_dicom_upload_works_and_patient_data_never_leaks(served, val_originals):
    client, _, db = served
    pixels, _ = read_image(val_originals[1].path)
    dcm = make_dicom(pixels)
    assert PATIENT["PatientID"].encode() in dcm  # the fields really are in the upload
    r = post(client, dcm, name="study.dcm", ctype="application/dicom", display="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"]["format"] == "DICOM" and body["label"] in ("PNEUMONIA", "NORMAL")
    assert (body["image"]["height"], body["image"]["width"]) == pixels.shape
    Image.open(io.BytesIO(base64.b64decode(body["image"]["display_png"]))).verify()
    jpeg = post(client, val_originals[1].path.read_bytes()).json()
    assert abs(body["probability"] - jpeg["probability"]) < 0.05  # same picture, 12-bit instead of 8-bit
    assert audit_row(db, body["request_id"])["format"] == "DICOM"
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    # whole values and distinctive pieces (short ones like "Doe" occur by chance in base64 PNGs)
    needles = [*PATIENT.values(), "Secretname", "Janet Secretname", "XYZZY"]
    for needle in needles:
        assert needle.encode() not in stored and needle not in r.text, needle


def test_model_and_health_endpoints(served, tiny_bundle):
    client, _, _ = served
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["model"]["name"] == "tiny-test" and health["in_flight"] == 0
    info = client.get("/api/v1/model").json()
    meta = load_bundle(tiny_bundle).meta
    assert info["architecture"] == meta["architecture"] and info["preprocess"]["size"] == 64
    op = info["operating_point"]
    assert op["logit"] == pytest.approx(meta["operating_point"]["logit"])
    assert op["val_specificity"] == meta["operating_point"]["val_specificity"] and op["rule"] == "youden"
    assert info["limits"]["max_upload_mb"] == 25
    # the boundary the answers respect is readable by programs: the header policy every path applies
    assert info["header_policy"]["age_years"] == [1.0, 5.0] and "CT" not in info["header_policy"]["modalities"]
    assert info["population"] == meta.get("population")


def test_docs_page_and_openapi_are_offline(served):
    """(Swagger UI's own files and its rendering: tests/test_docs_page.py.)"""
    client, _, _ = served
    spec = client.get("/openapi.json").json()
    assert "/api/v1/predict" in spec["paths"] and "ErrorResponse" in spec["components"]["schemas"]
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    index = client.get("/")
    assert "Decision support, not a diagnosis" in index.text
    for html in (page.text, index.text, client.get("/static/app.js").text):
        assert "http://" not in html.replace("http://HOST", "") and "https://" not in html  # no CDN


def test_full_queue_answers_503_with_retry_after(served, val_originals):
    client, app, db = served
    gate = app.state.gate
    data = val_originals[2].path.read_bytes()
    held = 0
    try:
        while gate.try_enter():
            held += 1
        assert held == 4
        r = post(client, data)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json()["error"]["code"] == "busy"
        assert audit_row(db, r.json()["request_id"])["error_code"] == "busy"
    finally:
        for _ in range(held):
            gate.leave()
    assert post(client, data).status_code == 200


def test_catch_all_500_hides_the_trace(tiny_bundle, tmp_path, monkeypatch):
    app = create_app(tiny_bundle, ServerSettings(audit_db=str(tmp_path / "a.sqlite")))

    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        monkeypatch.setattr(app.state.engine, "analyse", boom)
        r = post(client, b"\x89PNG\r\n\x1a\n" + b"0" * 100, name="x.png", ctype="image/png")
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["code"] == "internal_error" and "secret" not in r.text and "Traceback" not in r.text
    assert app.state.unhandled_errors == 1
    assert audit_row(tmp_path / "a.sqlite", body["request_id"])["error_code"] == "internal_error"


def test_ood_refusal_when_the_bundle_has_a_detector(tiny_bundle, small_samples, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "tiny-ood")
    fit_ood(bundle, [s for s in small_samples if s.split == "train"], [s for s in small_samples if s.split == "val"])
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (400, 400), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    app = create_app(bundle, ServerSettings(audit_db=str(tmp_path / "a.sqlite")))
    with TestClient(app, base_url="http://localhost") as client:
        r = post(client, buf.getvalue(), name="noise.png", ctype="image/png", heatmap="true")
        xray = post(client, small_samples[0].path.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "not_a_chest_xray" and body["probability"] is None and body["message"]
    assert body["ood"]["available"] and body["ood"]["flag"] and body["ood"]["score"] > body["ood"]["threshold"]
    assert body["heatmap"] is None
    assert xray.json()["ood"]["flag"] is False  # a training X-ray passes
    row = audit_row(tmp_path / "a.sqlite", body["request_id"])
    assert row["outcome"] == "refused_ood" and row["ood_flag"] == 1 and row["probability"] is None


def test_audit_export_cli(served, tmp_path):
    from click.testing import CliRunner

    from pneumo.cli import main

    _, _, db = served
    out = tmp_path / "audit.csv"
    res = CliRunner().invoke(main, ["audit", "export", "--db", str(db), "--since", "2000-01-01", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("time,request_id,outcome,") and len(lines) >= 4
    future = CliRunner().invoke(main, ["audit", "export", "--db", str(db), "--since", "2999-01-01"])
    assert future.exit_code == 0 and future.stdout.strip().count("\n") == 0  # header only
    bad = CliRunner().invoke(main, ["audit", "export", "--db", str(db), "--since", "yesterday"])
    assert bad.exit_code == 2 and "expected a date" in bad.output


def test_unknown_paths_and_methods_are_json_errors(served):
    client, _, _ = served
    r = client.get("/api/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found" and "/docs" in r.json()["error"]["message"]
    r = client.delete("/api/v1/predict")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_multiframe_dicom_needs_a_frame(served, val_originals):
    client, _, _ = served
    pixels, _ = read_image(val_originals[4].path)
    dcm = make_dicom(pixels[::4, ::4], frames=2)
    refused = post(client, dcm, name="cine.dcm", ctype="application/dicom")
    assert refused.status_code == 422 and "frame" in refused.json()["error"]["message"]
    r = post(client, dcm, name="cine.dcm", ctype="application/dicom", frame=1)
    assert r.status_code == 200 and r.json()["image"]["format"] == "DICOM"
    assert post(client, dcm, name="cine.dcm", ctype="application/dicom", frame=5).status_code == 422
