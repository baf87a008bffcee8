"""Patient-grouped K-fold CV (``pneumo train --cv K``) and the sharpness / resolution augmentation."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pneumo.data import load_dataset, write_manifest
from pneumo.errors import ConfigError
from pneumo.training.augment import (
    AugmentSpec,
    augment_batch,
    gaussian_blur,
    resolution_jitter,
    sharpness_jitter,
)
from pneumo.training.config import load_config
from pneumo.workflows.cv import HOLDOUT, fold_manifests, pool

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def train_manifest(small_samples, tmp_path_factory) -> Path:
    """The small subset, every row labelled ``train`` (what CV splits)."""
    rows = [replace(s, split="train") for s in small_samples]
    return write_manifest(rows, tmp_path_factory.mktemp("cv") / "all_train.csv")


def test_fold_manifests_hold_each_patient_out_exactly_once(train_manifest, tmp_path):
    samples = load_dataset(train_manifest).select("train")
    paths = fold_manifests(samples, k=3, val_fraction=0.25, seed=0, out=tmp_path)
    held_paths: list[str] = []
    for p in paths:
        index = load_dataset(p)
        held = index.select(HOLDOUT)
        fit = index.select("train") + index.select("val")
        assert index.select("train") and index.select("val") and held
        assert {s.patient_id for s in held}.isdisjoint({s.patient_id for s in fit})  # no patient leaks
        assert {s.patient_id for s in index.select("train")}.isdisjoint({s.patient_id for s in index.select("val")})
        assert len(held) + len(fit) == len(samples)
        held_paths += [str(s.path) for s in held]
    assert sorted(held_paths) == sorted(str(s.path.resolve()) for s in samples)


def test_pool_centres_each_fold_on_its_threshold():
    folds = [{"y": np.array([0, 1]), "logit": np.array([0.5, 2.0]), "group": ["a", "b"], "threshold_logit": 1.0},
             {"y": np.array([0, 1]), "logit": np.array([-3.0, -1.0]), "group": ["c", "d"], "threshold_logit": -2.0}]
    p = pool(folds)
    assert p["logit"].tolist() == [-0.5, 1.0, -1.0, 1.0]
    assert ((p["logit"] >= 0) == np.array([False, True, False, True])).all()
    assert p["fold"].tolist() == [0, 0, 1, 1]


@pytest.mark.slow
def test_train_cv_cli_end_to_end(train_manifest, tmp_path):
    from pneumo.cli.train import train as train_cmd

    out = tmp_path / "cv"
    args = ["--config", str(TINY), "--data", str(train_manifest), "--out", str(out), "--cv", "2", "--json",
            "train.epochs=1", f"data.cache_dir={tmp_path / 'cache'}"]
    result = CliRunner().invoke(train_cmd, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert report["k"] == 2 and len(report["folds"]) == 2
    assert report["pooled"]["n_images"] == 96 == sum(f["n_images"] for f in report["folds"])
    for f in report["folds"]:
        auroc = f["auroc"]
        assert 0.0 <= auroc["value"] <= 1.0 and auroc["lo"] <= auroc["value"] <= auroc["hi"]
        meta = json.loads((out / f"fold{f['fold']}" / "run" / "bundle" / "pneumo.json").read_text())
        assert f["threshold_logit"] == pytest.approx(meta["operating_point"]["logit"])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # every fold decoded from one shared cache
    with (out / "oof.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 96 and len({r["path"] for r in rows}) == 96
    stamp = (out / "fold0" / "run" / "bundle" / "model.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(train_cmd, args)  # finished folds are reused, not retrained
    assert again.exit_code == 0, again.output
    assert (out / "fold0" / "run" / "bundle" / "model.safetensors").stat().st_mtime_ns == stamp


def _images(n: int = 4, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g)


def _high_freq(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))


def test_gaussian_blur_sigma_zero_is_identity_and_blur_smooths():
    x = _images()
    y = gaussian_blur(x, torch.tensor([0.0, 0.5, 1.0, 2.0]))
    assert torch.allclose(y[0], x[0], atol=1e-6)
    hf = _high_freq(y)
    assert (hf[1:] < hf[:-1]).all() and torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-2)


def test_sharpness_jitter_blurs_or_sharpens_and_stays_in_range():
    x = gaussian_blur(_images(8), torch.full((8,), 1.0))  # smooth input, so sharpening has room
    blur = sharpness_jitter(x, AugmentSpec(blur_sigma=2.0, degrade_prob=1.0), torch.Generator().manual_seed(1))
    sharp = sharpness_jitter(x, AugmentSpec(sharpen=2.0, degrade_prob=1.0), torch.Generator().manual_seed(1))
    assert (_high_freq(blur) <= _high_freq(x) + 1e-6).all() and (_high_freq(sharp) >= _high_freq(x) - 1e-6).all()
    assert _high_freq(sharp).mean() > _high_freq(x).mean() > _high_freq(blur).mean()
    assert sharp.min() >= 0 and sharp.max() <= 1
    assert torch.equal(sharpness_jitter(x, AugmentSpec(blur_sigma=2.0, degrade_prob=0.0)), x)


def test_resolution_jitter_loses_detail_keeps_shape():
    x = _images(6)
    y = resolution_jitter(x, AugmentSpec(downscale=0.3, degrade_prob=1.0), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert (_high_freq(y) < _high_freq(x)).all()
    assert torch.equal(resolution_jitter(x, AugmentSpec(downscale=0.3, degrade_prob=0.0)), x)
    out = augment_batch(x, AugmentSpec(blur_sigma=1.0, sharpen=1.0, downscale=0.5), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_degradation_keys_are_configurable_and_checked():
    cfg = load_config(TINY, ["augment.blur_sigma=1.5", "augment.sharpen=1", "augment.downscale=0.5"])
    spec = AugmentSpec.from_config(cfg.augment)
    assert (spec.blur_sigma, spec.sharpen, spec.downscale, spec.degrade_prob) == (1.5, 1.0, 0.5, 0.5)
    for bad in ("augment.downscale=1.5", "augment.blur_sigma=-1", "augment.degrade_prob=2"):
        with pytest.raises(ConfigError):
            load_config(TINY, [bad])


def test_aspect_jitter_changes_the_axes_independently():
    from pneumo.training.augment import affine_matrices

    spec = AugmentSpec(rotate_deg=0, translate=0, scale=0, shear=0, aspect=0.3)
    theta = affine_matrices(64, spec, torch.Generator().manual_seed(0))
    sx, sy = theta[:, 0, 0], theta[:, 1, 1]
    assert torch.allclose(sx * sy, torch.ones(64), atol=1e-5)  # area kept, ratio varies
    assert (sx / sy).log().abs().max() <= 0.3 + 1e-5 and (sx / sy).log().std() > 0.05
    assert torch.equal(affine_matrices(4, AugmentSpec(rotate_deg=0, translate=0, scale=0, shear=0))[:, :, :2],
                       torch.eye(2).repeat(4, 1, 1))


@pytest.mark.slow
def test_recipe_cv_thresholds_each_fold_by_the_recipes_rule(train_manifest, tmp_path):
    from pneumo.workflows.cv import cross_validate

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: tiny-recipe\nmembers:\n  - {{name: a, config: {TINY}}}\nmirror: true\n"
                      "threshold: {rule: sensitivity_under_shift, target_sensitivity: 0.9}\n")
    report = cross_validate(recipe, data=train_manifest, out=tmp_path / "cv", k=2, progress=False,
                            overrides=["train.epochs=1", f"data.cache_dir={tmp_path / 'cache'}"], n_boot=50)
    assert report["recipe_rule"] == "sensitivity_under_shift"  # the recipe's, not its member config's
    for f in report["folds"]:
        meta = json.loads((tmp_path / "cv" / f"fold{f['fold']}" / "bundle" / "pneumo.json").read_text())
        assert meta["operating_point"]["rule"] == "sensitivity_under_shift"
        assert meta["architecture"]["kwargs"]["mirror"] is True
        assert f["threshold_logit"] == pytest.approx(meta["operating_point"]["logit"])
