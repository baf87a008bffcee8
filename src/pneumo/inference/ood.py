"""Out-of-distribution detection: "is this a frontal chest X-ray at all?" before any probability.

Two views of an image, each scored by a Mahalanobis distance to the training X-rays with a
Ledoit–Wolf shrinkage covariance (well conditioned even when D is close to the number of images):

1. **embedding** — the model's penultimate features (``B×D``, ``PneumoNet.logit_and_embedding``): what
   the classifier itself "sees". Strong for large trained networks, weak for tiny ones.
2. **image statistics** — cheap, model-independent appearance features of the ``read_image`` pixels
   (:func:`image_statistics`): an 8×8 thumbnail (every chest film has the same coarse layout: dark
   lungs either side of a bright mediastinum), a 16-bin intensity histogram, saturation fractions,
   edge energy and left–right asymmetry. This catches photos, documents, blanks and noise even when
   the embedding is weak.

Each squared distance is divided by its median over the fitting set, so both are "1 for a typical
training X-ray"; the score is the **max** of the two (an image is foreign if either view says so).
The threshold is the ``accept_rate`` quantile of held-out *validation* X-ray scores, so ≈99% of real
X-rays are accepted by construction. Colour is not used: ``read_image`` returns luminance only.

Stored in ``BUNDLE/ood.safetensors`` (means, precision matrices, scales) plus the ``ood`` block of
``pneumo.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.bundle import Bundle, fitted_tensors
from pneumo.data.preprocess import resize_image

OOD_FILE = "ood.safetensors"
METHOD = "mahalanobis-ledoitwolf(embedding)+mahalanobis-ledoitwolf(image-stats), max of median-normalised d2"
N_IMAGE_STATS = 64 + 16 + 6


def image_statistics(pixels: np.ndarray) -> np.ndarray:
    """``read_image`` pixels (float32 H×W in [0, 1]) → ``N_IMAGE_STATS`` appearance features (float64)."""
    small = resize_image(np.asarray(pixels, dtype=np.float32), 64, "stretch").astype(np.float64)
    thumb = small.reshape(8, 8, 8, 8).mean(axis=(1, 3)).ravel()
    hist = np.histogram(np.clip(small, 0, 1), bins=16, range=(0.0, 1.0))[0] / small.size
    gy, gx = np.gradient(small)
    extra = [
        small.mean(),
        small.std(),
        float((small <= 0.02).mean()),
        float((small >= 0.98).mean()),
        float(np.hypot(gx, gy).mean()),
        float(np.abs(small - small[:, ::-1]).mean()),
    ]
    return np.concatenate([thumb, hist, extra])


@dataclass
class Gaussian:
    """Mean, shrunk precision and a median-d² scale for one feature view."""

    mean: np.ndarray
    precision: np.ndarray
    scale: float

    @classmethod
    def fit(cls, x: np.ndarray) -> Gaussian:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(x)
        g = cls(lw.location_, lw.precision_, 1.0)
        g.scale = float(np.median(g.d2(x))) or 1.0
        return g

    def d2(self, x: np.ndarray) -> np.ndarray:
        diff = np.asarray(x, dtype=np.float64) - self.mean
        return np.einsum("ij,jk,ik->i", diff, self.precision, diff)

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.d2(x) / self.scale


class OODDetector:
    """Scores images by distance to the training X-rays; ``score > threshold`` → not a chest X-ray."""

    def __init__(self, embedding: Gaussian, image: Gaussian | None, threshold: float, meta: dict | None = None):
        self.embedding = embedding
        self.image = image
        self.threshold = float(threshold)
        self.meta = meta or {}

    @property
    def uses_image_stats(self) -> bool:
        return self.image is not None

    def score(self, embeddings: np.ndarray, image_stats: np.ndarray | None = None) -> np.ndarray:
        """``B×D`` embeddings (and ``B×N_IMAGE_STATS`` from :func:`image_statistics`) → ``B`` scores.

        Without ``image_stats`` only the embedding view is scored (a weaker, never stricter check).
        """
        emb = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
        s = self.embedding.score(emb)
        if self.image is not None and image_stats is not None:
            s = np.maximum(s, self.image.score(np.asarray(image_stats, dtype=np.float64).reshape(len(emb), -1)))
        return s

    def score_pixels(self, embeddings: np.ndarray, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Scores from embeddings and the matching raw ``read_image`` pixel arrays."""
        stats = np.stack([image_statistics(p) for p in pixels]) if self.image is not None else None
        return self.score(embeddings, stats)

    @classmethod
    def load(cls, bundle: Bundle | str | Path) -> OODDetector | None:
        """The bundle's detector, or ``None`` if it has none (``ood.fitted`` false or no file)."""
        found = fitted_tensors(bundle, "ood", OOD_FILE, "OOD statistics")
        if found is None:
            return None
        t, block = found
        emb = Gaussian(t["emb_mean"], t["emb_precision"], float(t["emb_scale"][0]))
        img = Gaussian(t["img_mean"], t["img_precision"], float(t["img_scale"][0])) if "img_mean" in t else None
        return cls(emb, img, float(block["threshold"]), block)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {
            "emb_mean": self.embedding.mean,
            "emb_precision": self.embedding.precision,
            "emb_scale": np.array([self.embedding.scale]),
        }
        if self.image is not None:
            out |= {
                "img_mean": self.image.mean,
                "img_precision": self.image.precision,
                "img_scale": np.array([self.image.scale]),
            }
        return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in out.items()}
