"""Networks: a registry of from-scratch CNNs and MONAI backbones, all 1-channel in, 1 logit out."""

from pneumo.models.base import PneumoNet
from pneumo.models.registry import available_models, build_model, register

__all__ = ["PneumoNet", "available_models", "build_model", "register"]
