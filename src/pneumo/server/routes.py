"""The HTTP surface: ``/`` (the page), ``/docs`` (Swagger UI, served from local files) and ``/api/v1/*``.

Routes get the app's state (engine, audit log, settings, gate) through the dependency providers of
:mod:`pneumo.server.state`, never from ``request.app.state`` directly."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from pneumo.analysis import Analysis
from pneumo.data.sniff import misleading_name
from pneumo.errors import PneumoError
from pneumo.inference import NOT_A_CXR
from pneumo.server.audit_store import AuditRow, AuditStore
from pneumo.server.docs_page import DOCS_URL, swagger_page
from pneumo.server.engine import Engine, Rendered, b64
from pneumo.server.schemas import (
    ErrorResponse,
    Flag,
    HealthResponse,
    Heatmap,
    ImageFormat,
    ImageInfo,
    Label,
    ModelInfo,
    ModelRef,
    OodResult,
    OperatingPoint,
    PopulationResult,
    PredictResponse,
    Status,
)
from pneumo.server.settings import ServerSettings
from pneumo.server.state import (
    STATIC,
    AdmissionGate,
    AuditDep,
    Busy,
    EngineDep,
    GateDep,
    MaybeAuditDep,
    MaybeEngineDep,
    SettingsDep,
    StartedDep,
    request_id,
)
from pneumo.server.upload import check_kind, read_upload

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in (400, 413, 415, 422, 503)}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "JPEG, PNG or DICOM"}},
                }
            }
        },
    }
}


def _model_ref(engine: Engine) -> ModelRef:
    b = engine.bundle
    return ModelRef(name=b.name, version=b.version, sha256=b.sha256)


def _operating_point(engine: Engine) -> OperatingPoint:
    op = engine.bundle.meta["operating_point"]
    return OperatingPoint(
        rule=op.get("rule"),
        logit=float(op["logit"]),
        threshold=engine.bundle.threshold,
        val_sensitivity=op.get("val_sensitivity"),
        val_specificity=op.get("val_specificity"),
    )


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get(DOCS_URL, include_in_schema=False)
async def docs() -> HTMLResponse:
    return swagger_page()


@router.get("/api/v1/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}},
            summary="Is the server up, the model loaded and the audit log writable? (503 when degraded)")
async def health(engine: MaybeEngineDep, audit: MaybeAuditDep, gate: GateDep, started: StartedDep):
    problem = await run_in_threadpool(audit.problem) if audit is not None else None
    body = HealthResponse(
        status="starting" if engine is None else "degraded" if problem else "ok",
        model=_model_ref(engine) if engine is not None else None,
        uptime_s=round(time.monotonic() - started, 3),
        in_flight=gate.active,
        queue_limit=gate.limit,
        problems=[problem] if problem else [],
    )
    return JSONResponse(body.model_dump(), 503) if problem else body


@router.get("/api/v1/model", response_model=ModelInfo, responses={503: {"model": ErrorResponse}},
            summary="The loaded model: identity, operating point, preprocessing, calibration, OOD check.")
async def model_info(engine: EngineDep, s: SettingsDep) -> ModelInfo:
    meta = engine.bundle.meta
    return ModelInfo(
        name=engine.bundle.name,
        version=engine.bundle.version,
        sha256=engine.bundle.sha256,
        created=meta.get("created"),
        architecture=meta["architecture"],
        backend=engine.predictor.backend,
        class_names=list(meta.get("class_names", [])),
        operating_point=_operating_point(engine),
        preprocess=engine.bundle.spec.to_dict(),
        temperature=engine.bundle.temperature,
        calibration=meta.get("calibration"),
        ood=engine.ood_block,
        gate=engine.bundle.meta.get("gate"),
        population=meta.get("population"),
        header_policy=engine.analyser.policy.to_dict(),
        validation_metrics=meta.get("validation_metrics") or None,
        limits={"max_upload_mb": s.max_upload_mb, "max_pixels": s.max_pixels, "queue": s.queue,
                "formats": ["JPEG", "PNG", "DICOM"]},
    )


@router.post("/api/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Probability of pneumonia for one chest X-ray (multipart field 'file').")
async def predict(
    request: Request,
    engine: EngineDep,
    gate: GateDep,
    settings: SettingsDep,
    audit: AuditDep,
    heatmap: bool = Query(
        False, description="Also return the decision's evidence heatmap (RGBA PNG, base64; see heatmap.shows)."),
    display: bool = Query(False, description="Also return a display PNG of the image (for DICOM)."),
    frame: int | None = Query(None, ge=0, description="Which frame of a multi-frame DICOM to read."),
) -> PredictResponse:
    response, _, _ = await analyse_upload(request, engine, gate, settings, audit,
                                          heatmap=heatmap, display=display, frame=frame)
    return response


async def analyse_upload(request: Request, engine: Engine, gate: AdmissionGate, s: ServerSettings, audit: AuditStore,
                         *, heatmap: bool, display: bool, frame: int | None,
                         then: Callable[[PredictResponse, Rendered], object] | None = None):
    """The one path of an uploaded film, for every endpoint that analyses one (predict, report):
    read the body under its timeouts → check its kind → take a place in the queue (only now that the
    body is here: a client stalling mid-upload holds none) → analyse in the engine's pool → ``then``
    (e.g. render the PDF) in the pool too → one audit row, whatever happens. Returns
    ``(response, analysis, then's result)``. The caller's dependencies have already answered 503
    while the model is loading."""
    rid, t0 = request_id(request), time.perf_counter()
    row = AuditRow(request_id=rid, outcome="error")
    ref = _model_ref(engine)
    row.model_name, row.model_version, row.model_sha256 = ref.name, ref.version, ref.sha256
    entered = False
    try:
        data, ctype, filename = await read_upload(request, s.max_upload_bytes, s.body_timeout_s, s.body_deadline_s)
        row.image_sha256 = hashlib.sha256(data).hexdigest()
        name_warning = misleading_name(check_kind(data, ctype, filename), filename)
        if not gate.try_enter():
            raise Busy(f"The server is busy ({gate.limit} requests in progress). Try again in a few seconds.")
        entered = True
        loop = asyncio.get_running_loop()
        result: Rendered = await loop.run_in_executor(
            engine.executor, lambda: engine.analyse(data, heatmap=heatmap, display=display, frame=frame)
        )
        if name_warning:  # read by its bytes, as the CLI does, and said so
            result.warnings.insert(0, name_warning)
        response = _response(engine, result, rid, t0)
        extra = None if then is None else await loop.run_in_executor(engine.executor, lambda: then(response, result))
        _fill_row(row, response)
        await _audit(audit, row, t0)
        return response, result, extra
    except PneumoError as exc:
        row.error_code = exc.code
        await _audit(audit, row, t0)
        raise
    except Exception:
        row.error_code = "internal_error"
        await _audit(audit, row, t0)
        raise
    finally:
        if entered:
            gate.leave()


def _response(engine: Engine, r: Rendered, rid: str, t0: float) -> PredictResponse:
    """The service's answer as JSON: the status and headline lead; a refused film has no probability."""
    a, pred = r.analysis, r.analysis.prediction
    dw, dh = r.display_size or (None, None)
    label = a.decision if a.accepted else ("not_a_chest_xray" if a.decision == NOT_A_CXR else "refused")
    return PredictResponse(
        request_id=rid,
        status=cast(Status, a.status),
        headline=a.headline,
        flags=[Flag(code=c, reason=why) for c, why in a.flags],
        label=cast(Label, label),
        probability=None if a.probability is None else round(a.probability, 6),
        threshold=round(engine.bundle.threshold, 6),
        operating_point=_operating_point(engine),
        ood=OodResult(available=engine.analyser.has_gate, flag=None if pred is None else bool(pred.ood),
                      score=None if pred is None else pred.ood_score, threshold=engine.ood_threshold),
        population=_population(engine, pred),
        model=_model_ref(engine),
        image=_image_info(a, r, dw, dh),
        heatmap=_heatmap(r),
        warnings=r.warnings,
        message=a.headline if a.refused else None,
        latency_ms=round((time.perf_counter() - t0) * 1000, 2),
    )


def _image_info(a: Analysis, r: Rendered, dw, dh) -> ImageInfo:
    """What was read; a film refused from its DICOM header was never decoded (its size is then 0×0)."""
    m = a.meta
    fmt = cast(ImageFormat, m.format if m else "DICOM")
    return ImageInfo(width=m.width if m else 0, height=m.height if m else 0, format=fmt,
                     sha256=m.sha256 if m else "", display_png=b64(r.display_png),
                     display_width=dw if r.display_png else None, display_height=dh if r.display_png else None)


def _heatmap(r: Rendered) -> Heatmap | None:
    """The engine sets the heatmap's PNG and its description together."""
    if not r.heatmap_png:
        return None
    png = b64(r.heatmap_png)
    if r.heatmap_info is None or png is None:
        raise RuntimeError("the analysis has a heatmap PNG but no heatmap description")
    return Heatmap(**r.heatmap_info, png=png)


def _fill_row(row: AuditRow, resp: PredictResponse) -> None:
    # 'refused_ood' is the log's one refusal outcome (its CHECK constraint predates the header policy);
    # error_code and flags say which reason
    row.outcome = "refused_ood" if resp.status == "refused" else "ok"
    row.flags = ",".join(f.code for f in resp.flags) or None
    if resp.status == "refused" and resp.flags:
        row.error_code = resp.flags[0].code
    row.width, row.height, row.format = resp.image.width, resp.image.height, resp.image.format
    row.probability, row.decision = resp.probability, resp.label
    row.ood_score, row.ood_flag = resp.ood.score, resp.ood.flag
    row.population = resp.population.value


def _population(engine: Engine, pred) -> PopulationResult:
    """Question 2: is this chest X-ray like the films the model was validated on? (a warning, not a refusal)"""
    det = engine.predictor.ood_detector if engine.predictor.gate is not None else None
    if pred is None:
        return PopulationResult(available=False, value=None, score=None)
    limit = None if det is None else 1.0 if engine.predictor.population is not None else det.threshold
    return PopulationResult(available=pred.population is not None, value=pred.population,
                            score=pred.population_score if det is not None else None, threshold=limit)


async def _audit(audit: AuditStore, row: AuditRow, t0: float) -> None:
    row.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
    await run_in_threadpool(audit.record, row)

