"""Training's torch twin of the intensity step (training.cache.normalise_batch / equalise_batch) gives
what serving's numpy preprocess gives, with and without histogram equalisation (the equalisation twin
was untested)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumo.data import PreprocessSpec, preprocess, read_image
from pneumo.data.preprocess import equalise_hist, normalise
from pneumo.training.cache import equalise_batch, load_or_decode, normalise_batch


def test_equalise_batch_equals_equalise_hist_per_image():
    rng = np.random.default_rng(0)
    batch = np.stack([rng.integers(0, 256, (48, 48)), np.full((48, 48), 7),  # a flat image: one bin
                      np.tile(np.arange(48), (48, 1)) * 5]).astype(np.uint8)
    x = torch.from_numpy(batch).float().div_(255.0).unsqueeze(1)
    got = equalise_batch(x)[:, 0].numpy()
    want = np.stack([equalise_hist(b.astype(np.float32) / np.float32(255.0)) for b in batch])
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("equalise", [False, True])
@pytest.mark.parametrize("norm", ["unit", "zscore"])
def test_normalise_batch_equals_preprocess_on_real_films(small_samples, equalise, norm):
    spec = PreprocessSpec(size=224, normalise=norm, equalise=equalise)  # train images are 224²: no resize
    films = small_samples[:4]
    cached, _ = load_or_decode(films, spec, None, workers=1, progress=False)
    got = normalise_batch(cached, spec)
    for i, s in enumerate(films):
        want = preprocess(read_image(s.path)[0], spec)
        np.testing.assert_allclose(got[i].numpy(), want, atol=1e-5)
        np.testing.assert_allclose(got[i, 0].numpy(), normalise(cached[i, 0].numpy() / np.float32(255.0), spec),
                                   atol=1e-5)
