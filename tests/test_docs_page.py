"""``/docs``: Swagger UI from the installed fastapi-offline files (no CDN) under a CSP that allows its
one inline script by hash; in headless Chromium it lists the operations and "Try it out" runs a real
prediction. Also: the state dependencies' 503 while the model is not loaded."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from pneumo.server import ServerSettings, create_app, pages, routes
from pneumo.server.guard import CSP
from pneumo.server.state import get_engine
from server_support import LiveServer

JS_TYPES = ("text/javascript", "application/javascript")


class Refs(HTMLParser):
    """Every URL the page makes a browser load (script src, link href, img src) and its inline scripts."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (what, url)
        self.inline: list[str] = []
        self._in_inline = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append(("script", a["src"]))
        elif tag == "script":
            self._in_inline = True
            self.inline.append("")
        elif tag == "link" and a.get("href"):
            self.urls.append(((a.get("rel") or "link").lower(), a["href"]))
        elif tag in ("img", "iframe", "source") and a.get("src"):
            self.urls.append((tag, a["src"]))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_inline = False

    def handle_data(self, data):
        if self._in_inline:
            self.inline[-1] += data


def refs(html: str) -> Refs:
    parser = Refs()
    parser.feed(html)
    return parser


def directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        name, *sources = part.split()
        out[name] = sources
    return out


@pytest.fixture(scope="module")
def client(tiny_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("docs-audit") / "audit.sqlite"
    app = create_app(tiny_bundle, ServerSettings(audit_db=str(db), threads=1, queue=4))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def test_docs_is_swagger_ui_whose_every_asset_is_local(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle(" in r.text and '<html lang="en">' in r.text
    for outside in ("http://", "https://", "//cdn", "jsdelivr", "unpkg", "tiangolo"):
        assert outside not in r.text, outside
    page = refs(r.text)
    kinds = {what for what, _ in page.urls}
    assert {"script", "stylesheet", "shortcut icon"} <= kinds, page.urls
    expected = {"script": JS_TYPES, "stylesheet": ("text/css",), "shortcut icon": ("image/svg+xml",)}
    for what, url in page.urls:
        assert re.fullmatch(r"/[^/].*", url), f"{what} {url!r} is not a path on this server"
        got = client.get(url)
        ctype = got.headers["content-type"].split(";")[0]
        assert got.status_code == 200 and ctype in expected[what], (what, url, got.status_code, ctype)
        assert "nosniff" in got.headers["x-content-type-options"]
    js = client.get(next(u for w, u in page.urls if w == "script")).text
    css = client.get(next(u for w, u in page.urls if w == "stylesheet")).text
    assert len(js) > 500_000 and "SwaggerUIBundle" in js  # the real bundle, not a stub
    assert ".swagger-ui" in css and ".opblock" in css
    # the inline script reads the schema from this server, which is still served
    (inline,) = page.inline
    (schema_url,) = re.findall(r"url: '([^']+)'", inline)
    assert schema_url == "/openapi.json" and '"validatorUrl": null' in inline  # no validator.swagger.io badge
    spec = client.get(schema_url)
    assert spec.status_code == 200 and spec.headers["content-type"] == "application/json"
    assert spec.json()["openapi"].startswith("3.1") and "/api/v1/predict" in spec.json()["paths"]


def test_docs_csp_allows_its_one_inline_script_by_hash_and_nothing_else(client):
    r = client.get("/docs")
    csp = directives(r.headers["content-security-policy"])
    (inline,) = refs(r.text).inline
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert csp["script-src"] == ["'self'", f"'sha256-{digest}'"]
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]  # "Try it out" calls this server only
    for name, sources in csp.items():
        for src in sources:
            assert src in ("'self'", "'none'", "data:") or src.startswith("'sha256-"), (name, src)
    # only /docs is relaxed: the page, the API, Swagger's own files and errors keep the strict policy
    for path in ("/", "/api/v1/health", "/static-docs/swagger-ui-bundle.js", "/docs/", "/nothing"):
        assert client.get(path).headers["content-security-policy"] == CSP, path


def test_state_dependencies_answer_503_until_the_model_is_loaded(tmp_path):
    """No lifespan (TestClient not entered) is the app before the bundle has loaded: every route
    that needs the engine or audit log says so in the documented way; health says "starting"."""
    settings = ServerSettings(audit_db=str(tmp_path / "audit.sqlite"))
    app = create_app(tmp_path / "never-loaded", settings)
    client = TestClient(app, base_url="http://localhost")
    film = {"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png")}
    needs_engine = {("GET", "/api/v1/model"), ("GET", "/model"), ("GET", "/api/v1/monitor"),
                    ("POST", "/api/v1/predict"), ("POST", "/api/v1/report")}
    declared = {(m, route.path) for r in (routes.router, pages.router) for route in r.routes
                if isinstance(route, APIRoute)
                for m in route.methods if any(d.call is get_engine for d in route.dependant.dependencies)}
    assert declared == needs_engine  # a new route that needs the engine gets probed here too
    for method, path in sorted(needs_engine):
        r = client.post(path, files=film) if method == "POST" else client.get(path)
        body = r.json()
        assert r.status_code == 503 and body["error"]["code"] == "busy", (path, r.text)
        assert "still loading" in body["error"]["message"], path
        assert r.headers["retry-after"] == str(settings.retry_after_s), path
        assert r.headers["x-request-id"] == body["request_id"], path
    health = client.get("/api/v1/health").json()
    assert health["status"] == "starting" and health["model"] is None and health["in_flight"] == 0
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200
    assert app.state.unhandled_errors == 0 and app.state.gate.active == 0
    assert not (tmp_path / "audit.sqlite").exists()  # nothing was opened, nothing half-written


@pytest.fixture(scope="module")
def live(tiny_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs-live")
    server = LiveServer(tiny_bundle, tmp).wait(timeout=180)
    yield server
    server.stop()


@pytest.mark.browser
@pytest.mark.slow
def test_swagger_ui_lists_the_operations_and_try_it_out_predicts(live, chromium, val_originals, tmp_path):
    from playwright.sync_api import expect

    spec = httpx.get(live.url + "/openapi.json").json()
    n_ops = sum(len(methods) for methods in spec["paths"].values())
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    console, outside = [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    local = (live.url, "data:")
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(local) else None)
    try:
        page.goto(live.url + "/docs")
        predict = page.locator(".opblock.opblock-post", has=page.locator('[data-path="/api/v1/predict"]'))
        expect(predict).to_be_visible(timeout=30_000)
        expect(page.locator(".opblock")).to_have_count(n_ops)
        expect(page.locator(".info .title")).to_contain_text("pneumo")
        # "Try it out": a real upload through the page, under its CSP and the guard's same-origin rule
        predict.locator(".opblock-summary").click()
        predict.get_by_role("button", name="Try it out").click()
        predict.locator("input[type=file]").set_input_files(str(val_originals[0].path))
        predict.get_by_role("button", name="Execute").click()
        answer = predict.locator(".live-responses-table tbody")
        expect(answer.locator(".response-col_status")).to_have_text("200", timeout=60_000)
        expect(answer.locator(".response-col_description")).to_contain_text('"label"')
        expect(answer.locator(".response-col_description")).to_contain_text("tiny-test")
        page.screenshot(path=str(tmp_path / "docs.png"))
    finally:
        page.close()
    assert outside == [], f"/docs fetched from outside the server: {outside}"
    assert console == [], console  # no CSP violation, no script error
