"""The public Python API: the README's quick-start runs as written, and pneumo.load agrees with the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pneumo
from pneumo.data import read_image
from pneumo.errors import PneumoError

ROOT = Path(__file__).resolve().parents[1]
FILM = ROOT.parent / "shared" / "data" / "chest_xray" / "val" / "PNEUMONIA" / "person1946_bacteria_4874.jpeg"


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### From Python\n\n```python\n(.*?)```", text, re.S)
    assert block, "README has no Python quick-start block"
    return block.group(1)


@pytest.mark.skipif(not FILM.is_file(), reason="shared data not present")
def test_readme_quick_start_runs_as_written():
    r = subprocess.run([sys.executable, "-c", _readme_snippet()], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "PNEUMONIA" in r.stdout and "probability=" in r.stdout


@pytest.mark.skipif(not FILM.is_file(), reason="shared data not present")
def test_load_predicts_paths_pixels_and_lists_like_the_cli(tmp_path):
    model = pneumo.load()
    one = model.predict(FILM)
    pixels = model.predict(read_image(FILM, target=model.predictor.spec.size)[0])  # as the batch loop reads a path
    many = model.predict([FILM, tmp_path / "missing.jpeg"], on_error="record")
    assert one.probability == pytest.approx(pixels.probability, abs=1e-9)
    assert many[0].prediction.probability == pytest.approx(one.probability, abs=1e-9)
    assert isinstance(many[1].error, PneumoError) and many[1].path.endswith("missing.jpeg")
    assert [p.probability for p in model.predict([FILM, tmp_path / "missing.jpeg"], on_error="skip")] == [
        pytest.approx(one.probability, abs=1e-9)]
    with pytest.raises(PneumoError):
        model.predict(tmp_path / "missing.jpeg")
    r = subprocess.run([sys.executable, "-m", "pneumo", "predict", str(FILM), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    row = rows["rows"][0]
    assert row["probability"] == pytest.approx(one.probability, abs=1e-6)
    assert model.sha256 == model.metadata["weights_sha256"]
    assert model.operating_point["logit"] == model.metadata["operating_point"]["logit"]


def test_bad_arrays_are_refused_in_words():
    model = pneumo.load()
    with pytest.raises(PneumoError, match="2-D grayscale"):
        model.predict(np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(PneumoError, match="on_error"):
        model.predict([], on_error="ignore")


def test_import_pneumo_does_not_load_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, pneumo; print(pneumo.__version__, 'torch' in sys.modules)"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    version, torch_loaded = r.stdout.split()
    assert version != "0+unknown" and torch_loaded == "False"


@pytest.mark.skipif(not FILM.is_file(), reason="shared data not present")
def test_explain_gives_the_decisions_evidence_at_the_films_geometry():
    model = pneumo.load()
    pixels = read_image(FILM)[0]
    a = model.explain(FILM)
    assert a.accepted
    ev = a.evidence
    assert ev.heatmap.shape == pixels.shape
    assert float(ev.heatmap.min()) >= 0.0 and float(ev.heatmap.max()) <= 1.0 and float(ev.heatmap.max()) > 0
    assert ev.target == ("pneumonia" if model.predict(FILM).decision == "PNEUMONIA" else "normal")
