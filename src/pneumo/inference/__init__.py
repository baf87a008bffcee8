"""Inference: the ``Predictor`` over a bundle (ONNX Runtime or torch), export, OOD detection."""

from pneumo.inference.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
