"""Explanations: where in the X-ray the model found its evidence (occlusion by default, Grad-CAM family,
RISE, gradient attributions), pictures of it, and the checks that the explanations mean something
(sanity, faithfulness). Pictures of a decision use :func:`explain_decision`."""

from pneumo.explain.core import DEFAULT_METHOD, METHODS, TARGETS, explain_tensor, resolve_layer
from pneumo.explain.explainer import Evidence, Explainer, explain_decision, explain_pixels, explainer_for
from pneumo.explain.render import heatmap_rgba_png, overlay_png

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "TARGETS",
    "Evidence",
    "Explainer",
    "explain_decision",
    "explain_pixels",
    "explain_tensor",
    "explainer_for",
    "heatmap_rgba_png",
    "overlay_png",
    "resolve_layer",
]
