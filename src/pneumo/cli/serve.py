"""``pneumo serve`` (the web page + REST API), ``pneumo audit export`` (the audit log as CSV) and
``pneumo audit monitor`` (drift and health over it)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from pathlib import Path

import click

from pneumo.cli.common import choose_onnx, onnx_file_options, run_safely
from pneumo.errors import BundleError
from pneumo.paths import audit_db as _audit_db

DEFAULT_DB = str(_audit_db())  # per user, not the current folder (pneumo.paths); --db/--audit-db override
MONITOR_WINDOW_DAYS = 30  # the /monitor page's default window too


def _default_bundle() -> Path:
    """The shipped model (``$PNEUMO_MODEL`` or ``models/default``); a one-line error when there is none."""
    from pneumo.data.locate import default_bundle_path  # torch-free: `audit monitor` starts without torch

    return Path(default_bundle_path())


@click.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--audit-db", default=DEFAULT_DB, show_default=True, type=click.Path(path_type=Path),
              help="SQLite audit log (created if missing).")
@click.option("--max-upload-mb", default=25.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--max-pixels", default=50_000_000, show_default=True, type=click.IntRange(min=1))
@click.option("--queue", default=16, show_default=True, type=click.IntRange(min=1),
              help="Requests in flight or waiting per worker before answering 503 (counted once uploaded).")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1),
              help="Inference threads per worker.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnx"]))
@onnx_file_options
@click.option("--body-timeout", default=15.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds an upload may send nothing before it is answered 408.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Host name the server is reached by (repeatable; '*' for any). Always: localhost, "
                   "127.0.0.1, ::1 and --host.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@run_safely
def serve(bundle, host, port, workers, audit_db, max_upload_mb, max_pixels, queue, threads, backend, int8, onnx_file,
          body_timeout, allowed_hosts, log_level):
    """Serve the web page and REST API for BUNDLE (default: the shipped model).

    Decision support, not a diagnosis. Open http://HOST:PORT/ in a browser; the API reference is at /docs.
    """
    import uvicorn

    from pneumo.bundle import load_bundle
    from pneumo.inference import Predictor
    from pneumo.server.settings import ENV_CONFIG, LOCAL_HOSTS, ServerSettings

    bundle = Path(bundle or _default_bundle())
    backend, onnx_file = choose_onnx(backend, int8, onnx_file)
    Path(audit_db).parent.mkdir(parents=True, exist_ok=True)
    settings = ServerSettings(
        audit_db=str(Path(audit_db).resolve()), max_upload_mb=max_upload_mb, max_pixels=max_pixels,
        queue=queue, threads=threads, backend=backend, onnx_file=onnx_file, body_timeout_s=body_timeout,
        body_deadline_s=max(120.0, body_timeout), allowed_hosts=_hosts(host, allowed_hosts, LOCAL_HOSTS),
    )
    # Load everything a worker will (weights, ONNX, OOD) here, so a damaged bundle is one line, not a
    # worker's "Application startup failed" traceback.
    loaded = load_bundle(bundle)
    Predictor(loaded, backend=backend, onnx_file=onnx_file)
    _check_audit_db(Path(settings.audit_db))  # likewise a log that cannot be written: one line, before listening
    sock = _listen(host, port)  # before "serving at": a taken port is one line and no false claim
    port = sock.getsockname()[1]
    os.environ[ENV_CONFIG] = settings.to_env(bundle.resolve())
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    click.echo(f"pneumo: serving model {loaded.name} at http://{shown}:{port}/ "
               f"(API reference http://{shown}:{port}/docs; audit log {settings.audit_db})", err=True)
    sys.stderr.flush()
    config = uvicorn.Config(
        "pneumo.server.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
        log_level=log_level, timeout_graceful_shutdown=10, server_header=False,
    )
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if workers == 1 and not server.started:
        raise BundleError(f"{bundle}: the server could not start (see the log above)")


def _check_audit_db(path: Path) -> None:
    """Open the audit log and write to it once, as every prediction will: a path that cannot hold a
    database (``/proc/x.sqlite``, a directory, a read-only or full disk) is a one-line error, exit 2."""
    from pneumo.errors import ConfigError
    from pneumo.server.audit_store import AuditStore, AuditUnavailable

    try:
        store = AuditStore(path)
    except ConfigError as exc:
        raise ConfigError(f"--audit-db {exc}") from None
    try:
        store.check_writable()
    except AuditUnavailable as exc:
        raise ConfigError(f"--audit-db {path}: cannot write the audit log ({store.problem()})") from exc
    finally:
        store.close()


def _hosts(host: str, extra: tuple[str, ...], local: tuple[str, ...]) -> tuple[str, ...]:
    """Host names to answer to: the local ones, the bind address, and for 0.0.0.0/:: this machine's names."""
    names = [*local, host, *extra]
    if host in ("0.0.0.0", "::", ""):
        fqdn = socket.getfqdn()
        names += [socket.gethostname(), fqdn]
        with contextlib.suppress(OSError):
            names += socket.gethostbyname_ex(socket.gethostname())[2]
    return tuple(dict.fromkeys(n for n in names if n and n not in ("0.0.0.0", "::")))


