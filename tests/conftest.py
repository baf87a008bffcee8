"""Shared fixtures: the real shared dataset, a small patient-grouped subset of it, and a tiny model
that is genuinely trained on real X-rays (a few seconds), so tests of evaluation, explanation,
inference and the server exercise a real model, not a stub."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.data import PreprocessSpec, Sample, load_dataset, preprocess, read_image, write_manifest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TINY_SPEC = PreprocessSpec(size=64)


def _shared_data() -> Path:
    env = os.environ.get("PNEUMO_DATA")
    candidates = [REPO / "data" / "chest_xray", REPO.parent / "shared" / "data" / "chest_xray"]
    for p in ([Path(env)] if env else []) + candidates:
        if p.is_dir():
            return p
    pytest.fail("the shared dataset is missing: set PNEUMO_DATA or place it at ../shared/data/chest_xray")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared Kermany dataset folder (train/ at 224×224, val/ originals)."""
    return _shared_data()


@pytest.fixture(scope="session")
def dataset(data_root):
    return load_dataset(data_root)


def _bucket(patient: str) -> int:
    return int(hashlib.sha256(patient.encode()).hexdigest(), 16) % 100


def pick_subset(samples: list[Sample], per_class: int, seed: int = 0) -> list[Sample]:
    """Deterministic subset: ``per_class`` images of each label, patients kept whole."""
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for label in (0, 1):
        pool = [s for s in samples if s.label == label]
        order = rng.permutation(len(pool))
        out.extend(pool[i] for i in order[:per_class])
    return out


@pytest.fixture(scope="session")
def small_samples(dataset) -> list[Sample]:
    """96 training images (48 NORMAL, 48 PNEUMONIA) labelled train/val by a patient hash (~25% val)."""
    subset = pick_subset(dataset.select("train"), 48)
    return [
        Sample(s.path, s.label, "val" if _bucket(s.patient_id) < 25 else "train", s.patient_id, s.pathogen,
               s.patient_from_name)
        for s in subset
    ]


@pytest.fixture(scope="session")
def small_manifest(small_samples, tmp_path_factory) -> Path:
    """A CSV manifest of :func:`small_samples` (absolute paths, patient-grouped train/val)."""
    return write_manifest(small_samples, tmp_path_factory.mktemp("manifest") / "small.csv")


@pytest.fixture(scope="session")
def external_dev(data_root) -> Path:
    """The shared ``external_dev`` folder beside the dataset (other hospitals' films, real DICOMs;
    ``labels.csv`` notes the DICOM facts); skipped when this copy of the data has none."""
    root = data_root.parent / "external_dev"
    if not (root / "labels.csv").exists():
        pytest.skip(f"{root} is missing (the shared data's external_dev folder)")
    return root


@pytest.fixture(scope="session")
def val_originals(dataset) -> list[Sample]:
    """The 16 official val images at original resolution."""
    return dataset.select("val")


def _train_tiny(samples: list[Sample], epochs: int = 12, seed: int = 0):
    from pneumo.models import build_model

    torch.manual_seed(seed)
    x = torch.from_numpy(np.stack([preprocess(read_image(s.path)[0], TINY_SPEC) for s in samples]))
    y = torch.tensor([float(s.label) for s in samples])
    model = build_model("tiny_cnn", width=8, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pos_weight = (y == 0).sum() / (y == 1).sum().clamp(min=1)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(16):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_bundle(small_samples, tmp_path_factory) -> Path:
    """A tiny_cnn bundle trained for real on the small subset (64×64 input); threshold by Youden on val."""
    from sklearn.metrics import roc_curve

    from pneumo.bundle import save_bundle

    train = [s for s in small_samples if s.split == "train"]
    val = [s for s in small_samples if s.split == "val"]
    model = _train_tiny(train)
    with torch.inference_mode():
        xv = torch.from_numpy(np.stack([preprocess(read_image(s.path)[0], TINY_SPEC) for s in val]))
        logits = model(xv).numpy()
    yv = np.array([s.label for s in val])
    fpr, tpr, thr = roc_curve(yv, logits)
    best = int(np.argmax(tpr - fpr))
    logit_thr = float(min(thr[best], 1e6))
    path = tmp_path_factory.mktemp("bundles") / "tiny"
    return save_bundle(
        path,
        model,
        architecture={"name": "tiny_cnn", "kwargs": {"width": 8, "depth": 3}},
        spec=TINY_SPEC,
        operating_point={
            "rule": "youden",
            "logit": logit_thr,
            "val_sensitivity": float(tpr[best]),
            "val_specificity": float(1 - fpr[best]),
        },
        training_data={"n_images": len(train)},
        name="tiny-test",
    )


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium under Playwright (never `playwright install`), shared by the browser
    tests; skipped with the reason when /usr/bin/chromium is absent (`make browser` installs it)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
