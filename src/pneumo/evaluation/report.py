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
from jinja2 import Environment
from PIL import Image

from pneumo.data.discover import Sample
from pneumo.data.imageio import read_image
from pneumo.errors import PneumoError
from pneumo.evaluation.metrics import METRIC_LABELS
from pneumo.explain import explain_decision, overlay_png

GALLERY_SIZE = 8
THUMB = 256
OVERLAY_SIDE = 400  # the overlay figure's long side before thumbnailing (speed; the heatmap itself is full size)


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _thumbnail(png_or_pixels) -> bytes:
    """A PNG at most ``THUMB`` px on its long side, from PNG bytes or an ``H×W`` [0,1] array."""
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
    h, w = a.shape
    scale = min(1.0, long_side / max(h, w))
    if scale == 1.0:
        return a
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR))


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
    pred = logit >= bundle.threshold_logit
    out: dict[str, list[dict]] = {}
    for key, mask, order in (("false_positives", (y == 0) & pred, -1), ("false_negatives", (y == 1) & ~pred, 1)):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(order * prob[idx], kind="stable")][:n]
        cases = []
        for i in idx:
            s = kept[i]
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


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>pneumo evaluation — {{ r.bundle.name }} on {{ r.data.split or "all" }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0}.figs img{max-width:500px;border:1px solid #ddd}
.gallery{display:flex;flex-wrap:wrap;gap:.8em}.gallery figure{margin:0;width:260px;font-size:.8em;word-break:break-all}
.oracle{background:#fff4e5;border:1px solid #f0a030;padding:.5em 1em}.note{color:#555;font-size:.9em}
.warn{background:#fdecea;border:1px solid #e0a0a0;padding:.5em 1em}
</style></head><body>
<h1>Evaluation of <code>{{ r.bundle.name }}</code></h1>
<p><b>Decision support, not a diagnosis.</b> Data: {{ r.data.source or "" }} — split <b>{{ r.data.split or "all" }}</b>:
{{ r.data.n_images }} images ({{ r.data.n_pneumonia }} PNEUMONIA, {{ r.data.n_normal }} NORMAL) from {{ r.data.n_patients }} patients.
Model weights sha256 <code>{{ r.bundle.weights_sha256[:16] }}…</code>, pneumo {{ r.pneumo_version }}, {{ r.created }}.</p>
<p>Operating point fixed when the bundle was made (rule <b>{{ r.bundle.operating_point_rule }}</b>):
PNEUMONIA if logit ≥ {{ f(r.bundle.threshold_logit, 4) }} (probability ≥ {{ f(r.bundle.threshold_probability, 4) }} at temperature {{ f(r.bundle.temperature, 3) }}).
It was <b>not</b> tuned on these images.</p>
{% if r.unreadable %}<div class="warn">{{ r.unreadable|length }} unreadable file(s) were left out:
<ul>{% for u in r.unreadable[:20] %}<li><code>{{ u.path }}</code>: {{ u.error }}</li>{% endfor %}</ul></div>{% endif %}
<h2>Metrics at the operating point</h2>
<table><tr><th>metric</th><th>value</th><th>95% CI</th></tr>
{% for k, label in labels.items() %}{% set m = r.metrics[k] %}<tr><td>{{ label }}</td><td>{{ f(m.value) }}</td><td>{{ f(m.lo) }} – {{ f(m.hi) }}</td></tr>
{% endfor %}</table>
<p class="note">CIs: {{ r.bootstrap.interval }} intervals from {{ r.bootstrap.n_resamples }} bootstrap resamples of whole patients
(seed {{ r.bootstrap.seed }}); resamples where a metric is undefined are dropped. ECE: 10 equal-width probability bins.</p>
<h3>Confusion matrix</h3>
<table><tr><th></th><th>decided NORMAL</th><th>decided PNEUMONIA</th></tr>
<tr><td>true NORMAL</td><td>TN {{ r.confusion.tn }}</td><td>FP {{ r.confusion.fp }}</td></tr>
<tr><td>true PNEUMONIA</td><td>FN {{ r.confusion.fn }}</td><td>TP {{ r.confusion.tp }}</td></tr></table>
{% if r.pathogen_sensitivity %}<h3>Sensitivity per pathogen</h3>
<table><tr><th>pathogen</th><th>images</th><th>sensitivity</th><th>95% CI</th></tr>
{% for name, m in r.pathogen_sensitivity.items() %}<tr><td>{{ name }}</td><td>{{ m.n }}</td><td>{{ f(m.value) }}</td><td>{{ f(m.lo) }} – {{ f(m.hi) }}</td></tr>{% endfor %}
</table>{% endif %}
{% for col, levels in r.subgroups.items() %}<h3>Subgroup: {{ col }}</h3>
<table><tr><th>{{ col }}</th><th>images</th><th>PNEUMONIA</th>{% for k in sub_keys %}<th>{{ k }} (95% CI)</th>{% endfor %}</tr>
{% for level, m in levels.items() %}<tr><td>{{ level }}</td><td>{{ m.n }}</td><td>{{ m.n_pneumonia }}</td>
{% for k in sub_keys %}<td>{{ f(m[k].value) }} ({{ f(m[k].lo) }}–{{ f(m[k].hi) }})</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}
<h2>Figures</h2><div class="figs">
{% for name, cap in captions.items() %}{% if name in figs %}<figure><img alt="{{ name }}" src="data:image/png;base64,{{ figs[name] }}"><figcaption>{{ cap }}</figcaption></figure>{% endif %}{% endfor %}
</div>
{% if r.oracle %}<h2>Oracle (best threshold on THIS data — not a valid estimate)</h2>
<div class="oracle"><p>The Youden-optimal threshold chosen on the very images being scored. It is optimistic by construction and
is shown only to say how far a locally re-tuned threshold could move; report the figures above.</p>
<p>logit ≥ {{ f(r.oracle.threshold_logit, 4) }} (probability {{ f(r.oracle.threshold_probability, 4) }}):
sensitivity {{ f(r.oracle.sensitivity) }}, specificity {{ f(r.oracle.specificity) }}, accuracy {{ f(r.oracle.accuracy) }}.</p></div>{% endif %}
<h2>Error gallery</h2>
{% for key, title in (("false_positives", "Most confident false positives (true NORMAL)"), ("false_negatives", "Most confident false negatives (true PNEUMONIA)")) %}
<h3>{{ title }}</h3>{% if not cases[key] %}<p>None.</p>{% endif %}<div class="gallery">
{% for c in cases[key] %}<figure>{% if c.png %}<img alt="{{ key }} {{ loop.index }}" src="data:image/png;base64,{{ b64(c.png) }}">{% endif %}
<figcaption>p(PNEUMONIA) = {{ f(c.probability) }} · {{ c.image }}<br><code>{{ c.path }}</code></figcaption></figure>{% endfor %}</div>{% endfor %}
</body></html>
"""

CAPTIONS = {
    "roc": "ROC curve; the dot is the saved operating point.",
    "precision_recall": "Precision–recall; dotted line = prevalence.",
    "reliability": "Reliability diagram: observed vs predicted PNEUMONIA rate per probability bin.",
    "score_histogram": "Predicted probabilities per true class; dashed line = threshold.",
    "threshold_sweep": "Sensitivity and specificity vs probability threshold; dots = operating point.",
    "confusion_matrix": "Confusion matrix at the operating point.",
}


def render_report(result: dict, figures: dict[str, bytes], cases: dict[str, list[dict]]) -> str:
    """``metrics.json`` content + figure PNGs + gallery cases → one HTML string."""
    env = Environment(autoescape=True)
    tpl = env.from_string(TEMPLATE)
    return tpl.render(r=result, f=fmt, b64=b64, labels=METRIC_LABELS, captions=CAPTIONS,
                      figs={k: b64(v) for k, v in figures.items()}, cases=cases,
                      sub_keys=("sensitivity", "specificity", "auroc"))
