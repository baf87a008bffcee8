"""A one-page PDF of one analysis, for the patient record or a colleague: drawn with fpdf2, no browser.

Why a PDF built here and not a printed web page: the report must carry exactly what the API answered
(probability, decision, operating point, gate, model sha256, request id) and nothing a browser
extension or zoom level could change. The core PDF fonts are Latin-1 only, so text is folded to it.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
from fpdf import FPDF
from matplotlib import colormaps
from PIL import Image

from pneumo.explain.render import CMAP
from pneumo.server.engine import Rendered
from pneumo.server.schemas import NOTICE, PredictResponse

LEGEND_TAIL = (
    "Red marks the strongest evidence, then yellow; blue and uncoloured areas had little influence. The map "
    "explains this film's own verdict, on either verdict; colours are relative within this image and do not "
    "outline a lesion."
)
DEFAULT_SHOWS = "Evidence for pneumonia: the regions that raised the model's pneumonia score most."
DISCLAIMER = (
    f"{NOTICE} pneumo was trained on one hospital's pediatric (ages 1-5) frontal chest X-rays and is not "
    "validated for adults, lateral views, other diseases or other hospitals without local validation."
)
VERDICTS = {"PNEUMONIA": "Pneumonia suspected", "NORMAL": "No pneumonia detected",
            "not_a_chest_xray": "Not a chest X-ray - no probability given"}
FOLD = str.maketrans({"≥": ">=", "≤": "<=", "—": "-", "–": "-", "…": "...", "→": "->", "“": '"', "”": '"',
                      "‘": "'", "’": "'", "·": "-"})
OVERLAY_OPACITY = 0.6


def latin1(text: str) -> str:
    return str(text).translate(FOLD).encode("latin-1", "replace").decode("latin-1")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _png_image(data: bytes, mode: str) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert(mode)


def overlay(display_png: bytes, heatmap_png: bytes, opacity: float = OVERLAY_OPACITY) -> Image.Image:
    """The film with the heatmap layer blended over it, as the page shows it at ``opacity``."""
    film = _png_image(display_png, "RGBA")
    heat = _png_image(heatmap_png, "RGBA").resize(film.size)
    alpha = (np.asarray(heat)[..., 3].astype(np.float32) * opacity).astype(np.uint8)
    heat.putalpha(Image.fromarray(alpha, mode="L"))
    return Image.alpha_composite(film, heat).convert("RGB")


def colour_bar(width: int = 256, height: int = 12) -> Image.Image:
    rgba = colormaps[CMAP](np.linspace(0.0, 1.0, width))[None, :, :3]
    return Image.fromarray((np.repeat(rgba, height, axis=0) * 255).astype(np.uint8), mode="RGB")


def _gate_lines(resp: PredictResponse) -> list[tuple[str, str]]:
    o = resp.ood
    if not o.available:
        gate = "no out-of-distribution check in this model"
    else:
        verdict = "refused: not like a chest X-ray" if o.flag else "passed"
        gate = f"{verdict} (score {o.score:.2f}, limit {o.threshold:.2f})"
    lines = [("Gate (is it a chest X-ray?)", gate)]
    population = getattr(resp, "population", None)
    value = getattr(population, "value", population)
    if value is not None:
        lines.append(("Population (typical of training?)", str(value)))
    return lines


def verdict_lines(resp: PredictResponse) -> tuple[str, str | None, tuple[int, int, int]]:
    """``(first line, secondary line, colour)``: the same wording as the page. A refused or flagged film
    leads with the service's headline ("Not a chest X-ray - <reason>", "Outside the validated population
    - <reason>"); a flagged film's probability follows as a secondary line, never as the verdict."""
    status = getattr(resp, "status", None)
    verdict = VERDICTS.get(resp.label, resp.label)
    headline = getattr(resp, "headline", None)
    if status == "refused":
        return headline or verdict, None, (87, 96, 106)
    if status == "flagged" and headline:
        answer = VERDICTS.get(resp.label, resp.label)
        prob = f" - probability {_pct(resp.probability)} (threshold {_pct(resp.threshold)})" \
            if resp.probability is not None else ""
        return headline, (f"The model's answer, not validated for films like this one: {answer}{prob}. "
                          "Do not rely on it."), (154, 103, 0)
    if resp.probability is not None:
        verdict += f" - probability {_pct(resp.probability)} (threshold {_pct(resp.threshold)})"
    return verdict, None, {"PNEUMONIA": (180, 35, 24), "NORMAL": (26, 127, 55)}.get(resp.label, (87, 96, 106))


