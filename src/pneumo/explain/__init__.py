"""Explanations: where in the X-ray the model found its evidence (Grad-CAM, Grad-CAM++, occlusion),
pictures of it, and the checks that the explanations mean something (sanity, faithfulness)."""

from pneumo.explain.core import METHODS, TARGETS, explain_pixels, explain_tensor, resolve_layer, to_original
from pneumo.explain.render import heatmap_rgba_png, overlay_png

__all__ = [
    "METHODS",
    "TARGETS",
    "explain_pixels",
    "explain_tensor",
    "heatmap_rgba_png",
    "overlay_png",
    "resolve_layer",
    "to_original",
]
