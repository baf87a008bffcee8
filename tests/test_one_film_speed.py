"""Issue 26, one film's speed: a JPEG read for the model input only is DCT-scaled by libjpeg
(``read_image(target=...)``), in the one path that training's cache and the Predictor share.

Speed itself is measured in ``benchmarks/one_film.py`` (ratios, never asserted here); these tests hold
what must not change: training tensors, the original geometry in the metadata, the shipped model's
decisions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import pneumo
from pneumo.data import PreprocessSpec, preprocess, read_image
from pneumo.inference.predictor import as_pixels
from pneumo.training.cache import load_or_decode, normalise_batch

SPEC = PreprocessSpec(size=224)


def test_training_tensors_are_bit_identical_and_equal_to_serving(small_samples):
    """The shared training images are 224²: no DCT scaling happens, the cache is what it was, and the
    tensors training feeds equal what serving feeds for the same file."""
    train = [s for s in small_samples if s.split == "train"][:12]
    cached, _ = load_or_decode(train, SPEC, None, workers=1, progress=False)
    for i, s in enumerate(train):
        full, reduced = read_image(s.path)[0], read_image(s.path, target=SPEC.size)[0]
        assert full.shape == (224, 224)
        np.testing.assert_array_equal(reduced, full)
        np.testing.assert_array_equal(cached[i, 0].numpy(), np.rint(full * 255.0).astype(np.uint8))
        serving = torch.from_numpy(preprocess(as_pixels(s.path, target=SPEC.size), SPEC))
        torch.testing.assert_close(normalise_batch(cached[i : i + 1], SPEC)[0], serving, rtol=0, atol=0)


def test_training_cache_and_predictor_read_a_large_film_alike(val_originals):
    """A full-size original: the cache and the Predictor read the same reduced pixels."""
    from pneumo.data.preprocess import resize_image
    from pneumo.training.cache import _decode

    path = val_originals[0].path
    arr, sha = _decode((str(path), SPEC.size, SPEC.resize))
    pixels, meta = read_image(path, target=SPEC.size)
    assert sha == meta.sha256
    np.testing.assert_array_equal(arr, np.clip(np.rint(resize_image(as_pixels(path, target=SPEC.size), 224) * 255),
                                               0, 255).astype(np.uint8))
    assert pixels.shape[0] < meta.height and pixels.shape[1] < meta.width


def _jpeg(w: int, h: int, orientation: int | None = None, mode: str = "L") -> bytes:
    rng = np.random.default_rng(0)
    arr = (rng.random((h, w)) * 255).astype(np.uint8)
    im = Image.fromarray(arr).convert(mode)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(("orientation", "upright"), [(None, (1200, 800)), (6, (800, 1200)), (8, (800, 1200))])
def test_reduced_read_reports_the_original_upright_size(orientation, upright):
    data = _jpeg(1200, 800, orientation)
    full, meta_full = read_image(data)
    small, meta = read_image(data, target=200)  # 1200×800 → ÷4 → 300×200
    assert (meta.width, meta.height) == upright == (meta_full.width, meta_full.height)
    assert small.shape == (upright[1] // 4, upright[0] // 4) and full.shape == (upright[1], upright[0])
    assert meta.sha256 == meta_full.sha256


def test_reduced_read_never_goes_below_the_target_and_leaves_other_formats_alone():
    small, _ = read_image(_jpeg(500, 450), target=224)  # ÷2 = 250×225: still ≥ 224 a side
    assert small.shape == (225, 250)
    small, _ = read_image(_jpeg(440, 450), target=224)  # ÷2 would give 220: full size
    assert small.shape == (450, 440)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((900, 900), np.uint8)).save(buf, "PNG")
    assert read_image(buf.getvalue(), target=224)[0].shape == (900, 900)


def test_colour_jpeg_reduced_read_keeps_pillows_grey_conversion():
    data = _jpeg(900, 900, mode="RGB")
    small, meta = read_image(data, target=224)
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (224, 224))
    np.testing.assert_array_equal(small, np.asarray(im.convert("L"), np.float32) / 255.0)
    assert meta.mode == "RGB" and (meta.width, meta.height) == (900, 900)


@pytest.mark.slow
def test_shipped_model_decides_the_same_on_val_originals(val_originals):
    """Full decode vs DCT-scaled decode of the 16 official val originals through the shipped model."""
    model = pneumo.load()
    size = model.predictor.spec.size
    full = model.predictor.predict([read_image(s.path)[0] for s in val_originals])
    reduced = model.predictor.predict([read_image(s.path, target=size)[0] for s in val_originals])
    paths = model.predictor.predict([s.path for s in val_originals])
    assert [p.decision for p in full] == [p.decision for p in reduced]
    assert [p.reason for p in full] == [p.reason for p in reduced]
    assert max(abs(a.logit - b.logit) for a, b in zip(full, reduced, strict=True)) < 0.1
    assert [p.logit for p in paths] == [p.logit for p in reduced]  # a path is read reduced by the batch loop
