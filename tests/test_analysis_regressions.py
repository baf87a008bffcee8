"""Regression tests for the two bugs the analysis service fixed, on the shipped bundle ``models/default``.

Bug 1: the DICOM node said "no gate" for a bundle with a chest-X-ray gate but no population model
(it read the population detector as the gate). Bug 2: a refused film ("NOT_A_CHEST_XRAY") got a
heatmap of "evidence against pneumonia" — a refusal dressed as a finding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pneumo.errors import ConfigError
from pneumo.inference import NOT_A_CXR, default_bundle_path


@pytest.fixture(scope="module")
def gradient_photo(tmp_path_factory) -> Path:
    """A real non-chest image: a 320×240 RGB colour gradient with a disc, saved as JPEG by Pillow."""
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), 255 - xx * 255 // (w - 1)], axis=-1)
    disc = (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < 50**2
    rgb[disc] = (250, 220, 30)
    path = tmp_path_factory.mktemp("photo") / "gradient.jpg"
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(path, quality=92)
    return path


def test_node_reports_a_gate_for_a_bundle_with_a_gate_and_no_population_model(tmp_path):
    from pneumo.dicomnode.node import Destination, DicomNode, NodeSettings

    bundle = tmp_path / "gate-only"
    shutil.copytree(default_bundle_path(), bundle)
    (bundle / "ood.safetensors").unlink()
    meta = json.loads((bundle / "pneumo.json").read_text())
    assert "gate" in meta and (bundle / "gate.safetensors").exists()
    meta.pop("ood", None)
    (meta.get("derived") or {}).pop("ood.safetensors", None)
    (bundle / "pneumo.json").write_text(json.dumps(meta))
    settings = NodeSettings(send_to=Destination("PACS", "127.0.0.1", 104), spool=tmp_path / "spool",
                            audit_db=tmp_path / "audit.db")
    node = DicomNode(bundle, settings)
    try:
        assert node.predictor.ood_detector is None  # no population model loaded
        assert node.analyser.has_gate and not node.analyser.has_population
        assert node.model.has_gate is True
    finally:
        node.stop()


def test_target_for_refuses_a_refused_decision():
    from pneumo.explain.explainer import target_for

    assert target_for("PNEUMONIA") == "pneumonia" and target_for("NORMAL") == "normal"
    with pytest.raises(ConfigError, match="NOT_A_CHEST_XRAY"):
        target_for(NOT_A_CXR)


def test_model_explain_draws_no_heatmap_for_a_refused_photo(gradient_photo):
    import pneumo

    a = pneumo.load(default_bundle_path()).explain(gradient_photo)
    assert a.status == "refused" and a.decision == NOT_A_CXR
    assert a.evidence is None and a.probability is None


def test_cli_explain_writes_no_heatmap_for_a_refused_photo(gradient_photo, tmp_path):
    from pneumo.cli import main

    out = tmp_path / "maps"
    res = CliRunner().invoke(main, ["explain", str(default_bundle_path()), str(gradient_photo), "--out", str(out),
                                    "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    (row,) = report["images"]
    assert row["status"] == "refused" and row["decision"] == NOT_A_CXR
    assert row["heatmap"] is None and row["overlay"] is None
    assert not list(out.glob("*.npy")) and not list(out.glob("*.png"))
