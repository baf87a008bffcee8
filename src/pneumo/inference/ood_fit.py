"""Fitting the out-of-distribution detector of :mod:`pneumo.inference.ood` into a bundle.

Apart from the detector because fitting runs the model through :class:`Predictor`, and the predictor
scores with the detector: detector ← predictor ← fitting, one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from pneumo.bundle import Bundle, atomic_write_bytes, load_bundle, record_derived, sha256_file, update_meta
from pneumo.data.discover import Sample
from pneumo.errors import ConfigError
from pneumo.inference.ood import METHOD, OOD_FILE, Gaussian, OODDetector
from pneumo.inference.predictor import Predictor


def embed_and_stats(
    bundle: Bundle, paths: Sequence[str | Path], batch_size: int = 64, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(N×D embeddings, N×N_IMAGE_STATS)`` for image files, with the torch model (the predictor's loop)."""
    feats = Predictor(bundle, backend="torch", ood=False).features(
        paths, batch_size=batch_size, progress="OOD features" if progress else False)
    return feats.embeddings, feats.image_stats


def fit_ood(
    bundle_dir: str | Path,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    accept_rate: float = 0.99,
    max_fit: int = 2000,
    use_image_stats: bool = True,
    progress: bool = False,
) -> dict:
    """Fit the detector on training X-rays, set the threshold on validation X-rays, save into the bundle.

    Returns the ``ood`` block written to ``pneumo.json``. Fitting uses at most ``max_fit`` training
    images (a deterministic random subset); validation images are only used for the threshold.
    """
    if not 0.5 <= accept_rate < 1.0:
        raise ConfigError(f"accept_rate must be in [0.5, 1), got {accept_rate}")
    if len(train_samples) < 8 or len(val_samples) < 4:
        raise ConfigError(
            f"OOD fitting needs ≥8 training and ≥4 validation images, got {len(train_samples)} and {len(val_samples)}"
        )
    bundle = load_bundle(bundle_dir)
    rng = np.random.default_rng(0)
    train = list(train_samples)
    if len(train) > max_fit:
        train = [train[i] for i in sorted(rng.choice(len(train), max_fit, replace=False))]
    e_tr, s_tr = embed_and_stats(bundle, [s.path for s in train], progress=progress)
    e_va, s_va = embed_and_stats(bundle, [s.path for s in val_samples], progress=progress)
    det = OODDetector(Gaussian.fit(e_tr), Gaussian.fit(s_tr) if use_image_stats else None, 0.0)
    val_scores = det.score(e_va, s_va)
    det.threshold = float(np.quantile(val_scores, accept_rate, method="higher"))
    block = {
        "method": METHOD if use_image_stats else "mahalanobis-ledoitwolf(embedding), median-normalised d2",
        "threshold": det.threshold,
        "accept_rate_target": accept_rate,
        "accept_rate_val": float(np.mean(val_scores <= det.threshold)),
        "n_fit": len(train),
        "n_val": len(val_samples),
        "feature_dim": int(e_tr.shape[1]),
        "image_stats_dim": int(s_tr.shape[1]) if use_image_stats else 0,
        "fitted": True,
    }
    path = Path(bundle_dir)
    atomic_write_bytes(path / OOD_FILE, save(det.tensors()))
    block["sha256"] = sha256_file(path / OOD_FILE)
    update_meta(path, ood=block)
    record_derived(path, OOD_FILE)
    return block
