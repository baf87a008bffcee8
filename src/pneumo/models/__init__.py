"""Networks: a registry of from-scratch CNNs and MONAI backbones, all 1-channel in, 1 logit out."""

from pneumo.models.base import PneumoNet
from pneumo.models.flops import count_flops, count_params
from pneumo.models.freeze import apply_freeze, frozen_bn_eval, param_groups
from pneumo.models.registry import available_models, build_model, register
from pneumo.models.weights import load_weights

__all__ = [
    "PneumoNet", "apply_freeze", "available_models", "build_model", "count_flops", "count_params",
    "frozen_bn_eval", "load_weights", "param_groups", "register",
]
