"""What the app and its routers share: the static folder, admission control (``Gate``, ``Busy``) and
request ids. Its own module so that routers import it and ``app`` imports the routers, one way."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from fastapi import Request

from pneumo.errors import PneumoError

STATIC = Path(__file__).with_name("static")


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
