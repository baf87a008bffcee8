"""The chest-X-ray gate: question 1 of two, "is this a frontal chest radiograph at all?".

Two checks, both independent of the pneumonia model (a retrained model keeps its gate):

1. **geometry** (:func:`~pneumo.inference.gate_features.geometry_reason`): a side under 64 px or an
   aspect over 3 is refused from the image size alone.
2. **a small classifier** (standardised :func:`gate_features` → MLP or logistic regression, run in
   numpy) trained with outlier exposure: frontal chest X-rays of several sources versus non-chest
   images and chest films made wrong (rotated 90°/180°, upside down, tiny crops, one side only,
   blanks, noise) — see :mod:`pneumo.inference.gate_corpus`.

The score is P(not a frontal chest X-ray); ``score > threshold`` refuses. Question 2 ("is it like the
films the model was validated on?") is the model-embedding Mahalanobis score of
:mod:`pneumo.inference.ood`, which only warns.

Stored in ``BUNDLE/gate.safetensors`` (``mean``, ``scale``, ``w0``, ``b0``, ``w1``, …) plus the
``gate`` block of ``pneumo.json``. Refit with :func:`fit_gate` or ``pneumo gate fit BUNDLE``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from pneumo.bundle import read_meta, sha256_file, update_meta
from pneumo.data.dataset import load_dataset
from pneumo.data.discover import Sample
from pneumo.data.locate import resolve_data
from pneumo.errors import BundleError, ConfigError, TooFewImages
from pneumo.fsutil import atomic_write_bytes
from pneumo.inference import gate_corpus as corpus
from pneumo.inference.gate_features import MAX_ASPECT, MIN_SIDE, N_FEATURES, gate_features, geometry_reason

GATE_FILE = "gate.safetensors"
EXTERNAL_ENV = "PNEUMO_EXTERNAL"
DEFAULT_THRESHOLD = 0.5


class ChestGate:
    """``score(features) → P(not a frontal chest X-ray)``; ``check(pixels)`` adds the geometry rule.

    Args:
        mean, scale: feature standardisation (``N_FEATURES``).
        layers: ``[(W, b), ...]``; ReLU between layers, the last gives one logit for "chest X-ray".
        threshold: refuse when the score is above it.
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]],
                 threshold: float = DEFAULT_THRESHOLD, meta: dict | None = None):
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.layers = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in layers]
        self.threshold = float(threshold)
        self.meta = meta or {}

    def score(self, features: np.ndarray) -> np.ndarray:
        """``B×N_FEATURES`` → ``B`` scores in [0, 1] (P(not a frontal chest X-ray))."""
        h = (np.asarray(features, np.float64).reshape(-1, len(self.mean)) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return 1.0 / (1.0 + np.exp(np.clip(h[:, 0], -50, 50)))

    def check(self, pixels: np.ndarray) -> tuple[float, str | None]:
        """One ``read_image`` array → ``(score, reason)``; ``reason`` is ``None`` when it passes."""
        return self.check_many([pixels])[1][0]

    def check_many(self, pixels: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[float, str | None]]]:
        """``B`` ``read_image`` arrays → (their ``B×N_FEATURES`` features, zeros for a film its shape refuses;
        one ``(score, reason)`` each). The features are returned so that the population check, which
        reads them too, does not compute them again on the serving path."""
        why = [geometry_reason(*p.shape) for p in pixels]
        features = np.stack([gate_features(p) if w is None else np.zeros(N_FEATURES)
                             for p, w in zip(pixels, why, strict=True)])
        answers: list[tuple[float, str | None]] = []
        for s, w in zip(self.score(features), why, strict=True):
            if w is not None:
                answers.append((1.0, w))
            else:
                answers.append((float(s), "does not look like a frontal chest radiograph" if s > self.threshold
                                else None))
        return features, answers

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "scale": self.scale}
        for i, (w, b) in enumerate(self.layers):
            out[f"w{i}"], out[f"b{i}"] = w, b
        return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in out.items()}

    @classmethod
    def load(cls, bundle) -> ChestGate | None:
        """The bundle's gate (a :class:`~pneumo.bundle.Bundle` or a directory), or ``None`` if it has none."""
        path = Path(getattr(bundle, "path", bundle))
        meta = getattr(bundle, "meta", None) or read_meta(path)
        block = meta.get("gate") or {}
        f = path / GATE_FILE
        if not block.get("fitted") or not f.exists():
            return None
        try:
            t = load_file(str(f))
        except Exception as exc:  # safetensors raises its own error types on damaged files
            raise BundleError(f"{f}: cannot read the chest-X-ray gate ({exc})") from exc
        n = sum(k.startswith("w") for k in t)
        if len(t["mean"]) != N_FEATURES or n == 0:
            raise BundleError(f"{f}: gate expects {len(t['mean'])} features, this pneumo computes {N_FEATURES}")
        return cls(t["mean"], t["scale"], [(t[f"w{i}"], t[f"b{i}"]) for i in range(n)], block["threshold"], block)


