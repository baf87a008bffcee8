"""What the app and its routers share: the static folder, admission control (``AdmissionGate``, ``Busy``),
request ids, and the dependency providers through which routes get the app's state (``EngineDep``,
``AuditDep``, ``SettingsDep``, ``GateDep``, ...) instead of reading ``request.app.state`` themselves.
Its own module so that routers import it and ``app`` imports the routers, one way.

``create_app`` sets ``app.state.settings`` and ``.gate`` when the app is built, and ``.engine`` and
``.audit`` in the lifespan, once the bundle and the audit database are open. Until then a route that
needs either answers 503 ``busy`` ("still loading", with ``Retry-After``), as it always has.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from pneumo.errors import PneumoError
from pneumo.server.audit_store import AuditStore
from pneumo.server.engine import Engine
from pneumo.server.settings import ServerSettings

STATIC = Path(__file__).with_name("static")


class Busy(PneumoError):
    """More requests in flight or waiting than ``--queue`` allows."""

    code = "busy"
    status = 503


class AdmissionGate:
    """Counts requests in flight or waiting; refuses beyond ``limit`` instead of queueing without end.

    (Not the chest-X-ray gate, :class:`pneumo.inference.ChestGate`: this one admits HTTP requests.)"""

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


LOADING = "The model is still loading; try again in a few seconds."


# -- dependency providers (``async``: they only read attributes, so FastAPI runs them on the event
#    loop instead of sending each one to its thread pool) ----------------------------------------------
async def get_engine(request: Request) -> Engine:
    """The loaded model's engine; 503 ``busy`` while the bundle is still loading."""
    engine = request.app.state.engine
    if engine is None:
        raise Busy(LOADING)
    return engine


async def get_engine_or_none(request: Request) -> Engine | None:
    """The engine, or ``None`` while loading (for ``/api/v1/health``, which reports ``starting``)."""
    return request.app.state.engine


async def get_audit(request: Request) -> AuditStore:
    """The audit log; it opens together with the engine, so 503 ``busy`` before that as well."""
    audit = request.app.state.audit
    if audit is None:
        raise Busy(LOADING)
    return audit


async def get_audit_or_none(request: Request) -> AuditStore | None:
    """The audit log, or ``None`` while loading (for ``/api/v1/health``)."""
    return request.app.state.audit


async def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


async def get_gate(request: Request) -> AdmissionGate:
    return request.app.state.gate


async def get_started(request: Request) -> float:
    """``time.monotonic()`` when the model finished loading (when the app was built, before that)."""
    return request.app.state.started


EngineDep = Annotated[Engine, Depends(get_engine)]
MaybeEngineDep = Annotated[Engine | None, Depends(get_engine_or_none)]
AuditDep = Annotated[AuditStore, Depends(get_audit)]
MaybeAuditDep = Annotated[AuditStore | None, Depends(get_audit_or_none)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
GateDep = Annotated[AdmissionGate, Depends(get_gate)]
StartedDep = Annotated[float, Depends(get_started)]
