"""Inference: the ``Predictor`` over a bundle (ONNX Runtime or torch), export, OOD detection."""

from __future__ import annotations

from pneumo.data.locate import default_bundle_path  # re-exported: its torch-free home is data.locate
from pneumo.inference.gate import ChestGate, fit_gate
from pneumo.inference.ood import OODDetector, image_statistics
from pneumo.inference.ood_fit import fit_ood
from pneumo.inference.predictor import NOT_A_CXR, Prediction, Predictor

__all__ = [
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
