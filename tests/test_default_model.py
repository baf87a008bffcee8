"""The shipped model in ``models/default/``: complete, small, consistent across backends, and still
separating the classes on the 16 official val originals it was never selected on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.bundle import load_bundle, sha256_file
from pneumo.data import read_image
from pneumo.inference import Predictor, default_bundle_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"


def test_default_bundle_is_complete_and_small():
    assert default_bundle_path().resolve() == DEFAULT.resolve()
    total = sum(p.stat().st_size for p in DEFAULT.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024, f"models/default is {total / 2**20:.1f} MiB, over 20 MiB"
    meta = json.loads((DEFAULT / "pneumo.json").read_text())
    for key in ("operating_point", "thresholds", "temperature", "training_data", "validation_metrics", "ood", "onnx"):
        assert key in meta, key
    op = meta["operating_point"]
    assert {"rule", "logit", "val_sensitivity", "val_specificity"} <= set(op)
    assert meta["weights_sha256"] == sha256_file(DEFAULT / "model.safetensors")
    assert (DEFAULT / "MODEL_CARD.md").read_text().count("##") >= 5


def test_default_onnx_matches_torch_on_real_xrays(val_originals):
    bundle = load_bundle(DEFAULT)
    paths = [s.path for s in val_originals]
    onnx = Predictor(bundle, backend="onnx").logits_for(paths)
    torch_ = Predictor(bundle, backend="torch").logits_for(paths)
    p_onnx, p_torch = (Predictor(bundle, backend="torch").probabilities(x) for x in (onnx, torch_))
    assert np.max(np.abs(p_onnx - p_torch)) <= 1e-4


def test_default_model_separates_the_official_val_originals(val_originals):
    """A floor, not a result: the 16 originals were never used for selection or thresholds."""
    predictor = Predictor(default_bundle_path())
    labels = np.array([s.label for s in val_originals])
    logits = predictor.logits_for([s.path for s in val_originals])
    assert roc_auc_score(labels, logits) >= 0.9
    preds = [predictor.predict([read_image(s.path)[0]])[0] for s in val_originals]
    assert not any(p.ood for p in preds), "a real chest X-ray was refused as out-of-distribution"


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_default_model_refuses_non_xrays(kind):
    rng = np.random.default_rng(0)
    pixels = rng.random((480, 640), dtype=np.float32) if kind == "noise" else np.full((480, 640), 0.5, np.float32)
    pred = Predictor(default_bundle_path()).predict([pixels])[0]
    assert pred.ood
