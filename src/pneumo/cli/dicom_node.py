"""``pneumo dicom-node``: receive chest films from a PACS or modality by C-STORE, send results back."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from pneumo.cli.common import emit_json, json_option, run_safely
from pneumo.cli.serve import DEFAULT_DB
from pneumo.paths import output_dir

DEFAULT_SPOOL = str(output_dir("dicom-spool"))  # per user (pneumo.paths), not the current folder


def _callers(value: str | None) -> tuple[str, ...]:
    return tuple(a.strip() for a in (value or "").split(",") if a.strip())


def _print_status(status: dict) -> None:
    click.echo(f"spool {status['spool']}: {status['received_waiting']} received instance(s) waiting for the model, "
               f"{status['received_done']} done")
    click.echo(f"results: {status['pending']} pending, {status['sent']} sent, {status['failed']} failed")
    for r in status["not_sent"]:
        when = "given up" if r["state"] == "failed" else f"next try in {r['next_try_in_s']} s"
        click.echo(f"  #{r['id']} {r['kind']} {r['state']}: {r['attempts']} attempt(s), {when}; "
                   f"{r['last_error'] or ''}")


@click.command("dicom-node")
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--ae-title", default="PNEUMO", show_default=True, help="This node's AE title.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=11112, show_default=True, type=click.IntRange(1, 65535))
@click.option("--send-to", default=None, metavar="AET@HOST:PORT", help="Where results go (the PACS).")
@click.option("--allow-callers", default=None, metavar="AET,...",
              help="Only these calling AE titles may associate (default: any).")
@click.option("--spool", default=DEFAULT_SPOOL, show_default=True, type=click.Path(path_type=Path),
              help="Folder of the on-disk queue (received instances, results to send).")
@click.option("--audit-db", default=DEFAULT_DB, show_default=True, type=click.Path(path_type=Path),
              help="SQLite audit log, the same file `pneumo serve` uses.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Inference threads.")
@click.option("--max-associations", default=32, show_default=True, type=click.IntRange(1, 1000))
@click.option("--refused", type=click.Choice(["sr", "audit"]), default="sr", show_default=True,
              help="A refused instance gets an SR saying why (sr) or only an audit row (audit).")
@click.option("--retry-base", default=5.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds before the first resend; doubles each failure.")
@click.option("--retry-max", default=300.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Longest wait between resends (s).")
@click.option("--max-attempts", default=50, show_default=True, type=click.IntRange(1, 10000),
              help="Give a result up (state failed) after this many tries.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Network/DIMSE timeout (s).")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnx"]))
@click.option("--status", "show_status", is_flag=True, help="Show pending/failed sends of --spool and exit.")
@click.option("--requeue-failed", is_flag=True, help="With --status: give failed sends a fresh start.")
@json_option
@run_safely
def dicom_node(bundle, ae_title, host, port, send_to, allow_callers, spool, audit_db, workers, max_associations,
               refused, retry_base, retry_max, max_attempts, timeout_s, backend, show_status, requeue_failed, as_json):
    """A DICOM node for BUNDLE (default: the shipped model): C-STORE SCP (+ C-ECHO) for CR, DX and
    Secondary Capture chest films; each film's Structured Report and heatmap Secondary Capture are
    sent to --send-to, into the film's study. Decision support, not a diagnosis.

    Results wait in --spool until delivered (retries with backoff, kept across restarts);
    `pneumo dicom-node --status` shows what is pending or failed.
    """
    import logging

    from pneumo.dicomnode.spool import Spool
    from pneumo.errors import ConfigError

    if show_status:
        store = Spool(spool, create=False)
        try:
            if requeue_failed:
                click.echo(f"{store.requeue_failed()} failed result(s) queued again", err=True)
            status = store.status()
        finally:
            store.close()
        emit_json(status) if as_json else _print_status(status)
        return
    if not send_to:
        raise ConfigError("--send-to AET@HOST:PORT is required (where the results go)")
    from pneumo.cli.serve import _default_bundle
    from pneumo.dicomnode.node import Destination, DicomNode, NodeSettings  # lazy: torch + pynetdicom

    Path(audit_db).parent.mkdir(parents=True, exist_ok=True)
    settings = NodeSettings(
        send_to=Destination.parse(send_to), spool=spool, audit_db=audit_db, ae_title=ae_title, host=host, port=port,
        allow_callers=_callers(allow_callers), workers=workers, max_associations=max_associations,
        refused_sr=refused == "sr", retry_base_s=retry_base, retry_max_s=retry_max, max_attempts=max_attempts,
        timeout_s=timeout_s, backend=backend,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("pynetdicom", "highdicom"):  # their INFO lines echo dataset contents and UIDs
        logging.getLogger(name).setLevel(logging.WARNING)
    node = DicomNode(bundle or _default_bundle(), settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    node.start()
    click.echo(f"pneumo: DICOM node {ae_title} on {host}:{port} → {settings.send_to} (spool {spool}, audit {audit_db})",
               err=True)
    try:
        while not done.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
