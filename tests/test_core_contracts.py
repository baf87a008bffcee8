"""The contracts every piece relies on: one image path, bundles that round-trip exactly."""

from __future__ import annotations

import numpy as np
import torch

from pneumo.bundle import load_bundle
from pneumo.data import PreprocessSpec, preprocess, read_image
from pneumo.inference import Predictor


def test_read_image_convention_on_real_xray(val_originals):
    pixels, meta = read_image(val_originals[0].path)
    assert pixels.dtype == np.float32 and pixels.ndim == 2
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert (meta.height, meta.width) == pixels.shape
    assert max(pixels.shape) > 224  # originals keep their geometry


def test_preprocess_shape_and_normalisation(val_originals):
    pixels, _ = read_image(val_originals[0].path)
    spec = PreprocessSpec(size=96, normalise="zscore", mean=0.5, std=0.25)
    x = preprocess(pixels, spec)
    assert x.shape == (1, 96, 96) and x.dtype == np.float32
    unit = preprocess(pixels, PreprocessSpec(size=96, normalise="unit"))
    np.testing.assert_allclose(x, (unit - 0.5) / 0.25, atol=1e-5)


def test_tiny_bundle_is_trained_and_round_trips(tiny_bundle, small_samples):
    bundle = load_bundle(tiny_bundle)
    val = [s for s in small_samples if s.split == "val"]
    predictor = Predictor(bundle, backend="torch")
    logits = predictor.logits_for([s.path for s in val])
    labels = np.array([s.label for s in val])
    # a trained model separates the classes better than chance on held-out patients
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, logits) > 0.7
    again = load_bundle(tiny_bundle)
    x = torch.randn(3, 1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(bundle.model(x), again.model(x))
