"""Heavy packages are imported only where used: the shipped compact CNN loads and predicts without
MONAI, scipy, matplotlib, scikit-learn or FastAPI; the DICOM node never imports FastAPI or the web
app. Each check runs in a fresh interpreter, so nothing a test imported earlier hides a regression.
(The time this saves is measured by benchmarks/import_cost.py, not asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pneumo.inference import default_bundle_path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _modules_after(code: str) -> set[str]:
    code += "\nimport sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | set(sys.modules))))"
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_load_and_predict_the_shipped_model_imports_no_heavy_extras(tmp_path):
    from PIL import Image

    film = tmp_path / "film.png"
    Image.new("L", (300, 300), 128).save(film)
    mods = _modules_after(f"import pneumo; pneumo.load(r'{default_bundle_path()}').predict(r'{film}')")
    assert "torch" in mods and "onnxruntime" in mods
    assert not mods & {"monai", "scipy", "matplotlib", "sklearn", "fastapi", "lightning", "pneumo.models.backbones"}


def test_building_a_monai_backbone_still_works_through_the_registry():
    mods = _modules_after("from pneumo.models import build_model; m = build_model('resnet18'); assert m.cam_layer")
    assert "monai" in mods and "pneumo.models.backbones" in mods


def test_dicom_node_imports_no_web_framework():
    mods = _modules_after("import pneumo.dicomnode.node, pneumo.cli.dicom_node")
    assert "pneumo.server.audit_store" in mods
    assert not mods & {"fastapi", "starlette", "uvicorn", "fpdf", "pneumo.server.app", "pneumo.server.routes"}


def test_audit_monitor_starts_without_torch():
    mods = _modules_after("from pneumo.cli.serve import _default_bundle, monitor; _default_bundle()")
    assert "torch" not in mods and "fastapi" not in mods
