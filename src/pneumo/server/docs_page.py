"""``/docs`` without a CDN: Swagger UI would fetch its scripts from the internet, which a hospital
network (and pneumo's rule "no network at run time") forbids, and no installed package ships its
assets. So the reference is rendered here from the OpenAPI schema as plain HTML; ``/openapi.json``
stays available for tools."""

from __future__ import annotations

import html
import json


def _schema_name(schema: dict | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_name(s) for s in schema["anyOf"])
    return schema.get("type", "")


def _operation(path: str, method: str, op: dict) -> str:
    e = html.escape
    rows = []
    for p in op.get("parameters", []):
        rows.append(
            f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p.get('in', ''))}</td>"
            f"<td>{e(_schema_name(p.get('schema')))}</td><td>{e(p.get('description', ''))}</td></tr>"
        )
    body = op.get("requestBody", {}).get("content", {})
    for ctype, spec in body.items():
        props = spec.get("schema", {}).get("properties", {})
        for name, prop in props.items():
            rows.append(
                f"<tr><td><code>{e(name)}</code></td><td>body ({e(ctype)})</td>"
                f"<td>{e(prop.get('format', prop.get('type', '')))}</td><td>{e(prop.get('description', ''))}</td></tr>"
            )
    params = (
        "<table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>" + "".join(rows) + "</table>"
        if rows
        else ""
    )
    responses = []
    for status, r in op.get("responses", {}).items():
        schema = r.get("content", {}).get("application/json", {}).get("schema")
        responses.append(f"<li><code>{e(status)}</code> {e(r.get('description', ''))} <em>{e(_schema_name(schema))}</em></li>")
    return (
        f"<section><h2><span class='m'>{e(method.upper())}</span> <code>{e(path)}</code></h2>"
        f"<p>{e(op.get('summary', ''))}</p>{params}<ul>{''.join(responses)}</ul></section>"
    )


def render_docs(spec: dict) -> str:
    """The OpenAPI ``spec`` → one self-contained HTML page (endpoints, parameters, schemas)."""
    e = html.escape
    ops = [
        _operation(path, method, op)
        for path, methods in spec.get("paths", {}).items()
        for method, op in methods.items()
    ]
    schemas = "".join(
        f"<details><summary><code>{e(name)}</code></summary><pre>{e(json.dumps(s, indent=2))}</pre></details>"
        for name, s in spec.get("components", {}).get("schemas", {}).items()
    )
    info = spec.get("info", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(info.get('title', 'API'))} API reference</title>
<style>
body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem;color:#1b1f24}}
section{{border:1px solid #d0d7de;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}}
.m{{background:#0b5cad;color:#fff;border-radius:4px;padding:0 .4rem;font-size:.85em}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #d0d7de;padding:.2rem .4rem;text-align:left}}
pre{{background:#f6f8fa;padding:.5rem;overflow:auto}}
</style></head><body>
<h1>{e(info.get('title', 'API'))} {e(info.get('version', ''))} — API reference</h1>
<p>{e(info.get('description', ''))}</p>
<p>Machine-readable schema: <a href="/openapi.json">/openapi.json</a>. Errors are always
<code>{{"error": {{"code", "message"}}, "request_id"}}</code>.</p>
<p>Example: <code>curl -F file=@chest.jpeg 'http://HOST:PORT/api/v1/predict?heatmap=true'</code></p>
{''.join(ops)}
<h2>Schemas</h2>{schemas}
</body></html>"""
