"""``/docs``: Swagger UI ("try it out") without a CDN.

FastAPI's own ``/docs`` loads Swagger UI's script and style sheet from a CDN, which a hospital network
(and pneumo's rule "no network at run time") forbids. The ``fastapi-offline`` package ships those
files (Swagger UI 5, which reads the OpenAPI 3.1 schema FastAPI writes); the app mounts them at
``/static-docs`` and this page, built by FastAPI's ``get_swagger_ui_html``, points at them. Nothing
on it names a host: the favicon is the app's own ``/favicon.ico`` and Swagger UI's online validator
badge is off.

The page starts Swagger UI with one inline ``<script>``. The rest of the server forbids inline
scripts; ``/docs`` gets :data:`DOCS_CSP`, which allows exactly that script by its SHA-256 and is
otherwise as strict (no source outside the server). The page is the same for every request, so it is
built once, here, and the hash is of the bytes actually served.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

DOCS_URL = "/docs"
OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/static-docs"  # where app.py mounts SWAGGER_STATIC
SWAGGER_STATIC = Path(str(files("fastapi_offline") / "static"))
FAVICON_URL = "/favicon.ico"  # pages.py serves the app's SVG icon there
SWAGGER_PARAMETERS = {"validatorUrl": None}  # the default shows a badge fetched from validator.swagger.io


def _build() -> tuple[bytes, str]:
    body = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="pneumo API - Swagger UI",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=FAVICON_URL,
        oauth2_redirect_url=None,  # the API has no OAuth2
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    ).body
    page = bytes(body).decode()  # Response.body is typed bytes | memoryview; it is bytes here
    page, n = re.subn(r"<html>", '<html lang="en">', page, count=1)  # for screen readers (axe: html-has-lang)
    if n != 1:
        raise RuntimeError("unexpected Swagger UI page from fastapi.openapi.docs: no <html> tag")
    inline = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    if len(inline) != 1:
        raise RuntimeError(f"unexpected Swagger UI page: {len(inline)} inline script(s)")
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    return page.encode(), f"'sha256-{digest}'"


PAGE, SCRIPT_HASH = _build()
# like guard.CSP, plus the one inline script; Swagger UI's styles are its own CSS file and CSSOM
DOCS_CSP = (f"default-src 'none'; script-src 'self' {SCRIPT_HASH}; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def swagger_page() -> HTMLResponse:
    """The ``/docs`` page (serve it under :data:`DOCS_CSP`)."""
    return HTMLResponse(PAGE)
