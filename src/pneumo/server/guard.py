"""What a browser-facing service on a clinic network needs besides correct answers, as one ASGI middleware.

- **Trusted hosts**: a request whose ``Host`` is not one the server was told it is known by is refused
  (400). This stops DNS rebinding: a web page on ``evil.example`` that re-points its name to
  127.0.0.1 still sends ``Host: evil.example``.
- **No cross-origin writes**: a state-changing request (POST, PUT, ...) that a browser marks as coming
  from another site (``Sec-Fetch-Site``) or another origin (``Origin``) is refused (403), so a page
  elsewhere cannot make a clinician's browser upload to, or act on, the local server. Clients that
  are not browsers send neither header and are unaffected.
- **Security headers** on every response: a CSP with no source outside the server (the page's own
  JS/CSS under ``/static``; base64 images), no framing (``X-Frame-Options`` + ``frame-ancestors``),
  ``nosniff``, no referrer. A path may be given its own CSP (``csp_for``): ``/docs`` allows its one
  inline script by hash (see :mod:`pneumo.server.docs_page`).
- **No Host in redirects**: an absolute ``Location`` is cut to its path, so a forged ``Host`` is never
  echoed back as a link.

The refusals are JSON ``{error: {code, message}, request_id}`` like every other error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def host_name(host_header: str) -> str:
    """``Host`` header value → lower-case host without port or IPv6 brackets (``[::1]:8000`` → ``::1``)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else ""
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def normalise_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(h.strip().lower().strip("[]") for h in hosts if h.strip()))


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    if not name:
        return False
    for pattern in allowed:
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class BrowserGuard:
    """Trusted hosts, same-origin writes and security headers for every HTTP request; ``csp_for`` maps
    exact paths to the CSP they get instead of :data:`CSP`."""

    def __init__(self, app, allowed_hosts: Iterable[str], csp_for: Mapping[str, str] | None = None):
        self.app = app
        self.allowed = normalise_hosts(allowed_hosts)
        self.csp_for = dict(csp_for or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        refusal = None
        if not host_allowed(host_name(host), self.allowed):
            refusal = (400, "bad_host", f"This server does not answer to the host name {host[:100]!r}. Open it at "
                       "an address it was started for (see `pneumo serve --allowed-host`).")
        elif scope["method"] not in SAFE_METHODS and _cross_origin(headers, host):
            refusal = (403, "cross_origin", "Requests that change something are only accepted from this "
                       "server's own page, not from another web site.")
        csp = self.csp_for.get(scope.get("path", ""), CSP)

        async def send_guarded(message):
            if message["type"] == "http.response.start":
                hdrs = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"location"]
                for k, v in message.get("headers", []):
                    if k.lower() == b"location":
                        hdrs.append((k, _relative(v.decode("latin-1")).encode("latin-1")))
                hdrs += [*HEADERS, (b"content-security-policy", csp.encode())]
                message = {**message, "headers": hdrs}
            await send(message)

        if refusal is None:
            return await self.app(scope, receive, send_guarded)
        status, code, text = refusal
        rid = scope.get("state", {}).get("request_id")
        body = json.dumps({"error": {"code": code, "message": text}, "request_id": rid}).encode()
        await send_guarded({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _cross_origin(headers: dict[str, str], host: str) -> bool:
    """True when a browser says the request comes from another site/origin than ``host``."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames, file:// pages, some redirects
        return True
    return urlsplit(origin).netloc.lower() != host.strip().lower()


def _relative(location: str) -> str:
    parts = urlsplit(location)
    if not parts.netloc:
        return location
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