def train_classifier(x: np.ndarray, y: np.ndarray, kind: str = "mlp", seed: int = 0) -> ChestGate:
    """Features ``N×N_FEATURES`` and labels (1 = chest X-ray) → an untuned :class:`ChestGate`.

    ``mlp``: one hidden layer of 64 ReLU units, L2 1e-2, early stopping on 10 % of the images.
    ``lr``: balanced logistic regression, C 0.1.
    """
    from sklearn.linear_model import LogisticRegression  # lazy: sklearn is only needed to fit
    from sklearn.neural_network import MLPClassifier

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    if kind == "lr":
        m = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(z, y)
        layers = [(m.coef_.T, m.intercept_)]
    elif kind == "mlp":
        m = MLPClassifier((64,), alpha=1e-2, max_iter=200, early_stopping=True, n_iter_no_change=10,
                          random_state=seed).fit(z, y)
        layers = list(zip(m.coefs_, m.intercepts_, strict=True))
    else:
        raise ConfigError(f"gate classifier must be 'mlp' or 'lr', got {kind!r}")
    return ChestGate(mean, scale, layers)


def features_of(items: Sequence[corpus.Item], progress: bool = False) -> np.ndarray:
    it = items
    if progress:
        from tqdm import tqdm

        it = tqdm(items, unit="img", desc="gate features")
    return np.stack([gate_features(i.pixels) for i in it])


def _patient_bucket(patient: str) -> int:
    return int(hashlib.sha256(patient.encode()).hexdigest(), 16) % 100


def split_chest(samples: Sequence[Sample], val_percent: int = 20) -> tuple[list[Sample], list[Sample]]:
    """Training chest X-rays split by a patient hash: (fit, held-out val), so no patient is in both."""
    fit = [s for s in samples if _patient_bucket(s.patient_id) >= val_percent]
    val = [s for s in samples if _patient_bucket(s.patient_id) < val_percent]
    return fit, val


def training_items(
    data: str | Path | None, external: str | Path | None, n_chest: int = 1500, seed: int = 0
) -> tuple[list[corpus.Item], list[corpus.Item], list[corpus.Item]]:
    """``(training items with variants and derived negatives, held-out chest X-rays, external originals)``.

    The dataset's ``train`` split is cut by patient: ``n_chest`` images of 80 % of the patients are
    fitted, the other 20 % are held out (never fitted).
    """
    if external is not None and not Path(external).is_dir():
        raise ConfigError(f"external gate data {external}: no such folder")
    train = load_dataset(resolve_data(data)).select("train")
    fit, val = split_chest(train)
    if len(fit) < 50 or len(val) < 10:
        raise TooFewImages(f"gate fitting needs ≥50 fit and ≥10 held-out chest X-rays, got {len(fit)} and {len(val)}")
    rng = np.random.default_rng(seed)
    if len(fit) > n_chest:
        fit = [fit[i] for i in sorted(rng.choice(len(fit), n_chest, replace=False))]
    ext = corpus.external_items(external) if external else []
    base = corpus.read_items([s.path for s in fit], True, "dataset", "train") + ext + corpus.package_items()
    return corpus.expand(base, rng, derived_from="dataset"), corpus.read_items([s.path for s in val], True,
                                                                              "dataset", "val"), ext


