"""The page's heatmap through a real server on 127.0.0.1: it shows the decision's evidence and says so.

That repeated heatmaps keep memory flat (issue 13 item 4: each call used to deep-copy the model, ≈2.3 MB
per request) is measured by ``benchmarks/timing_checks.py --only heatmap_rss``: an RSS budget flaked in CI."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from pneumo.explain import DEFAULT_METHOD
from server_support import LiveServer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "default"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (SHIPPED / "model.onnx").exists():
        pytest.skip("models/default has no model.onnx")
    srv = LiveServer(SHIPPED, tmp_path_factory.mktemp("explain-server"))
    try:
        yield srv.wait(timeout=180)
    finally:
        srv.stop()  # also when it never became healthy: no orphaned server


@pytest.fixture(scope="module")
def films(val_originals):
    return [(s.label, s.path.read_bytes()) for s in val_originals]


def _post(srv, data: bytes) -> dict:
    r = httpx.post(srv.url + "/api/v1/predict?heatmap=true&display=true", files={"file": ("x.jpeg", data)},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_heatmap_says_what_it_shows(server, films):
    seen = set()
    for _, data in films:
        body = _post(server, data)
        hm = body["heatmap"]
        expected = "pneumonia" if body["label"] == "PNEUMONIA" else "normal"
        assert hm["target"] == expected and hm["method"] == DEFAULT_METHOD
        assert ("for pneumonia" if expected == "pneumonia" else "against pneumonia") in hm["shows"]
        im = Image.open(io.BytesIO(base64.b64decode(hm["png"])))
        assert im.mode == "RGBA" and im.size == (body["image"]["display_width"], body["image"]["display_height"])
        seen.add(expected)
    assert seen == {"pneumonia", "normal"}  # the 16 originals hold both decisions
