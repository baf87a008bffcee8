"""OOD detector on the genuinely trained tiny bundle: accepts its validation X-rays by construction,
refuses real non-X-ray images that ship inside installed packages (scikit-image, pydicom), blanks and noise."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumo.bundle import load_bundle, read_meta
from pneumo.data import read_image
from pneumo.errors import ConfigError, ImageError
from pneumo.inference import OODDetector, Predictor, fit_ood

DICOM_SAMPLES = ("CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "rtdose_1frame.dcm", "JPEG2000.dcm")


def non_xray_images() -> dict[str, np.ndarray]:
    """Photos, documents, microscopy, CT/MR slices (files shipped in the wheels: no download), blanks, noise."""
    import pydicom
    import skimage

    files = sorted(p for p in (Path(skimage.__file__).parent / "data").iterdir() if p.suffix in (".png", ".jpg"))
    files += [Path(pydicom.__file__).parent / "data" / "test_files" / n for n in DICOM_SAMPLES]
    out = {}
    for f in files:
        try:
            out[f.name] = read_image(f)[0]
        except ImageError:
            continue
    rng = np.random.default_rng(0)
    out |= {
        "blank_black": np.zeros((300, 300), np.float32),
        "blank_white": np.ones((300, 300), np.float32),
        "blank_grey": np.full((300, 300), 0.5, np.float32),
        "noise_uniform": rng.random((300, 300)).astype(np.float32),
        "noise_gauss": np.clip(rng.normal(0.5, 0.2, (300, 300)), 0, 1).astype(np.float32),
    }
    return out


@pytest.fixture(scope="module")
def ood_bundle(tiny_bundle, small_samples, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ood") / "tiny"
    shutil.copytree(tiny_bundle, path)
    train = [s for s in small_samples if s.split == "train"]
    val = [s for s in small_samples if s.split == "val"]
    fit_ood(path, train, val)
    return path


def test_fit_records_block_and_threshold_accepts_val(ood_bundle, small_samples):
    block = read_meta(ood_bundle)["ood"]
    n_train = sum(s.split == "train" for s in small_samples)
    assert block["fitted"] and block["n_fit"] == n_train and block["feature_dim"] == 32
    assert block["accept_rate_val"] >= 0.99
    det = OODDetector.load(ood_bundle)
    assert det is not None and det.threshold == pytest.approx(block["threshold"])
    assert (ood_bundle / "ood.safetensors").exists()


def test_refuses_non_xrays_accepts_unseen_xrays(ood_bundle, val_originals):
    pred = Predictor(ood_bundle, backend="torch")
    foreign = non_xray_images()
    assert len(foreign) >= 25  # the shipped images really loaded
    res = dict(zip(foreign, pred.predict(list(foreign.values())), strict=True))
    refused = [k for k, r in res.items() if r.ood]
    assert all(r.decision == "NOT_A_CHEST_XRAY" for r in res.values() if r.ood)
    assert len(refused) / len(res) >= 0.8, f"refused only {refused}"
    for name in ("page.png", "CT_small.dcm", "MR_small.dcm", "blank_black", "noise_uniform"):
        assert res[name].ood, name
    xr = pred.predict([read_image(s.path)[0] for s in val_originals])
    accepted = np.mean([not r.ood for r in xr])
    assert accepted >= 0.75, f"accepted only {accepted:.0%} of the 16 unseen val originals"


def test_embedding_only_score_is_never_stricter(ood_bundle, val_originals):
    bundle = load_bundle(ood_bundle)
    det = OODDetector.load(bundle)
    import torch

    from pneumo.data import preprocess

    pix = [read_image(s.path)[0] for s in val_originals[:4]] + [np.zeros((64, 64), np.float32)]
    with torch.inference_mode():
        emb = bundle.model.embed(torch.from_numpy(np.stack([preprocess(p, bundle.spec) for p in pix]))).numpy()
    assert np.all(det.score(emb) <= det.score_pixels(emb, pix) + 1e-9)


def test_no_detector_and_bad_arguments(tiny_bundle, small_samples):
    assert OODDetector.load(tiny_bundle) is None
    assert Predictor(tiny_bundle, backend="torch").predict([np.zeros((64, 64), np.float32)])[0].ood_score is None
    with pytest.raises(ConfigError, match="accept_rate"):
        fit_ood(tiny_bundle, small_samples, small_samples, accept_rate=1.0)
