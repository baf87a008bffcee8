"""``Predictor.predict`` / ``logits_for`` / ``features``: one batch loop over paths, pixel arrays or a mix,
with ``on_error`` raise / skip / record — on the shipped bundle (ONNX + gate + population model) and
its torch backend, real val films from the shared data and a corrupt file written here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.data import read_image
from pneumo.errors import ConfigError, ImageError
from pneumo.inference import Prediction, Predictor, default_bundle_path
from pneumo.inference.predictor import Outcome


@pytest.fixture(scope="module")
def films(data_root) -> list[Path]:
    paths = sorted((data_root / "val" / "NORMAL").glob("*.jpeg"))[:3]
    assert len(paths) == 3, f"{data_root}/val/NORMAL: need 3 films"
    return paths


@pytest.fixture()
def corrupt(tmp_path, films) -> Path:
    """A JPEG cut after its first 300 bytes: sniffed as JPEG, cannot be decoded."""
    path = tmp_path / "corrupt.jpeg"
    path.write_bytes(films[0].read_bytes()[:300])
    return path


@pytest.fixture(scope="module", params=["onnx", "torch"])
def predictor(request) -> Predictor:
    p = Predictor(default_bundle_path(), backend=request.param)
    assert p.backend == request.param and p.gate is not None and p.ood_detector is not None
    return p


def test_path_and_its_pixels_agree_and_record_keeps_the_corrupt_file(predictor, films, corrupt):
    # the batch loop reads a path for the model input only: DCT-scaled, as read_image(target=size) does
    items = [films[0], read_image(films[0], target=predictor.spec.size)[0], corrupt]
    out = predictor.predict(items, on_error="record")
    assert [type(o) for o in out] == [Outcome] * 3
    assert [o.path for o in out] == [str(films[0]), None, str(corrupt)]
    a, b, bad = out
    assert a.ok and b.ok and not bad.ok
    np.testing.assert_allclose(a.prediction.logit, b.prediction.logit, atol=1e-6)
    assert a.logit == a.prediction.logit
    assert a.prediction.decision == b.prediction.decision and a.prediction.ood == b.prediction.ood
    assert a.prediction.probability == pytest.approx(b.prediction.probability, abs=1e-6)
    assert a.prediction.population_score == pytest.approx(b.prediction.population_score, rel=1e-5)
    assert isinstance(bad.error, ImageError) and bad.prediction is None and bad.logit is None
    assert bad.message == str(bad.error) and str(corrupt) in bad.message and "damaged" in bad.message


def test_skip_drops_and_raise_names_the_first_unreadable_file(predictor, films, corrupt, tmp_path):
    items = [films[0], read_image(films[0])[0], corrupt]
    recorded = predictor.predict(items, on_error="record")
    skipped = predictor.predict(items, on_error="skip")
    assert [type(p) for p in skipped] == [Prediction] * 2
    assert skipped == [recorded[0].prediction, recorded[1].prediction]
    with pytest.raises(ImageError, match=re.escape(str(corrupt))):
        predictor.predict(items)
    missing = tmp_path / "missing.jpeg"
    with pytest.raises(ImageError, match=re.escape(f"{missing}: no such file")):
        predictor.predict([films[0], missing, corrupt], on_error="raise")


def test_logits_only_is_the_same_loop(predictor, films, corrupt):
    items = [films[0], read_image(films[1])[0], corrupt, films[2]]
    preds = predictor.predict(items, on_error="record")
    logits = predictor.logits_for(items, on_error="record")
    assert [o.path for o in logits] == [o.path for o in preds]
    assert [o.ok for o in logits] == [True, True, False, True]
    assert all(o.prediction is None for o in logits)
    assert logits[2].message == preds[2].message
    expected = np.array([o.prediction.logit for o in preds if o.ok], dtype=np.float32)
    got = predictor.logits_for(items, on_error="skip")
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose([o.logit for o in logits if o.ok], expected, atol=1e-6)
    with pytest.raises(ImageError, match=re.escape(str(corrupt))):
        predictor.logits_for(items)
    np.testing.assert_allclose(predictor.logits_for(films), [p.logit for p in predictor.predict(films)], atol=1e-6)


def test_batches_keep_order_and_answers(predictor, films, corrupt):
    items = [films[0], corrupt, films[1], read_image(films[2])[0], corrupt]
    whole = predictor.predict(items, on_error="record", batch_size=32)
    for size in (1, 2):
        part = predictor.predict(items, on_error="record", batch_size=size)
        assert [o.path for o in part] == [o.path for o in whole] and [o.ok for o in part] == [o.ok for o in whole]
        for x, y in zip(part, whole, strict=True):
            if x.ok:
                assert x.prediction.logit == pytest.approx(y.prediction.logit, abs=1e-5)
                assert x.prediction.decision == y.prediction.decision


def test_shorthands_and_arguments(predictor, films):
    assert predictor.predict(films[0]) == predictor.predict([films[0]])  # one item, not its characters
    assert predictor.predict([]) == [] and predictor.logits_for([]).shape == (0,)
    with pytest.raises(ConfigError, match="on_error"):
        predictor.predict(films, on_error="ignore")
    with pytest.raises(ConfigError, match="batch_size"):
        predictor.predict(films, batch_size=0)
    with pytest.raises(ConfigError, match="2-D grayscale"):
        predictor.predict([np.zeros((3, 8, 8), np.float32)])
    out = predictor.predict([np.zeros((3, 8, 8), np.float32), films[0]], on_error="record")
    assert isinstance(out[0].error, ConfigError) and out[0].path is None and out[1].ok


def test_features_match_logits_and_the_models_embedding(films):
    p = Predictor(default_bundle_path(), backend="torch", ood=False)
    feats = p.features(films, batch_size=2)
    assert feats.embeddings.shape[0] == feats.image_stats.shape[0] == 3
    np.testing.assert_allclose(feats.logits, p.logits_for(films, batch_size=2), atol=1e-6)
    from pneumo.data import preprocess

    x = torch.from_numpy(np.stack([preprocess(read_image(f, target=p.spec.size)[0], p.spec) for f in films]))
    with torch.inference_mode():
        emb = p.bundle.model.embed(x).numpy()
    np.testing.assert_allclose(feats.embeddings, emb, atol=1e-5)
    with pytest.raises(ImageError):
        p.features([films[0], Path("/no/such/film.jpeg")])