def _facts(resp: PredictResponse) -> list[tuple[str, str]]:
    op = resp.operating_point
    point = f"probability >= {_pct(op.threshold)}" + (f" (rule: {op.rule})" if op.rule else "")
    if op.val_sensitivity is not None and op.val_specificity is not None:
        point += f"; on validation: sensitivity {_pct(op.val_sensitivity)}, specificity {_pct(op.val_specificity)}"
    im = resp.image
    return [
        ("Decision", verdict_lines(resp)[0].split(" - probability")[0]),
        ("Probability of pneumonia", _pct(resp.probability) if resp.probability is not None else "not given (refused)"),
        ("Operating point", point),
        *_gate_lines(resp),
        ("Image", f"{im.format}, {im.width} x {im.height} px, sha256 {im.sha256[:16]}..."),
        ("Model", f"{resp.model.name}, version {resp.model.version}"),
        ("Model sha256", resp.model.sha256),
        ("Request id", resp.request_id),
        ("Time (UTC)", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")),
    ]


class _Report(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=7)
        self.set_text_color(90)
        self.cell(0, 5, latin1("pneumo - decision support, not a diagnosis"), align="C")


def _place(pdf: FPDF, img: Image.Image, x: float, y: float, w: float, h_max: float) -> float:
    """Draw ``img`` at most ``w`` wide and ``h_max`` tall at (x, y); returns its height."""
    scale = min(w / img.width, h_max / img.height)
    iw, ih = img.width * scale, img.height * scale
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)  # a JPEG stream embeds as is: a small PDF
    pdf.image(buf, x=x + (w - iw) / 2, y=y, w=iw, h=ih)
    return ih


def build_report(resp: PredictResponse, analysis: Rendered, meta: dict) -> bytes:
    """The PDF bytes for one answered request (``analysis`` holds its display and heatmap PNGs)."""
    pdf = _Report(format="A4", unit="mm")
    pdf.set_auto_page_break(False)
    pdf.set_margins(14, 12, 14)
    pdf.add_page()
    pdf.set_title("pneumo report")
    pdf.set_creator("pneumo")
    full = pdf.w - 28
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 8, latin1("pneumo - chest X-ray analysis report"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    pdf.set_text_color(80)
    pdf.cell(0, 5, latin1(f"Request {resp.request_id} - model {resp.model.name} {resp.model.version}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 14)
    verdict, secondary, colour = verdict_lines(resp)
    pdf.set_text_color(*colour)
    pdf.multi_cell(full, 7, latin1(verdict), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    if secondary:
        pdf.set_font("Helvetica", size=9)
        pdf.multi_cell(full, 4.5, latin1(secondary), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    top, half = pdf.get_y(), (full - 6) / 2
    h = 0.0
    if analysis.display_png:
        film = _png_image(analysis.display_png, "RGB")
        h = _place(pdf, film, 14, top + 5, half, 105)
        pdf.set_xy(14, top)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(half, 5, "Film", align="C")
        if analysis.heatmap_png:
            _place(pdf, overlay(analysis.display_png, analysis.heatmap_png), 14 + half + 6, top + 5, half, 105)
            pdf.set_xy(14 + half + 6, top)
            method = resp.heatmap.method if resp.heatmap else "heatmap"
            pdf.cell(half, 5, latin1(f"Film with heatmap ({method})"), align="C")
    pdf.set_y(top + 5 + h + 3)
    if analysis.heatmap_png:
        y = pdf.get_y()
        pdf.set_font("Helvetica", size=8)
        pdf.set_xy(14, y)
        pdf.cell(22, 4, "little influence")
        pdf.image(colour_bar(), x=37, y=y, w=60, h=4)
        pdf.set_xy(99, y)
        target = getattr(resp.heatmap, "target", "pneumonia")
        pdf.cell(30, 4, f"strongest evidence {'against' if target == 'normal' else 'for'} pneumonia")
        pdf.set_xy(14, y + 5)
        shows = getattr(resp.heatmap, "shows", None) or DEFAULT_SHOWS
        pdf.multi_cell(full, 3.8, latin1(f"Heatmap: {shows} {LEGEND_TAIL}"), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    pdf.set_font("Helvetica", size=9)
    for key, value in _facts(resp):
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(48, 5, latin1(key))
        mono = "sha256" in key or key == "Request id"
        pdf.set_font("Courier" if mono else "Helvetica", size=8 if "sha256" in key else 9)
        pdf.multi_cell(full - 48, 5, latin1(value), new_x="LMARGIN", new_y="NEXT")
    if resp.warnings:
        pdf.ln(1)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(0, 5, "Warnings", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=8)
        for w in resp.warnings:
            pdf.multi_cell(full, 4, latin1("- " + w), new_x="LMARGIN", new_y="NEXT")
    if resp.message and resp.message != verdict:
        pdf.set_font("Helvetica", size=9)
        pdf.multi_cell(full, 4.5, latin1(resp.message), new_x="LMARGIN", new_y="NEXT")
    y = max(pdf.get_y() + 3, pdf.h - 36)
    pdf.set_xy(14, y)
    pdf.set_fill_color(255, 248, 197)
    pdf.set_draw_color(212, 167, 44)
    pdf.set_font("Helvetica", "B", 9)
    pdf.multi_cell(full, 4.5, latin1(DISCLAIMER), border=1, fill=True, padding=2, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
