"""The two training options aimed at the acquisition shortcut of the shared training copies (NORMAL
copies hold more fine detail): class-conditional blur of NORMALs, and sampling weights under which a
detail score stops predicting the label. Real training images, not synthetic ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pneumo.data import read_image
from pneumo.data.preprocess import resize_image
from pneumo.training.augment import AugmentSpec, augment_batch
from pneumo.training.datamodule import XrayDataModule, acquisition_weights, detail_score


@pytest.fixture(scope="module")
def batch(dataset):
    """96 NORMAL + 96 PNEUMONIA shared training copies as the cache holds them (uint8 N×1×224×224)."""
    picked = [s for s in dataset.select("train") if s.label == 0][::10][:96]
    picked += [s for s in dataset.select("train") if s.label == 1][::30][:96]
    x = np.stack([np.rint(resize_image(read_image(s.path)[0], 224) * 255).astype(np.uint8) for s in picked])
    return torch.from_numpy(x)[:, None], np.array([s.label for s in picked])


def test_detail_score_carries_the_shortcut_and_the_weights_remove_it(batch):
    x, y = batch
    score = detail_score(x)
    assert roc_auc_score(y, -score) > 0.8  # the cue: PNEUMONIA copies hold less detail
    w = acquisition_weights(score, y, bins=8, cap=1000.0)
    assert roc_auc_score(y, -score, sample_weight=w) < 0.62
    assert w[y == 0].sum() == pytest.approx(0.5) and w[y == 1].sum() == pytest.approx(0.5)
    low_detail_normal = (y == 0) & (score < np.median(score[y == 0]))
    assert w[low_detail_normal].mean() > w[(y == 0) & ~low_detail_normal].mean()  # cue-conflicting films up
    capped = acquisition_weights(score, y, bins=8, cap=2.0)
    for c in (0, 1):  # within a class, weights span at most cap² (each clipped to [1/cap, cap])
        assert capped[y == c].max() / capped[y == c].min() <= 4.0 + 1e-9


def test_acquisition_sampler_draws_by_those_weights(batch):
    x, y = batch
    dm = XrayDataModule(x, torch.from_numpy(y), x[:4], torch.from_numpy(y[:4]), 32, 32, sampler="acquisition")
    weights = dm.train_dataloader().sampler.weights.numpy()
    assert np.allclose(weights, acquisition_weights(detail_score(x), y))


def test_match_blur_softens_only_normal_films(batch):
    x, y = batch
    clean = x.float() / 255
    spec = AugmentSpec(enabled=True, rotate_deg=0, translate=0, scale=0, shear=0, intensity_scale=0,
                       intensity_shift=0, gamma=None, match_blur_prob=1.0, match_blur_sigma=1.5)
    out = augment_batch(clean, spec, torch.Generator().manual_seed(0), y=torch.from_numpy(y).float())
    changed = (out - clean).abs().flatten(1).amax(1) > 1e-6
    assert not changed[y == 1].any() and changed[y == 0].float().mean() > 0.7
    assert torch.equal(augment_batch(clean, spec, torch.Generator().manual_seed(0)), clean)  # no labels: off

    def lap(t):
        return (4 * t[:, :, 1:-1, 1:-1] - t[:, :, :-2, 1:-1] - t[:, :, 2:, 1:-1] - t[:, :, 1:-1, :-2]
                - t[:, :, 1:-1, 2:]).abs().mean((1, 2, 3)).numpy()
    assert roc_auc_score(y, -lap(out)) < roc_auc_score(y, -lap(clean)) - 0.2


def test_match_blur_off_draws_nothing(batch):
    """Off by default and, when off, the augmentation stream is the one earlier models were trained
    with (the shipped member retrains bit for bit)."""
    x, y = batch
    clean = x[:16].float() / 255
    base = AugmentSpec(blur_sigma=2.0, sharpen=1.5, downscale=0.4, degrade_prob=0.8)
    a = augment_batch(clean, base, torch.Generator().manual_seed(3))
    b = augment_batch(clean, base, torch.Generator().manual_seed(3), y=torch.from_numpy(y[:16]).float())
    assert torch.equal(a, b)
