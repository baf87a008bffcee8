"""``DicomNode``: a C-STORE SCP that runs every received film through pneumo and sends the results on.

Four kinds of threads, each bounded: pynetdicom's association threads (at most
``max_associations``, each read bounded by ``--timeout``) stream the instance to the spool
(:mod:`~pneumo.dicomnode.receive`: at most one PDU in memory), refuse what can never be answered and
answer the C-STORE, so a flood is queued on disk, never dropped or timed out; one dispatcher hands
due instances (new, resumed, retried after a backoff, requeued from ``dead/``) to ``workers``
inference threads, which turn them into results (the same analysis as ``pneumo predict`` and the web
app); one sender thread delivers queued results with retries and backoff. Every instance answered
0x0000 ends with results queued, a refusal SR, or in the dead-letter folder (visible in ``--status``
and the audit log). Logs and the audit log carry SHA-256 hashes of UIDs, never patient or study
attributes (:mod:`~pneumo.dicomnode.logs`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import uid as uids
from pydicom.pixels import get_decoder
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from pneumo.analysis import Analyser, Analysis
from pneumo.bundle import load_bundle
from pneumo.data.imageio import DEFAULT_MAX_PIXELS
from pneumo.dicomnode import picture, receive, results
from pneumo.dicomnode.spool import Spool
from pneumo.errors import ConfigError, ImageError
from pneumo.inference import Predictor
from pneumo.server.audit_store import AuditRow, AuditStore

log = logging.getLogger("pneumo.dicomnode")

CHEST_CLASSES = {
    uids.ComputedRadiographyImageStorage: "CR",
    uids.DigitalXRayImageStorageForPresentation: "DX (for presentation)",
    uids.DigitalXRayImageStorageForProcessing: "DX (for processing)",
    uids.SecondaryCaptureImageStorage: "Secondary Capture",
}
# Accepted only to be refused with a reason in the study: a misrouted CT or MR series then shows
# pneumo's refusal in the viewer instead of failing the transfer at the PACS.
OTHER_CLASSES = {
    uids.CTImageStorage: "CT",
    uids.EnhancedCTImageStorage: "Enhanced CT",
    uids.MRImageStorage: "MR",
    uids.EnhancedMRImageStorage: "Enhanced MR",
    uids.UltrasoundImageStorage: "Ultrasound",
    uids.DigitalMammographyXRayImageStorageForPresentation: "Mammography",
    uids.XRayAngiographicImageStorage: "X-ray angiography",
    uids.NuclearMedicineImageStorage: "Nuclear medicine",
}
UNCOMPRESSED = [uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian, uids.DeflatedExplicitVRLittleEndian]
COMPRESSED = [
    uids.JPEGLosslessSV1, uids.JPEGLossless, uids.JPEGBaseline8Bit, uids.JPEGExtended12Bit, uids.JPEGLSLossless,
    uids.JPEGLSNearLossless, uids.JPEG2000Lossless, uids.JPEG2000, uids.RLELossless,
]
STORE_OK = {0x0000, 0xB000, 0xB006, 0xB007}  # success and the warnings that still mean "stored"
RESULT_CLASSES = [uids.ComprehensiveSRStorage, uids.SecondaryCaptureImageStorage]
def uid_hash(value) -> str:
    return hashlib.sha256(str(value).encode("ascii", "replace")).hexdigest()


def transfer_syntaxes() -> list[str]:
    """Uncompressed syntaxes plus every compressed one this installation can decode."""
    out = list(UNCOMPRESSED)
    for ts in COMPRESSED:
        try:
            if get_decoder(ts).is_available:
                out.append(ts)
        except (NotImplementedError, ValueError):
            continue
    return out


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@HOST:PORT`` → a destination (a one-line error otherwise)."""
        aet, at, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not (at and colon and aet and host and port.isdigit() and 0 < int(port) < 65536 and len(aet) <= 16):
            raise ConfigError(f"--send-to {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@10.0.0.5:4242")
        return cls(aet, host, int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeSettings:
    send_to: Destination
    spool: Path
    audit_db: Path
    ae_title: str = "PNEUMO"
    host: str = "127.0.0.1"
    port: int = 11112
    allow_callers: tuple[str, ...] = ()
    workers: int = 2
    max_associations: int = 32
    refused_sr: bool = True
    retry_base_s: float = 5.0
    retry_max_s: float = 300.0
    max_attempts: int = 50
    timeout_s: float = 30.0
    min_side: int = 32
    max_pixels: int = DEFAULT_MAX_PIXELS
    backend: str = "auto"
    max_instance_mb: float = 512.0


class DicomNode:
    """One running node: bundle loaded once, spool and audit log opened, threads started by :meth:`start`."""

    def __init__(self, bundle_path: str | Path, settings: NodeSettings):
        if not 0 < len(settings.ae_title) <= 16:
            raise ConfigError(f"--ae-title {settings.ae_title!r}: 1 to 16 characters")
        self.settings = settings
        self.bundle = load_bundle(bundle_path)
        self.predictor = Predictor(self.bundle, backend=settings.backend, threads=1)
        self.analyser = Analyser(self.predictor, max_pixels=settings.max_pixels, min_side=settings.min_side)
        self.model = results.ModelInfo.of(self.bundle, has_gate=self.analyser.has_gate)
        self.spool = Spool(settings.spool)
        self.audit = AuditStore(settings.audit_db)
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="pneumo-dicom")
        self._wake = threading.Event()
        self._inbound_wake = threading.Event()
        self._stopping = threading.Event()
        self._server = None
        self._threads: list[threading.Thread] = []
        self._inflight: set[int] = set()
        self._inflight_lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        receive.install(self.spool.root / "tmp", int(s.max_instance_mb * 2**20))
        receive.sweep(self.spool.root / "tmp", older_than_s=0)  # a previous run's half-received instances
        resumed = len(self.spool.unfinished_inbound())
        for target, name in ((self._send_loop, "pneumo-dicom-send"), (self._dispatch_loop, "pneumo-dicom-dispatch")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.require_called_aet = True
        if s.allow_callers:
            ae.require_calling_aet = list(s.allow_callers)
        for attr in ("acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, attr, s.timeout_s)
        ae.add_supported_context(Verification)
        syntaxes = transfer_syntaxes()
        for sop in CHEST_CLASSES:
            ae.add_supported_context(sop, syntaxes)
        for sop in OTHER_CLASSES:  # refused from the header, never decoded: any syntax will do
            ae.add_supported_context(sop, [*UNCOMPRESSED, *COMPRESSED])
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, _on_rejected),
                    (evt.EVT_CONN_OPEN, self._on_connect)]
        try:
            self._server = ae.start_server((s.host, s.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {s.host}:{s.port} ({exc.strerror or exc})") from exc
        log.info("listening as %s on %s:%d, sending to %s; %d received instance(s) resumed, %d result(s) pending",
                 s.ae_title, s.host, s.port, s.send_to, resumed, self.spool.status()["pending"])

    def stop(self) -> None:
        """Stop listening, finish the instance in hand, leave the rest spooled for the next start."""
        self._stopping.set()
        self._wake.set()
        self._inbound_wake.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:  # the dispatcher first, so nothing is submitted to a pool being shut down
            t.join(timeout=self.settings.timeout_s + 5)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.audit.close()
        self.spool.close()

    # -- receiving ----------------------------------------------------------------------------
    def _on_connect(self, event) -> None:
        """Bound every read on an accepted socket by ``--timeout``: pynetdicom leaves accepted sockets
        blocking, so a peer that sends half a PDU and waits held its association (and, 32 of them, every
        slot) for ever. A timed-out read closes that connection like a dropped one."""
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            sock.settimeout(self.settings.timeout_s)

    def _on_store(self, event) -> int:
        """Refuse what can never be answered; spool the rest durably and answer at once (0xA700 if the disk fails)."""
        status, f, why = receive.check(event)
        caller = event.assoc.requestor.ae_title
        if status is not None or f is None:
            receive.discard(f)
            log.warning("refused an instance from %s: 0x%04X (%s)", caller, status, why)
            return status if status is not None else receive.CANNOT_UNDERSTAND
        name = f"{uuid.uuid4().hex}.dcm"
        sop_hash = uid_hash(event.request.AffectedSOPInstanceUID)
        try:
            receive.spool_into(f, self.spool.inbox / name)
            inbound_id = self.spool.add_inbound(sop_hash, name)
        except Exception as exc:  # noqa: BLE001 - answer the modality; it will resend
            receive.discard(f)
            (self.spool.inbox / name).unlink(missing_ok=True)
            log.error("could not spool an instance from %s: %s", caller, type(exc).__name__)
            return receive.OUT_OF_RESOURCES
        log.info("received #%d sop=%s from %s", inbound_id, sop_hash[:12], caller)
        self._inbound_wake.set()
        return 0x0000

    # -- the model ----------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        """Hand due instances (new, resumed, retried after a backoff, requeued from dead/) to the workers."""
        tmp, last_sweep = self.spool.root / "tmp", time.monotonic()
        while not self._stopping.is_set():
            self._inbound_wake.clear()
            try:
                with self._inflight_lock:
                    for inbound_id, name, attempts in self.spool.due_inbound(time.time()):
                        if inbound_id not in self._inflight:
                            self._inflight.add(inbound_id)
                            self.pool.submit(self._process, inbound_id, name, attempts)
                if time.monotonic() - last_sweep > self.settings.timeout_s:
                    receive.sweep(tmp, older_than_s=2 * self.settings.timeout_s + 5)
                    last_sweep = time.monotonic()
                nxt = self.spool.next_inbound_due()
            except Exception as exc:  # noqa: BLE001 - e.g. the spool's disk is full: try again shortly
                log.error("dispatcher: %s", type(exc).__name__)
                nxt = None
            self._inbound_wake.wait(1.0 if nxt is None else min(1.0, max(0.05, nxt - time.time())))

    def _process(self, inbound_id: int, name: str, attempts: int) -> None:
        """One instance → results queued and one audit row; or a retry after a backoff (results not
        written: disk full); or the dead-letter folder (cannot be answered, or out of attempts)."""
        path, t0 = self.spool.inbox / name, time.perf_counter()
        written: list[str] = []
        try:
            row, queued = self._analyse(inbound_id, path, t0, written)
            self.spool.finish_inbound(inbound_id, row.outcome, queued)
        except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the node
            for out_name in written:
                (self.spool.outbox / out_name).unlink(missing_ok=True)
            self._failed_try(inbound_id, path, attempts, exc, t0)
        else:
            self._record(row)
            path.unlink(missing_ok=True)
            self._wake.set()
        finally:
            with self._inflight_lock:
                self._inflight.discard(inbound_id)

    def _failed_try(self, inbound_id: int, path: Path, attempts: int, exc: Exception, t0: float) -> None:
        s, why = self.settings, f"{type(exc).__name__}" + (f" errno {exc.errno}" if isinstance(exc, OSError) else "")
        if isinstance(exc, OSError) and attempts + 1 < s.max_attempts and path.exists():
            n = self.spool.retry_inbound(inbound_id, why, base_s=s.retry_base_s, max_s=s.retry_max_s)
            log.warning("#%d: results not written (%s), attempt %d; retrying after a backoff", inbound_id, why, n)
            return
        try:
            if path.exists():
                path.replace(self.spool.dead / path.name)
            self.spool.fail_inbound(inbound_id, why)
        except Exception as exc2:  # noqa: BLE001 - the row stays 'received' and is retried
            log.error("#%d: could not move to dead/ (%s)", inbound_id, type(exc2).__name__)
            return
        log.error("#%d: no result (%s); kept in dead/ (pneumo dicom-node --status --retry-dead)", inbound_id, why)
        self._record(AuditRow(request_id=f"dicom-inbound:{inbound_id}", outcome="error", format="DICOM",
                              model_name=self.model.name, model_version=self.model.version,
                              model_sha256=self.model.weights_sha256, error_code="dead_letter",
                              latency_ms=(time.perf_counter() - t0) * 1e3))

    def _record(self, row: AuditRow) -> None:
        """The film's one audit row, written once its final state is (results queued, or dead-letter)."""
        try:
            self.audit.record(row)
        except Exception as exc:  # noqa: BLE001 - the film is answered; say the row is missing
            log.error("audit row for %s not written (%s)", row.request_id[:18], type(exc).__name__)

    def _analyse(self, inbound_id: int, path: Path, t0: float, written: list[str]) -> tuple[AuditRow, list]:
        """One spooled instance through the analysis service (:mod:`pneumo.analysis`) → the SR/SC to send.

        Result files are appended to ``written`` as they are made, so a failure part-way removes them.
        """
        data = path.read_bytes()
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        sop_hash = uid_hash(header.SOPInstanceUID)
        m = self.model
        row = AuditRow(request_id=f"dicom:{sop_hash}", outcome="error", format="DICOM", model_name=m.name,
                       model_version=m.version, model_sha256=m.weights_sha256,
                       image_sha256=hashlib.sha256(data).hexdigest())
        a: Analysis | None = None
        refusal: str | None = None
        sop_class = str(header.get("SOPClassUID", ""))
        if sop_class not in CHEST_CLASSES:
            kind = OTHER_CLASSES.get(sop_class, "this object")
            refusal, row.error_code = (f"{kind} is not a chest radiograph; pneumo reads CR, DX and Secondary "
                                       "Capture chest films only."), "not_a_radiograph"
        else:
            try:
                a = self.analyser.analyse(data, heatmap=True)
            except ImageError as exc:
                refusal, row.error_code = str(exc).removeprefix("<bytes>: "), exc.code
        del data
        pred = a.prediction if a is not None else None
        flags = a.flags if a is not None else ([("not_a_radiograph", refusal or "")] if refusal else [])
        row.flags = ",".join(c for c, _ in flags) or None
        if a is not None:
            if a.meta is not None:
                row.width, row.height = a.meta.width, a.meta.height
            if pred is not None:
                row.ood_score, row.ood_flag = pred.ood_score, (pred.ood if m.has_gate else None)
                row.population = pred.population
            if a.accepted:
                row.probability, row.decision = a.probability, a.decision
            else:
                refusal, row.error_code = a.headline, a.code
        row.outcome = "ok" if refusal is None else ("refused_ood" if a is not None and a.refused else "error")
        queued: list[tuple[str, str]] = []
        if refusal is None:
            if a is None or pred is None or a.pixels is None or a.evidence is None:
                raise RuntimeError("no refusal but no accepted analysis")
            ev = a.evidence
            lines = results.caption(m, pred, ev.shows)
            lines.insert(1, results.checks_line(pred, flags))
            if a.headline:
                lines.insert(1, a.headline)
            film = a.display_pixels(picture.MAX_SIDE)
            rgb = picture.render(a.pixels if film is None else film, ev.heatmap, lines)
            sr = results.build_sr(header, m, pred, None, a.headline, flags=flags)
            queued.append(("sr", self._write(sr, inbound_id, "sr", written)))
            queued.append(("sc", self._write(results.build_sc(header, m, rgb), inbound_id, "sc", written)))
        elif self.settings.refused_sr:
            sr = results.build_sr(header, m, pred, refusal, flags=flags, refusal_code=row.error_code)
            queued.append(("sr", self._write(sr, inbound_id, "sr", written)))
        row.latency_ms = (time.perf_counter() - t0) * 1e3
        p = "" if a is None or not a.accepted else f" p={a.probability:.4f} {a.decision}"
        log.info("done #%d sop=%s outcome=%s%s%s population=%s in %.0f ms, %d result(s) queued", inbound_id,
                 sop_hash[:12], row.outcome, f" ({row.error_code})" if row.error_code else "", p,
                 row.population or "-", row.latency_ms, len(queued))
        return row, queued

    def _write(self, ds, inbound_id: int, kind: str, written: list[str]) -> str:
        name = f"{inbound_id}-{kind}-{uuid.uuid4().hex[:8]}.dcm"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        written.append(name)
        _write_durably(self.spool.outbox / name, buf.getvalue())
        return name

    # -- sending ------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                due = self.spool.due(time.time())
                nxt = None if due else self.spool.next_due()
            except Exception as exc:  # noqa: BLE001 - e.g. the spool's disk is full: try again shortly
                log.error("sender: %s", type(exc).__name__)
                due, nxt = [], None
            if not due:
                self._wake.wait(1.0 if nxt is None else min(1.0, max(0.05, nxt - time.time())))
                continue
            try:
                self._send_batch(due)
            except Exception as exc:  # noqa: BLE001 - keep the sender alive; the rows stay pending
                log.error("sender: %s", type(exc).__name__)
                self._retry(due, f"sender error {type(exc).__name__}")

    def _retry(self, rows, why: str) -> None:
        s = self.settings
        for outbound_id, kind, _, attempts in rows:
            self.spool.mark_failed_try(outbound_id, why, base_s=s.retry_base_s, max_s=s.retry_max_s,
                                       max_attempts=s.max_attempts)
            log.warning("send #%d (%s) failed, attempt %d: %s", outbound_id, kind, attempts + 1, why)

    def _send_batch(self, rows) -> None:
        dest, s = self.settings.send_to, self.settings
        ae = AE(ae_title=s.ae_title)
        for t in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, t, s.timeout_s)
        for sop in RESULT_CLASSES:
            ae.add_requested_context(sop, [uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian])
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else "no association (down, unreachable or aborted)"
            self._retry(rows, f"{dest}: {why}")
            return
        try:
            for row in rows:
                if self._stopping.is_set() or not assoc.is_established:
                    break
                outbound_id, kind, name, _ = row
                path = self.spool.outbox / name
                if not path.exists():
                    self.spool.mark_failed_try(outbound_id, "result file missing from the spool", base_s=0, max_s=0,
                                               max_attempts=1)
                    continue
                status = assoc.send_c_store(pydicom.dcmread(path))
                code = getattr(status, "Status", None)
                if code in STORE_OK:
                    self.spool.mark_sent(outbound_id)
                    path.unlink(missing_ok=True)
                    log.info("sent #%d (%s) to %s", outbound_id, kind, dest)
                else:
                    why = "no answer (timeout or abort)" if code is None else f"C-STORE status 0x{int(code):04X}"
                    self._retry([row], why)
        finally:
            if assoc.is_established:
                assoc.release()


def _on_rejected(event) -> None:
    log.warning("association from %s@%s rejected (calling AE title not allowed or called AE title wrong)",
                event.assoc.requestor.ae_title, event.assoc.requestor.address)


def _write_durably(path: Path, data: bytes) -> None:
    """Write, fsync, then rename: a file in the spool is either whole or absent (the temp file is
    removed when any step fails, e.g. a full disk)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["DicomNode", "Destination", "NodeSettings"]
