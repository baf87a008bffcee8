"""Inference: the ``Predictor`` over a bundle (ONNX Runtime or torch), export, OOD detection."""

from __future__ import annotations

import os
from pathlib import Path

from pneumo.errors import BundleError
from pneumo.inference.gate import ChestGate, fit_gate
from pneumo.inference.ood import OODDetector, image_statistics
from pneumo.inference.ood_fit import fit_ood
from pneumo.inference.predictor import ATYPICAL_WARNING, NOT_A_CXR, Prediction, Predictor

MODEL_ENV = "PNEUMO_MODEL"
DEFAULT_BUNDLE = Path("models") / "default"


def default_bundle_path() -> Path:
    """The shipped default model: ``$PNEUMO_MODEL``, else ``models/default/`` in the repository that
    holds the installed package (``src/pneumo`` → repo root), else ``./models/default``."""
    env = os.environ.get(MODEL_ENV)
    if env:
        p = Path(env).expanduser()
        if not (p / "pneumo.json").is_file():
            raise BundleError(f"${MODEL_ENV}={env}: not a model bundle (no pneumo.json there)")
        return p
    repo = Path(__file__).resolve().parents[3]
    tried = [repo / DEFAULT_BUNDLE, Path.cwd() / DEFAULT_BUNDLE]
    for p in tried:
        if (p / "pneumo.json").is_file():
            return p
    raise BundleError(
        "no default model: pass a BUNDLE directory, set $PNEUMO_MODEL, or place a bundle at "
        + " or ".join(str(p) for p in dict.fromkeys(tried))
    )


__all__ = [
    "ATYPICAL_WARNING",
    "NOT_A_CXR",
    "ChestGate",
    "OODDetector",
    "Prediction",
    "Predictor",
    "default_bundle_path",
    "fit_gate",
    "fit_ood",
    "image_statistics",
]