def _listen(host: str, port: int) -> socket.socket:
    """A bound listening socket for uvicorn; a one-line error when the address is taken or invalid."""
    from pneumo.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = "another program (another pneumo serve?) is using it; choose another --port" \
            if exc.errno == errno.EADDRINUSE else "choose another --host/--port"
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    sock.set_inheritable(True)
    return sock


@click.group()
def audit() -> None:
    """Read the server's audit log (no pixels or patient data are ever stored in it)."""


@audit.command("export")
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(path_type=Path))
@click.option("--since", required=True, help="First date/time to include (UTC), e.g. 2026-01-31 or 2026-01-31T08:00.")
@click.option("--until", default=None, help="Exclude rows from this date/time on (UTC).")
@click.option("--out", default="-", show_default=True, type=click.Path(allow_dash=True),  # str: keeps a trailing /
              help="CSV file to write ('-': stdout).")
@run_safely
def export(db, since, until, out):
    """Write audit rows since a date as CSV (one row per prediction request)."""
    from pneumo.bundle import atomic_write_bytes
    from pneumo.errors import ConfigError
    from pneumo.server.audit_store import AuditStore, parse_since

    if not Path(db).exists():
        raise ConfigError(f"{db}: no audit database here (pass --db PATH)")
    if str(out) != "-" and (str(out).endswith(("/", os.sep)) or Path(out).is_dir()):
        raise ConfigError(f"--out {out}: is a directory; give a CSV file name, e.g. {Path(out) / 'audit.csv'}")
    store = AuditStore(db)
    try:
        lo, hi = parse_since(since), (parse_since(until, "--until") if until else None)
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


@audit.command("monitor")
@click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(path_type=Path))
@click.option("--since", default=None,
              help=f"First date/time to include (UTC), e.g. 2026-01-31 (default: {MONITOR_WINDOW_DAYS} days ago).")
@click.option("--until", default=None, help="Exclude rows from this date/time on (UTC).")
@click.option("--bundle", default=None, type=click.Path(path_type=Path),
              help="The served model, for its validation score reference (default: the shipped model).")
@click.option("--bucket", default="day", show_default=True, type=click.Choice(["day", "week"]))
@click.option("--json", "as_json", is_flag=True, help="Print the same JSON as GET /api/v1/monitor.")
@run_safely
def monitor(db, since, until, bundle, bucket, as_json):
    """Drift and health of the served model since a date: the figures of the /monitor page.

    Exits 1 when an alarm is raised (bounds: $PNEUMO_MONITOR_BOUNDS, see docs/monitoring.md).
    """
    import json

    from pneumo.bundle_meta import check_meta
    from pneumo.errors import BundleError, ConfigError
    from pneumo.monitoring import Bounds, summarise
    from pneumo.monitoring.text import format_summary
    from pneumo.server.audit_store import AuditStore, parse_since

    if not Path(db).exists():
        raise ConfigError(f"{db}: no audit database here (pass --db PATH)")
    meta_path = Path(bundle or _default_bundle()) / "pneumo.json"
    try:  # plain JSON, not pneumo.bundle: this command starts without loading torch
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{meta_path.parent}: not a readable model bundle ({exc})") from exc
    check_meta(meta, meta_path)  # the typed check load_bundle makes, without loading the model
    if since is None:
        import datetime as dt

        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=MONITOR_WINDOW_DAYS)).isoformat()
    lo, hi = parse_since(since), (parse_since(until, "--until") if until else None)
    store = AuditStore(db)
    try:
        rows = list(store.rows(lo, hi))
    finally:
        store.close()
    summary = summarise(rows, meta, model_sha=meta.get("weights_sha256"), bucket=bucket, bounds=Bounds.from_env(),
                        since=lo, until=hi)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    if summary["alarms"]:
        sys.exit(1)
