"""The clinician's and IT's pages beyond the viewer: ``/model`` (the model card as HTML), ``/monitor``
(drift over the audit log), ``POST /api/v1/report`` (a one-page PDF) and ``GET /api/v1/monitor``.

The report runs the same analysis as ``/api/v1/predict`` (same gate, same audit row, same engine
path for the heatmap), so its request id is found in the audit log like any prediction's.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from starlette.concurrency import run_in_threadpool

from pneumo.evaluation.card import render_card
from pneumo.monitoring.drift import Bounds, summarise
from pneumo.server.audit_store import parse_since
from pneumo.server.report_pdf import build_report
from pneumo.server.routes import ERRORS, UPLOAD_BODY, analyse_upload
from pneumo.server.state import STATIC, AuditDep, EngineDep, GateDep, SettingsDep

router = APIRouter()
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=select_autoescape(["html"])
)
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
DEFAULT_WINDOW_DAYS = 30


def _printable(name: str | None) -> str | None:
    """A file name fit to print: its last path part, control characters dropped (``None`` when empty)."""
    if not name:
        return None
    base = re.split(r"[\\/]", name)[-1]
    return "".join(c for c in base if c.isprintable()).strip() or None


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/model", include_in_schema=False)
async def model_page(engine: EngineDep) -> HTMLResponse:
    b = engine.bundle
    card_file = b.path / "MODEL_CARD.md"
    card = card_file.read_text(encoding="utf-8") if card_file.is_file() else render_card(b.meta)
    op = b.meta["operating_point"]
    html = TEMPLATES.get_template("model.html").render(
        name=b.name, version=b.version, sha256=b.sha256, threshold=b.threshold, op=op,
        card_html=MARKDOWN.render(re.sub(r"^(#{1,5}) ", r"#\1 ", card, flags=re.M)), card_from_file=card_file.is_file(),
    )
    return HTMLResponse(html)


@router.get("/monitor", include_in_schema=False)
async def monitor_page() -> FileResponse:
    return FileResponse(STATIC / "monitor.html", media_type="text/html")


@router.get("/api/v1/monitor",
            summary="Drift monitoring over the audit log: volume, refusals, scores vs validation, alarms.",
            responses={400: {"model": ERRORS[400]["model"]}})
async def monitor(
    engine: EngineDep,
    audit: AuditDep,
    since: str | None = Query(None, description=f"First UTC date/time (default: {DEFAULT_WINDOW_DAYS} days ago)."),
    until: str | None = Query(None, description="Exclude rows from this UTC date/time on."),
    bucket: str = Query("day", pattern="^(day|week)$", description="Group the figures by day or ISO week."),
) -> dict:
    lo = parse_since(since, "since") if since else parse_since(
        (dt.datetime.now(dt.UTC) - dt.timedelta(days=DEFAULT_WINDOW_DAYS)).isoformat())
    hi = parse_since(until, "until") if until else None
    rows = await run_in_threadpool(lambda: list(audit.rows(lo, hi)))
    return summarise(rows, engine.bundle.meta, model_sha=engine.bundle.sha256, bucket=bucket,
                     bounds=Bounds.from_env(), since=lo, until=hi)


@router.post("/api/v1/report", response_class=Response, responses={**ERRORS, 200: {"content": {"application/pdf": {}}}},
             openapi_extra=UPLOAD_BODY,
             summary="A one-page PDF report for one chest X-ray (same form as /api/v1/predict).")
async def report(
    request: Request,
    engine: EngineDep,
    gate: GateDep,
    settings: SettingsDep,
    audit: AuditDep,
    frame: int | None = Query(None, ge=0, description="Which frame of a multi-frame DICOM to read."),
    filename: str | None = Query(None, max_length=255,
                                 description="The film's name to print in the report (the page sends the chosen "
                                             "file's name; without it the report says none was given)."),
) -> Response:
    meta = engine.bundle.meta
    name_shown = _printable(filename)
    response, _, pdf = await analyse_upload(
        request, engine, gate, settings, audit, heatmap=True, display=True, frame=frame,
        then=lambda resp, result: build_report(resp, result, meta, filename=name_shown),
    )
    rid = response.request_id
    name = f"pneumo-report-{rid[:12]}.pdf"
    disposition = f'attachment; filename="{name}"'
    return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": disposition})
