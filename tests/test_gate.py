"""The two-level gate on real images: the shipped chest-X-ray gate (question 1) refuses what is not a
frontal chest film (package images, rotated and squashed films, blanks, noise) and accepts unseen X-rays;
the population answer (question 2) travels through Predictor, CLI, API and audit log.
Held-out-source figures come from benchmarks/gate.py (docs/inference.md)."""

from __future__ import annotations

import csv
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from pneumo.bundle import read_meta
from pneumo.cli import main as cli
from pneumo.data import read_image, write_manifest
from pneumo.data.discover import Sample
from pneumo.errors import ConfigError
from pneumo.inference import NOT_A_CXR, ChestGate, Predictor, fit_gate, fit_ood
from pneumo.inference.gate import copy_gate
from pneumo.inference.gate_corpus import package_items
from pneumo.inference.gate_features import geometry_reason
from pneumo.server import ServerSettings, create_app

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "default"
EXTERNAL = REPO.parent / "shared" / "data" / "external_dev"


def squashed(pixels: np.ndarray, w: int, h: int) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


@pytest.fixture(scope="module")
def shipped_gate() -> ChestGate:
    gate = ChestGate.load(SHIPPED)
    assert gate is not None, "models/default has no chest-X-ray gate: run `pneumo gate fit models/default`"
    return gate


@pytest.fixture(scope="module")
def gated_bundle(tiny_bundle, small_samples, tmp_path_factory) -> Path:
    """The tiny model with its own population (OOD) statistics and the shipped, model-independent gate."""
    path = tmp_path_factory.mktemp("gated") / "tiny"
    shutil.copytree(tiny_bundle, path)
    fit_ood(path, [s for s in small_samples if s.split == "train"], [s for s in small_samples if s.split == "val"])
    copy_gate(SHIPPED, path)
    return path


def test_geometry_rule():
    assert geometry_reason(32, 10000) and geometry_reason(4000, 48) and geometry_reason(63, 63)
    assert geometry_reason(1000, 3100) and not geometry_reason(1000, 2900) and not geometry_reason(224, 224)


def test_shipped_gate_accepts_unseen_xrays_refuses_rotated(shipped_gate, val_originals):
    originals = [read_image(s.path)[0] for s in val_originals]
    assert all(shipped_gate.check(p)[1] is None for p in originals), "an official val X-ray was refused"
    for k in (1, 2, 3):
        refused = [shipped_gate.check(np.ascontiguousarray(np.rot90(p, k)))[1] is not None for p in originals]
        assert all(refused), f"a film rotated {90 * k}° passed the gate"
    assert all(shipped_gate.check(np.ascontiguousarray(p[::-1]))[1] for p in originals)
    for p in originals[:3]:
        for w, h in ((10000, 32), (48, 4000)):
            score, why = shipped_gate.check(squashed(p, w, h))
            assert score == 1.0 and "px" in why


def test_shipped_gate_refuses_package_images_blanks_noise(shipped_gate):
    items = package_items()
    assert len(items) >= 60  # scikit-image and pydicom really shipped their images
    rng = np.random.default_rng(1)
    extra = [np.zeros((512, 512), np.float32), np.ones((300, 400), np.float32),
             rng.random((500, 500)).astype(np.float32)]
    passed = [f"{i.source}:{i.name}" for i in items if shipped_gate.check(i.pixels)[1] is None]
    assert len(passed) <= 0.02 * len(items), passed
    assert all(shipped_gate.check(p)[1] for p in extra)


@pytest.mark.slow
def test_shipped_gate_on_external_dev(shipped_gate):
    """These images were used to fit the shipped gate: a regression check, not a held-out figure."""
    if not (EXTERNAL / "labels.csv").is_file():
        pytest.skip(f"external development images not present at {EXTERNAL}")
    with (EXTERNAL / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    chest, other = [], []
    for r in rows:
        try:
            px = read_image(EXTERNAL / r["path"])[0]
        except Exception:
            continue
        (chest if r["set"] == "cxr_other" else other).append(shipped_gate.check(px)[1] is None)
    assert len(chest) >= 150 and np.mean(chest) >= 0.97
    assert len(other) >= 60 and np.mean(other) <= 0.03


def test_predictor_two_answers(gated_bundle, val_originals):
    pred = Predictor(gated_bundle, backend="torch")
    assert pred.gate is not None and pred.refusal_threshold == pred.gate.threshold
    xr = [read_image(s.path)[0] for s in val_originals[:6]]
    res = pred.predict(xr + [squashed(xr[0], 10000, 32), np.ascontiguousarray(np.rot90(xr[1], 2))])
    thr = pred.ood_detector.threshold
    for r in res[:6]:
        assert not r.ood and r.decision in ("NORMAL", "PNEUMONIA") and r.reason is None
        assert r.population == ("atypical" if r.population_score > thr else "typical")
    for r in res[6:]:
        assert r.ood and r.decision == NOT_A_CXR and r.population is None and r.reason
    # without checks the geometry rule and the gate are off, and no population is given
    bare = Predictor(gated_bundle, backend="torch", ood=False).predict([squashed(xr[0], 10000, 32)])[0]
    assert not bare.ood and bare.population is None


def test_api_audit_and_csv_carry_population(gated_bundle, val_originals, tmp_path):
    app = create_app(gated_bundle, ServerSettings(audit_db=str(tmp_path / "a.sqlite")))
    film = val_originals[0].path.read_bytes()
    with TestClient(app, base_url="http://localhost") as client:
        good = client.post("/api/v1/predict", files={"file": ("x.jpeg", film, "image/jpeg")}).json()
        info = client.get("/api/v1/model").json()
    assert good["label"] in ("NORMAL", "PNEUMONIA") and good["ood"]["flag"] is False
    pop = good["population"]
    assert pop["available"] and pop["value"] in ("typical", "atypical") and pop["threshold"] > 0
    assert (pop["value"] == "atypical") == any("outside the population" in w for w in good["warnings"])
    assert info["gate"]["fitted"] and info["gate"]["threshold"] == good["ood"]["threshold"]
    with sqlite3.connect(tmp_path / "a.sqlite") as db:
        (stored,) = db.execute("SELECT population FROM predictions WHERE request_id = ?",
                               (good["request_id"],)).fetchone()
    assert stored == pop["value"]
    out = tmp_path / "rows.csv"
    r = CliRunner().invoke(cli, ["predict", str(gated_bundle), str(val_originals[0].path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    row = next(csv.DictReader(out.open()))
    assert row["population"] == pop["value"] and row["decision"] == good["label"]


@pytest.mark.slow
def test_fit_gate_into_a_bundle(tiny_bundle, small_samples, tmp_path, monkeypatch):
    """fit_gate on a small real set (no external folder): writes the file and block, refuses rotations."""
    monkeypatch.delenv("PNEUMO_EXTERNAL", raising=False)
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    all_train = [Sample(s.path, s.label, "train", s.patient_id, s.pathogen, s.patient_from_name) for s in small_samples]
    manifest = write_manifest(all_train, tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="threshold"):
        fit_gate(bundle, manifest, threshold=1.0)
    block = fit_gate(bundle, manifest, external=None, classifier="lr", n_chest=60)
    assert read_meta(bundle)["gate"] == block and block["external"]["used"] is False
    assert block["held_out"]["n"] >= 10 and block["held_out"]["accept_rate"] >= 0.9
    gate = ChestGate.load(bundle)
    film = read_image(small_samples[0].path)[0]
    assert gate.check(film)[1] is None and gate.check(np.ascontiguousarray(np.rot90(film)))[1]
