"""``pneumo serve`` (the web page + REST API) and ``pneumo audit export`` (the audit log as CSV)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pneumo.cli.common import run_safely
from pneumo.errors import BundleError

DEFAULT_DB = "pneumo-audit.sqlite"


def _default_bundle() -> Path:
    """The shipped model (``$PNEUMO_MODEL`` or ``models/default``); a one-line error when there is none."""
    try:
        from pneumo.inference import default_bundle_path
    except ImportError:  # an older inference package without it
        path = Path("models/default")
        if not (path / "pneumo.json").is_file():
            raise BundleError(f"no BUNDLE given and no default model at {path}; pass a bundle directory") from None
        return path
    return Path(default_bundle_path())


@click.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--audit-db", default=DEFAULT_DB, show_default=True, type=click.Path(path_type=Path),
              help="SQLite audit log (created if missing).")
@click.option("--max-upload-mb", default=25.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--max-pixels", default=50_000_000, show_default=True, type=click.IntRange(min=1))
@click.option("--queue", default=16, show_default=True, type=click.IntRange(min=1),
              help="Requests in flight or waiting per worker before answering 503.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="Inference threads per worker.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnx"]))
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@run_safely
def serve(bundle, host, port, workers, audit_db, max_upload_mb, max_pixels, queue, threads, backend, log_level):
    """Serve the web page and REST API for BUNDLE (default: the shipped model).

    Decision support, not a diagnosis. Open http://HOST:PORT/ in a browser; the API reference is at /docs.
    """
    import uvicorn

    from pneumo.bundle import read_meta
    from pneumo.server.settings import ENV_CONFIG, ServerSettings

    bundle = bundle or _default_bundle()
    meta = read_meta(bundle)  # fail here, in one line, rather than in every worker
    settings = ServerSettings(
        audit_db=str(Path(audit_db).resolve()), max_upload_mb=max_upload_mb, max_pixels=max_pixels,
        queue=queue, threads=threads, backend=backend,
    )
    os.environ[ENV_CONFIG] = settings.to_env(Path(bundle).resolve())
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    click.echo(f"pneumo: serving model {meta.get('name')} at http://{shown}:{port}/ "
               f"(API reference http://{shown}:{port}/docs; audit log {settings.audit_db})", err=True)
    sys.stderr.flush()
    uvicorn.run(
        "pneumo.server.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
        log_level=log_level, timeout_graceful_shutdown=10, server_header=False,
    )


@click.group()
def audit() -> None:
    """Read the server's audit log (no pixels or patient data are ever stored in it)."""


@audit.command("export")
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(path_type=Path))
@click.option("--since", required=True, help="First date/time to include (UTC), e.g. 2026-01-31 or 2026-01-31T08:00.")
@click.option("--until", default=None, help="Exclude rows from this date/time on (UTC).")
@click.option("--out", default="-", show_default=True, type=click.Path(path_type=Path, allow_dash=True),
              help="CSV file to write ('-': stdout).")
@run_safely
def export(db, since, until, out):
    """Write audit rows since a date as CSV (one row per prediction request)."""
    from pneumo.bundle import atomic_write_bytes
    from pneumo.errors import ConfigError
    from pneumo.server.audit_store import AuditStore, parse_since

    if not Path(db).exists():
        raise ConfigError(f"{db}: no audit database here (pass --db PATH)")
    store = AuditStore(db)
    try:
        lo, hi = parse_since(since), (parse_since(until) if until else None)
        if str(out) == "-":
            n = store.export_csv(sys.stdout, lo, hi)
        else:
            import io

            buf = io.StringIO()
            n = store.export_csv(buf, lo, hi)
            atomic_write_bytes(Path(out), buf.getvalue().encode())
    finally:
        store.close()
    click.echo(f"{n} audit rows since {lo}" + (f" written to {out}" if str(out) != "-" else ""), err=True)
