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
from PIL import Image

from pneumo.explain.render import LEGEND_NONE, legend_strip
from pneumo.server.engine import Rendered
from pneumo.server.schemas import NOTICE, PredictResponse

LEGEND_TAIL = "Relative to this film; not the outline of a lesion."
DEFAULT_SHOWS = "Evidence for pneumonia: red where the film most raised the pneumonia score."
LABEL_W, GAP = 44.0, 3.0  # the facts table: label column (wraps inside it), then the value column
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
    """The legend bar as the overlay draws it on a mid-grey film: no colour, then yellow → red."""
    return legend_strip(width, height, background=(128, 128, 128))


def prevalence_note(meta: dict) -> str:
    """What the probability assumes, in words a clinician reads (the calibration's prevalence)."""
    prev = (meta.get("calibration") or {}).get("prevalence")
    if prev is None:
        return ""
    n = round(100 * float(prev))
    return (f"This assumes that about {n} in 100 children X-rayed have pneumonia, as in the films the model "
            "learnt from. Where fewer do, the real chance is lower.")


def _gate_lines(resp: PredictResponse) -> list[tuple[str, str]]:
    o = resp.ood
    if not o.available:
        gate = "no out-of-distribution check in this model"
    else:
        verdict = "refused: not like a chest X-ray" if o.flag else "passed"
        gate = f"{verdict} (score {o.score:.2f}, limit {o.threshold:.2f})"
    lines = [("Chest X-ray gate", gate)]
    population = getattr(resp, "population", None)
    value = getattr(population, "value", population)
    if value is not None:
        lines.append(("Like the training films?", str(value)))
    return lines


def _facts(resp: PredictResponse, filename: str | None = None) -> list[tuple[str, str]]:
    op = resp.operating_point
    point = f"probability >= {_pct(op.threshold)}" + (f" (rule: {op.rule})" if op.rule else "")
    if op.val_sensitivity is not None and op.val_specificity is not None:
        point += f"; on validation: sensitivity {_pct(op.val_sensitivity)}, specificity {_pct(op.val_specificity)}"
    im = resp.image
    return [
        ("Decision", VERDICTS.get(resp.label, resp.label)),
        ("Probability of pneumonia", _pct(resp.probability) if resp.probability is not None else "not given (refused)"),
        ("Operating point", point),
        *_gate_lines(resp),
        ("File", filename or "not given by the sender"),
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


def _fact_rows(pdf: FPDF, rows: list[tuple[str, str]], full: float) -> None:
    """Label | value rows: a label wraps inside its own column, so it never runs into its value."""
    for key, value in rows:
        y0 = pdf.get_y()
        pdf.set_font("Helvetica", "B", 9)
        pdf.multi_cell(LABEL_W, 5, latin1(key), new_x="LMARGIN", new_y="NEXT")
        y1 = pdf.get_y()
        mono = "sha256" in key or key == "Request id"
        pdf.set_font("Courier" if mono else "Helvetica", size=8 if "sha256" in key else 9)
        pdf.set_xy(pdf.l_margin + LABEL_W + GAP, y0)
        pdf.multi_cell(full - LABEL_W - GAP, 5, latin1(value), new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(y1, pdf.get_y()))


def build_report(resp: PredictResponse, analysis: Rendered, meta: dict, filename: str | None = None) -> bytes:
    """The PDF bytes for one answered request (``analysis`` holds its display and heatmap PNGs);
    ``filename``: the uploaded file's name as the sender gave it, printed so the page names its film."""
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
    head = f"{filename} - " if filename else ""
    pdf.cell(0, 5, latin1(f"{head}request {resp.request_id} - model {resp.model.name}, version {resp.model.version}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 14)
    colour = {"PNEUMONIA": (180, 35, 24), "NORMAL": (26, 127, 55)}.get(resp.label, (87, 96, 106))
    pdf.set_text_color(*colour)
    verdict = VERDICTS.get(resp.label, resp.label)
    if resp.probability is not None:
        verdict += f" - probability {_pct(resp.probability)} (threshold {_pct(resp.threshold)})"
    pdf.multi_cell(full, 7, latin1(verdict), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    note = prevalence_note(meta) if resp.probability is not None else ""
    if note:
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(full, 5, latin1(note), new_x="LMARGIN", new_y="NEXT")
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
        pdf.image(colour_bar(), x=14, y=y, w=30, h=4)
        pdf.set_xy(46, y)
        target = getattr(resp.heatmap, "target", "pneumonia")
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(pdf.get_string_width("Red: "), 4, "Red: ")
        pdf.set_font("Helvetica", size=9)
        high = f"strongest evidence {'against' if target == 'normal' else 'for'} pneumonia.  "
        pdf.cell(pdf.get_string_width(high), 4, high)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(pdf.get_string_width("No colour: "), 4, "No colour: ")
        pdf.set_font("Helvetica", size=9)
        pdf.cell(0, 4, LEGEND_NONE.split(": ", 1)[1] + ".")
        pdf.set_xy(14, y + 5)
        pdf.set_font("Helvetica", size=8)
        shows = getattr(resp.heatmap, "shows", None) or DEFAULT_SHOWS
        pdf.multi_cell(full, 3.8, latin1(f"{shows} {LEGEND_TAIL}"), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    _fact_rows(pdf, _facts(resp, filename), full)
    if resp.warnings:
        pdf.ln(1)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(0, 5, "Warnings", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=8)
        for w in resp.warnings:
            pdf.multi_cell(full, 4, latin1("- " + w), new_x="LMARGIN", new_y="NEXT")
    if resp.message:
        pdf.set_font("Helvetica", size=9)
        pdf.multi_cell(full, 4.5, latin1(resp.message), new_x="LMARGIN", new_y="NEXT")
    y = max(pdf.get_y() + 3, pdf.h - 36)
    pdf.set_xy(14, y)
    pdf.set_fill_color(255, 248, 197)
    pdf.set_draw_color(212, 167, 44)
    pdf.set_font("Helvetica", "B", 9)
    pdf.multi_cell(full, 4.5, latin1(DISCLAIMER), border=1, fill=True, padding=2, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