def fit_gate(
    bundle_dir: str | Path,
    data: str | Path | None = None,
    external: str | Path | None = None,
    *,
    classifier: str = "mlp",
    n_chest: int = 1500,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Fit the chest-X-ray gate and store it in ``bundle_dir``; returns the ``gate`` block.

    ``data``: the chest X-ray dataset (root or manifest; ``--data``/``$PNEUMO_DATA`` rules), see
    :func:`training_items`. ``external``: a folder of other-source images (``$PNEUMO_EXTERNAL`` when
    ``None``; layout in :mod:`~pneumo.inference.gate_corpus`); without one the gate learns from the
    dataset, package images and chest-derived negatives only, and the block says so. The model, its
    calibration and its OOD block are not touched, so this can be rerun on any bundle.
    """
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"gate threshold must be in (0, 1), got {threshold}")
    bundle_dir = Path(bundle_dir)
    read_meta(bundle_dir)  # a clear error when it is not a bundle
    t0 = time.perf_counter()
    external = external if external is not None else os.environ.get(EXTERNAL_ENV) or None
    items, val_items, ext = training_items(data, external, n_chest, seed)
    x = features_of(items, progress)
    y = np.array([i.positive for i in items])
    gate = train_classifier(x, y, classifier, seed)
    gate.threshold = threshold
    val_scores = gate.score(features_of(val_items, progress))
    block = {
        "method": f"geometry (min side {MIN_SIDE}, aspect ≤ {MAX_ASPECT:g}) + {classifier} on {N_FEATURES} "
                  "low-resolution equalised-image features (gate_features), outlier exposure",
        "classifier": classifier,
        "threshold": threshold,
        "score": "P(not a frontal chest X-ray); refused when above threshold",
        "n_features": N_FEATURES,
        "n_fit_positive": int(y.sum()),
        "n_fit_negative": int((~y).sum()),
        "external": {"used": bool(ext), "n_images": len(ext), "sources": sorted({i.source for i in ext})},
        "held_out": {"n": len(val_items), "accept_rate": float(np.mean(val_scores <= threshold)),
                     "what": "training-split chest X-rays of 20 % of patients (sha256 bucket), never fitted"},
        "fit_seconds": round(time.perf_counter() - t0, 1),
        "fitted": True,
    }
    atomic_write_bytes(bundle_dir / GATE_FILE, save(gate.tensors()))
    block["sha256"] = sha256_file(bundle_dir / GATE_FILE)
    update_meta(bundle_dir, gate=block)
    return block


def copy_gate(src_bundle: str | Path, dst_bundle: str | Path) -> dict:
    """Put ``src_bundle``'s gate into ``dst_bundle`` unchanged: the gate never looks at the model, so a
    retrained model can keep the gate it had. Returns the ``gate`` block written."""
    src, dst = Path(src_bundle), Path(dst_bundle)
    block = read_meta(src).get("gate") or {}
    if not block.get("fitted") or not (src / GATE_FILE).exists():
        raise ConfigError(f"{src}: has no chest-X-ray gate to copy (run `pneumo gate fit {src}`)")
    read_meta(dst)
    atomic_write_bytes(dst / GATE_FILE, (src / GATE_FILE).read_bytes())
    if sha256_file(dst / GATE_FILE) != block.get("sha256"):
        raise BundleError(f"{src / GATE_FILE}: sha256 does not match its gate block")
    update_meta(dst, gate=block)
    return block
