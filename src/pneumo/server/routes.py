"""The HTTP surface: ``/`` (the page), ``/docs`` (offline API reference) and ``/api/v1/*``."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.concurrency import run_in_threadpool

from pneumo.data.sniff import misleading_name
from pneumo.errors import PneumoError
from pneumo.server.audit_store import AuditRow
from pneumo.server.docs_page import render_docs
from pneumo.server.engine import OOD_MESSAGE, Analysis, Engine, b64
from pneumo.server.schemas import (
    ErrorResponse,
    HealthResponse,
    Heatmap,
    ImageInfo,
    ModelInfo,
    ModelRef,
    OodResult,
    OperatingPoint,
    PopulationResult,
    PredictResponse,
)
from pneumo.server.state import STATIC, Busy, request_id
from pneumo.server.upload import check_kind, read_upload

router = APIRouter()
ERRORS = {s: {"model": ErrorResponse} for s in (400, 413, 415, 422, 503)}
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


def _engine(request: Request) -> Engine:
    engine = request.app.state.engine
    if engine is None:
        raise Busy("The model is still loading; try again in a few seconds.")
    return engine


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


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(render_docs(request.app.openapi()))


@router.get("/api/v1/health", response_model=HealthResponse, summary="Is the server up and the model loaded?")
async def health(request: Request) -> HealthResponse:
    engine = request.app.state.engine
    gate = request.app.state.gate
    return HealthResponse(
        status="ok" if engine is not None else "starting",
        model=_model_ref(engine) if engine is not None else None,
        uptime_s=round(time.monotonic() - request.app.state.started, 3),
        in_flight=gate.active,
        queue_limit=gate.limit,
    )


@router.get("/api/v1/model", response_model=ModelInfo, responses={503: {"model": ErrorResponse}},
            summary="The loaded model: identity, operating point, preprocessing, calibration, OOD check.")
async def model_info(request: Request) -> ModelInfo:
    engine = _engine(request)
    meta, s = engine.bundle.meta, request.app.state.settings
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
        validation_metrics=meta.get("validation_metrics") or None,
        limits={"max_upload_mb": s.max_upload_mb, "max_pixels": s.max_pixels, "queue": s.queue,
                "formats": ["JPEG", "PNG", "DICOM"]},
    )


@router.post("/api/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Probability of pneumonia for one chest X-ray (multipart field 'file').")
async def predict(
    request: Request,
    heatmap: bool = Query(False, description="Also return the decision's evidence heatmap (RGBA PNG, base64; see heatmap.shows)."),
    display: bool = Query(False, description="Also return a display PNG of the image (for DICOM)."),
    frame: int | None = Query(None, ge=0, description="Which frame of a multi-frame DICOM to read."),
) -> PredictResponse:
    response, _, _ = await analyse_upload(request, heatmap=heatmap, display=display, frame=frame)
    return response


async def analyse_upload(request: Request, *, heatmap: bool, display: bool, frame: int | None,
                         then: Callable[[PredictResponse, Analysis], object] | None = None):
    """The one path of an uploaded film, for every endpoint that analyses one (predict, report):
    read the body under its timeouts → check its kind → take a place in the queue (only now that the
    body is here: a client stalling mid-upload holds none) → analyse in the engine's pool → ``then``
    (e.g. render the PDF) in the pool too → one audit row, whatever happens. Returns
    ``(response, analysis, then's result)``."""
    rid, t0 = request_id(request), time.perf_counter()
    gate, engine = request.app.state.gate, request.app.state.engine
    row = AuditRow(request_id=rid, outcome="error")
    if engine is not None:
        ref = _model_ref(engine)
        row.model_name, row.model_version, row.model_sha256 = ref.name, ref.version, ref.sha256
    entered, s = False, request.app.state.settings
    try:
        engine = _engine(request)
        data, ctype, filename = await read_upload(request, s.max_upload_bytes, s.body_timeout_s, s.body_deadline_s)
        row.image_sha256 = hashlib.sha256(data).hexdigest()
        name_warning = misleading_name(check_kind(data, ctype, filename), filename)
        if not gate.try_enter():
            raise Busy(f"The server is busy ({gate.limit} requests in progress). Try again in a few seconds.")
        entered = True
        loop = asyncio.get_running_loop()
        result: Analysis = await loop.run_in_executor(
            engine.executor, lambda: engine.analyse(data, heatmap=heatmap, display=display, frame=frame)
        )
        if name_warning:  # read by its bytes, as the CLI does, and said so
            result.warnings.insert(0, name_warning)
        response = _response(engine, result, rid, t0)
        extra = None if then is None else await loop.run_in_executor(engine.executor, lambda: then(response, result))
        _fill_row(row, response)
        await _audit(request, row, t0)
        return response, result, extra
    except PneumoError as exc:
        row.error_code = exc.code
        await _audit(request, row, t0)
        raise
    except Exception:
        row.error_code = "internal_error"
        await _audit(request, row, t0)
        raise
    finally:
        if entered:
            gate.leave()


def _response(engine: Engine, r: Analysis, rid: str, t0: float) -> PredictResponse:
    refused = bool(r.ood_flag)
    pred = r.prediction
    dw, dh = r.display_size or (None, None)
    return PredictResponse(
        request_id=rid,
        label="not_a_chest_xray" if refused else pred.decision,
        probability=None if refused else round(pred.probability, 6),
        threshold=round(pred.threshold, 6),
        operating_point=_operating_point(engine),
        ood=OodResult(available=r.ood_flag is not None, flag=r.ood_flag, score=r.ood_score,
                      threshold=engine.ood_threshold),
        population=_population(engine, pred),
        model=_model_ref(engine),
        image=ImageInfo(width=r.meta.width, height=r.meta.height, format=r.meta.format, sha256=r.meta.sha256,
                        display_png=b64(r.display_png), display_width=dw if r.display_png else None,
                        display_height=dh if r.display_png else None),
        heatmap=Heatmap(**r.heatmap_info, png=b64(r.heatmap_png)) if r.heatmap_png else None,
        warnings=r.warnings,
        message=(OOD_MESSAGE + (f" ({pred.reason})" if pred.reason else "")) if refused else None,
        latency_ms=round((time.perf_counter() - t0) * 1000, 2),
    )


def _fill_row(row: AuditRow, resp: PredictResponse) -> None:
    row.outcome = "refused_ood" if resp.label == "not_a_chest_xray" else "ok"
    row.width, row.height, row.format = resp.image.width, resp.image.height, resp.image.format
    row.probability, row.decision = resp.probability, resp.label
    row.ood_score, row.ood_flag = resp.ood.score, resp.ood.flag
    row.population = resp.population.value


def _population(engine: Engine, pred) -> PopulationResult:
    """Question 2: is this chest X-ray like the films the model was validated on? (a warning, not a refusal)"""
    det = engine.predictor.ood_detector if engine.predictor.gate is not None else None
    return PopulationResult(available=pred.population is not None, value=pred.population,
                            score=pred.population_score if det is not None else None,
                            threshold=det.threshold if det is not None else None)


async def _audit(request: Request, row: AuditRow, t0: float) -> None:
    row.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
    await run_in_threadpool(request.app.state.audit.record, row)

