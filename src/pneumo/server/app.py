"""``create_app(bundle_path, settings) -> FastAPI``: the web page and the REST API over one bundle.

Lifecycle: the bundle is loaded once per worker process in the lifespan; predictions run in the
engine's thread pool, never on the event loop; a gate bounds requests in flight or waiting and
answers 503 + Retry-After beyond it, so an overload costs latency for nobody and memory for nobody.
Every error is JSON ``{error: {code, message}, request_id}``; input errors are 4xx, and the
catch-all 500 never shows a stack trace. The gate counts a request only once its body has arrived
(uploads are read first, under an idle timeout and a deadline → 408), so clients that stall half-way
through an upload hold a connection each, never a place in the inference queue.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pneumo.errors import PneumoError
from pneumo.server.audit_store import AuditRow, AuditStore
from pneumo.server.docs_page import ASSETS_URL, DOCS_CSP, DOCS_URL, OPENAPI_URL, SWAGGER_STATIC
from pneumo.server.engine import Engine
from pneumo.server.guard import BrowserGuard
from pneumo.server.pages import router as pages_router
from pneumo.server.routes import router
from pneumo.server.settings import ServerSettings
from pneumo.server.state import STATIC, AdmissionGate, RequestIdMiddleware, request_id
from pneumo.version import __version__

log = logging.getLogger("pneumo.server")
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large", 415: "wrong_content_type"}


def error_body(request: Request, code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}, "request_id": request_id(request)}


def human_message(exc: Exception) -> str:
    """``read_image`` names its source; for uploads that is ``<bytes>``, which means nothing to a person."""
    msg = str(exc)
    if msg.startswith("<bytes>: "):
        msg = msg[len("<bytes>: ") :]
        msg = "The uploaded file: " + msg
    return msg


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(PneumoError)
    async def on_pneumo_error(request: Request, exc: PneumoError):
        headers = {"Retry-After": str(app.state.settings.retry_after_s)} if exc.status == 503 else None
        return JSONResponse(error_body(request, exc.code, human_message(exc)), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        if request.url.path == "/api/v1/predict" and getattr(app.state, "audit", None) is not None:
            # every predict request is audited, even these
            row = AuditRow(request_id=request_id(request), outcome="error", error_code="invalid_request")
            try:
                await run_in_threadpool(app.state.audit.record, row)
            except PneumoError as audit_exc:  # the log cannot be written: that answer comes first
                return await on_pneumo_error(request, audit_exc)
        return JSONResponse(error_body(request, "invalid_request", "; ".join(parts) or "invalid request"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"Nothing at {request.url.path}. The page is at /, the API under /api/v1 (see /docs)."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (see /docs)."
        return JSONResponse(error_body(request, code, message), exc.status_code, headers=exc.headers)


class CrashGuard:
    """The catch-all 500, as the innermost middleware: Starlette runs an ``Exception`` handler in its
    outermost layer, outside every middleware, so a 500 went out without the security headers and
    request id, and the exception then reached uvicorn, which dropped the kept-alive connection. Here
    the 500 is an ordinary response that passes back through :class:`BrowserGuard` and
    :class:`RequestIdMiddleware`, and the connection stays usable. An exception after the response has
    started cannot become a 500; it is re-raised and uvicorn closes the connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            app = scope["app"]
            app.state.unhandled_errors += 1
            log.error("unhandled error in request %s", request_id(request), exc_info=exc)
            message = f"An internal error occurred. It has been logged with request id {request_id(request)}."
            await JSONResponse(error_body(request, "internal_error", message), 500)(scope, receive, send)


def create_app(bundle_path: str | Path, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app for one bundle; the bundle and audit database open when the app starts."""
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = Engine(bundle_path, settings)
        app.state.audit = AuditStore(settings.audit_db)
        app.state.started = time.monotonic()
        log.info("model %s loaded from %s", app.state.engine.bundle.name, bundle_path)
        try:
            yield
        finally:
            app.state.engine.close()
            app.state.audit.close()

    app = FastAPI(
        title="pneumo",
        version=__version__,
        description="Pneumonia detection on pediatric chest X-rays. Decision support, not a diagnosis.",
        docs_url=None,  # routes.py serves /docs: Swagger UI from local files (docs_page.py), not a CDN
        redoc_url=None,
        openapi_url=OPENAPI_URL,
        redirect_slashes=False,  # a slash redirect would be an absolute URL built from the Host header
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.gate = AdmissionGate(settings.queue)
    app.state.engine = None
    app.state.audit = None
    app.state.unhandled_errors = 0
    app.state.started = time.monotonic()
    app.add_middleware(CrashGuard)  # innermost: its 500s get the guard's headers and the request id
    app.add_middleware(BrowserGuard, allowed_hosts=settings.allowed_hosts, csp_for={DOCS_URL: DOCS_CSP})
    app.add_middleware(RequestIdMiddleware)  # outermost: the guard's refusals carry a request id too
    _install_handlers(app)
    app.include_router(router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount(ASSETS_URL, StaticFiles(directory=SWAGGER_STATIC), name="static-docs")
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): settings come from the environment."""
    bundle, settings = ServerSettings.from_env()
    return create_app(bundle, settings)
