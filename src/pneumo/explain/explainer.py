"""One persistent explainer per loaded bundle, and the one call that pictures of a decision use.

The server, the CLI, the PDF report and the DICOM secondary capture all show *the same* map for a
decision, so they all call :func:`explain_decision`: PNEUMONIA → evidence for pneumonia, NORMAL →
evidence against it (what made the model call the film normal), with a sentence saying which.

The explainer is created once per bundle (it holds the ONNX Runtime session the perturbation methods
batch through, and ``gradcam-fine``'s layer) and keeps no per-call state, so repeated calls cost no
memory (issue 13) and concurrent calls are safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from pneumo.errors import ConfigError
from pneumo.explain import cam
from pneumo.explain.core import (
    CAM_METHODS,
    DEFAULT_METHOD,
    SCORE_METHODS,
    explain_tensor,
    finish,
    model_input,
    resolve_layer,
    torch_score,
)
from pneumo.inference.predictor import Predictor

_SHOWS = {  # one short sentence each, no nested parentheses: the page, PDF, SC and CLI print it as is
    "pneumonia": "evidence for pneumonia: red where the film most raised the pneumonia score",
    "normal": "evidence against pneumonia: red where the film most lowered the pneumonia score",
}
_HOW = {
    "occlusion": "found by blurring one region at a time",
    "occlusion-mean": "found by greying out one region at a time",
    "occlusion-monai": "found by MONAI occlusion, one region at a time",
    "rise": "found by RISE, random partial views of the film",
    "gradcam": "found by Grad-CAM on the last feature map",
    "gradcam++": "found by Grad-CAM++ on the last feature map",
    "gradcam-fine": "found by Grad-CAM on a finer feature map",
    "integrated-gradients": "found by integrated gradients from a blurred film",
    "smoothgrad": "found by SmoothGrad input gradients",
}


@dataclass
class Evidence:
    """A heatmap and what it means. ``heatmap``: float32 ``H×W`` in [0, 1] at the original geometry;
    ``target``: ``pneumonia`` or ``normal`` (whose evidence it is); ``shows``: one sentence for people."""

    heatmap: np.ndarray
    method: str
    target: str
    shows: str

    def to_dict(self) -> dict:
        return {"method": self.method, "target": self.target, "shows": self.shows}


def target_for(decision: str) -> str:
    """The class whose evidence explains ``decision``: PNEUMONIA → pneumonia, NORMAL → normal.

    Any other decision (a refused film) has no evidence to show: a map of "evidence against pneumonia"
    on a coffee cup would dress a refusal as a finding, so it is an error to ask for one."""
    d = str(decision).upper()
    if d not in ("PNEUMONIA", "NORMAL"):
        raise ConfigError(f"no heatmap for decision {decision!r}: only an accepted film (PNEUMONIA or NORMAL) "
                          "is explained")
    return d.lower()


def shows(target: str, method: str) -> str:
    """E.g. "Evidence for pneumonia: red where the film most raised the pneumonia score; found by
    blurring one region at a time." (what red means; no colour means little or no influence)."""
    return f"{_SHOWS[target].capitalize()}; {_HOW.get(method, 'found by ' + method)}."


class Explainer:
    """Heatmaps for one bundle. ``threads``: ONNX Runtime intra-op threads (``None``: all cores)."""

    def __init__(self, bundle, threads: int | None = None):
        self.bundle = bundle
        self.model = bundle.model
        self.spec = bundle.spec
        self._threads = threads
        self._score = None
        self._fine: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def score(self):
        """``N×1×S×S`` → ``N`` logits: the bundle's ONNX model when it has one, else torch."""
        if self._score is None:
            with self._lock:
                if self._score is None:
                    self._score = self._make_score()
        return self._score

    def _make_score(self):
        path = getattr(self.bundle, "path", None)
        if path is not None and self.bundle.onnx_path is not None:
            return Predictor(self.bundle, backend="onnx", threads=self._threads, ood=False).logits
        return torch_score(self.model)

    def raw(self, x: np.ndarray, method: str = DEFAULT_METHOD, target: str = "pneumonia", layer: str | None = None):
        """Model-grid ``1×S×S`` → raw ``S×S`` map (see :func:`explain_tensor`)."""
        fine = None
        if method == "gradcam-fine":
            name = resolve_layer(self.model, layer)
            if name not in self._fine:
                self._fine[name] = cam.finer_layer(self.model, name, self.spec.size)
            fine = self._fine[name]
        score = self.score if method in SCORE_METHODS else None
        return explain_tensor(self.model, x, method, target, layer, score=score, fine_layer=fine)

    def heatmap(self, pixels: np.ndarray, method: str = DEFAULT_METHOD, target: str = "pneumonia",
                layer: str | None = None) -> np.ndarray:
        """``read_image`` pixels ``H×W`` → float32 ``H×W`` in [0, 1] (1 = strongest evidence)."""
        if method in CAM_METHODS or layer is not None:
            resolve_layer(self.model, layer)  # a bad layer is an error whichever method ignores it
        x = model_input(pixels, self.spec)
        return finish(self.raw(x, method, target, layer), np.shape(pixels), self.spec)

    def for_decision(self, pixels: np.ndarray, decision: str, method: str = DEFAULT_METHOD) -> Evidence:
        target = target_for(decision)
        return Evidence(self.heatmap(pixels, method, target), method, target, shows(target, method))


def explainer_for(bundle, threads: int | None = None) -> Explainer:
    """The bundle's persistent :class:`Explainer` (made on first use — ``threads`` applies then — and
    kept on the bundle object, so it lives and dies with the bundle: no global cache to leak)."""
    ex = bundle.__dict__.get("_explainer")
    if ex is None:
        ex = bundle.__dict__.setdefault("_explainer", Explainer(bundle, threads))
    return ex


def explain_pixels(bundle, pixels: np.ndarray, method: str = DEFAULT_METHOD, target: str = "pneumonia",
                   layer: str | None = None) -> np.ndarray:
    """Heatmap for ``read_image`` pixels (float32 ``H×W``) → float32 ``H×W`` in [0, 1] (1 = strongest)."""
    return explainer_for(bundle).heatmap(pixels, method=method, target=target, layer=layer)


def explain_decision(bundle, pixels: np.ndarray, decision: str, method: str = DEFAULT_METHOD) -> Evidence:
    """THE call for every picture of a decision (page, API, PDF report, DICOM secondary capture):
    ``bundle`` a loaded Bundle, ``pixels`` ``read_image`` output, ``decision`` the prediction's
    ``PNEUMONIA``/``NORMAL`` → :class:`Evidence` (map + what it shows, for the caption/legend)."""
    return explainer_for(bundle).for_decision(pixels, decision, method)
