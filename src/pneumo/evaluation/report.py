"""The self-contained HTML evaluation report and its error gallery.

Every image is inlined as a base64 PNG and there is no script, font or stylesheet from anywhere
else, so the file opens offline and can be mailed as one attachment.

Gallery: the worst false positives / negatives, each with the evidence for its (wrong) decision,
drawn by the same explainer as the page (``pneumo.explain.explain_decision``).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pneumo.data.discover import Sample
from pneumo.data.imageio import read_image
from pneumo.data.preprocess import fit_long_side, resample
from pneumo.decision import decide
from pneumo.errors import PneumoError
from pneumo.evaluation.metrics import METRIC_LABELS
from pneumo.explain import explain_decision, overlay_png
from pneumo.templates import render

GALLERY_SIZE = 8
THUMB = 256
OVERLAY_SIDE = 400  # the overlay figure's long side before thumbnailing (speed; the heatmap itself is full size)


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _thumbnail(png_or_pixels) -> bytes:
    """A PNG at most ``THUMB`` px on its long side, from PNG bytes or an ``H×W`` [0,1] array."""
    img: Image.Image
    if isinstance(png_or_pixels, bytes | bytearray):
        img = Image.open(io.BytesIO(png_or_pixels))
        img.load()
    else:
        img = Image.fromarray((np.clip(png_or_pixels, 0, 1) * 255).astype(np.uint8))
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _shrink(a: np.ndarray, long_side: int = OVERLAY_SIDE) -> np.ndarray:
    """Bilinear downscale of an ``H×W`` float map for display only (keeps the aspect ratio)."""
    size = fit_long_side(a.shape, long_side)
    return a if size == a.shape else resample(a, *size)


def _case_image(bundle, sample: Sample, caption: str, decision: str) -> tuple[bytes, str]:
    """The evidence for the (wrong) decision, computed on the ORIGINAL pixels (what the model saw) with the
    default method the page uses; only the picture is shrunk."""
    pixels = read_image(sample.path)[0]
    try:
        ev = explain_decision(bundle, pixels, decision)
    except (PneumoError, RuntimeError, ValueError) as exc:  # a gallery picture must never sink the report
        return _thumbnail(pixels), f"thumbnail (heatmap failed: {type(exc).__name__})"
    png = overlay_png(_shrink(pixels), np.clip(_shrink(ev.heatmap), 0, 1), caption)
    return _thumbnail(png), f"{ev.method} overlay: {ev.shows}"


def error_gallery(bundle, kept: Sequence[Sample], y, logit, prob, n: int = GALLERY_SIZE) -> dict[str, list[dict]]:
    """The ``n`` most confident false positives and false negatives at the operating point."""
    y, logit, prob = np.asarray(y), np.asarray(logit), np.asarray(prob)
    pred = decide(logit, bundle.threshold_logit)
    out: dict[str, list[dict]] = {}
    for key, mask, order in (("false_positives", (y == 0) & pred, -1), ("false_negatives", (y == 1) & ~pred, 1)):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(order * prob[idx], kind="stable")][:n]
        cases = []
        for i in idx:
            s = kept[int(i)]
            caption = f"{s.path.name}  p(PNEUMONIA)={prob[i]:.3f}"
            try:
                png, kind = _case_image(bundle, s, caption, "PNEUMONIA" if pred[i] else "NORMAL")
            except PneumoError as exc:
                png, kind = b"", f"unreadable: {exc}"
            cases.append({"path": str(s.path), "patient": s.group, "probability": float(prob[i]),
                          "logit": float(logit[i]), "image": kind, "png": png})
        out[key] = cases
    return out


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


CAPTIONS = {
    "roc": "ROC curve; the dot is the saved operating point.",
    "precision_recall": "Precision–recall; dotted line = prevalence.",
    "reliability": "Reliability diagram: observed vs predicted PNEUMONIA rate per probability bin.",
    "score_histogram": "Predicted probabilities per true class; dashed line = threshold.",
    "threshold_sweep": "Sensitivity and specificity vs probability threshold; dots = operating point.",
    "confusion_matrix": "Confusion matrix at the operating point.",
}


def render_report(result: dict, figures: dict[str, bytes], cases: dict[str, list[dict]]) -> str:
    """``metrics.json`` content + figure PNGs + gallery cases → one HTML string
    (layout: ``pneumo/templates/eval_report.html``)."""
    return render("eval_report.html", r=result, f=fmt, b64=b64, labels=METRIC_LABELS, captions=CAPTIONS,
                  figs={k: b64(v) for k, v in figures.items()}, cases=cases,
                  sub_keys=("sensitivity", "specificity", "auroc"))
