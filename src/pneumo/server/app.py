"""``create_app(bundle_path, settings) -> FastAPI``: the web page and the REST API over one bundle.

Lifecycle: the bundle is loaded once per worker process in the lifespan; predictions run in the
engine's thread pool, never on the event loop; a gate bounds requests in flight or waiting and
answers 503 + Retry-After beyond it, so an overload costs latency for nobody and memory for nobody.
Every error is JSON ``{error: {code, message}, request_id}``; input errors are 4xx, and the
catch-all 500 never shows a stack trace.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pneumo import __version__
from pneumo.errors import PneumoError
from pneumo.server.settings import ServerSettings

log = logging.getLogger("pneumo.server")
STATIC = Path(__file__).with_name("static")
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large", 415: "wrong_content_type"}


class Busy(PneumoError):
    """More requests in flight or waiting than ``--queue`` allows."""

    code = "busy"
    status = 503


class Gate:
    """Counts requests in flight or waiting; refuses beyond ``limit`` instead of queueing without end."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


class RequestIdMiddleware:
    """Gives every request an id (``X-Request-ID`` header, echoed in JSON bodies and the audit log)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex
    return rid


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
            from pneumo.server.audit_store import AuditRow  # every predict request is audited, even these

            row = AuditRow(request_id=request_id(request), outcome="error", error_code="invalid_request")
            await run_in_threadpool(app.state.audit.record, row)
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

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception):
        app.state.unhandled_errors += 1
        log.error("unhandled error in request %s", request_id(request), exc_info=exc)
        message = f"An internal error occurred. It has been logged with request id {request_id(request)}."
        return JSONResponse(error_body(request, "internal_error", message), 500)


def create_app(bundle_path: str | Path, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app for one bundle; the bundle and audit database open when the app starts."""
    from pneumo.server.audit_store import AuditStore
    from pneumo.server.engine import Engine
    from pneumo.server.routes import router

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
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.gate = Gate(settings.queue)
    app.state.engine = None
    app.state.audit = None
    app.state.unhandled_errors = 0
    app.state.started = time.monotonic()
    app.add_middleware(RequestIdMiddleware)
    _install_handlers(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): settings come from the environment."""
    bundle, settings = ServerSettings.from_env()
    return create_app(bundle, settings)
