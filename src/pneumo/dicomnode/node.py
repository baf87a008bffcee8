"""``DicomNode``: a C-STORE SCP that runs every received film through pneumo and sends the results on.

Three kinds of threads, each bounded: pynetdicom's association threads (at most
``max_associations``) only write the instance to the spool and answer the C-STORE, so a flood is
queued on disk, never dropped or timed out; ``workers`` inference threads turn spooled instances
into results (the same ``read_image`` → ``preprocess`` → model → gate path as ``pneumo predict`` and
the web app); one sender thread delivers queued results to the destination with retries and
backoff. Logs and the audit log carry SHA-256 hashes of UIDs, never patient or study attributes.
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
from pneumo.dicomnode import picture, results
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
        self._stopping = threading.Event()
        self._server = None
        self._sender: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        resumed = self.spool.unfinished_inbound()
        for inbound_id, name in resumed:
            self.pool.submit(self._process, inbound_id, name)
        self._sender = threading.Thread(target=self._send_loop, name="pneumo-dicom-send", daemon=True)
        self._sender.start()
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_associations = self.settings.max_associations
        ae.require_called_aet = True
        if self.settings.allow_callers:
            ae.require_calling_aet = list(self.settings.allow_callers)
        for t in ("acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, t, self.settings.timeout_s)
        ae.add_supported_context(Verification)
        syntaxes = transfer_syntaxes()
        for sop in [*CHEST_CLASSES, *OTHER_CLASSES]:
            ae.add_supported_context(sop, syntaxes)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, _on_rejected)]
        try:
            self._server = ae.start_server((self.settings.host, self.settings.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.settings.host}:{self.settings.port} "
                              f"({exc.strerror or exc})") from exc
        log.info("listening as %s on %s:%d, sending to %s; %d received instance(s) resumed, %d result(s) pending",
                 self.settings.ae_title, self.settings.host, self.settings.port, self.settings.send_to,
                 len(resumed), self.spool.status()["pending"])

    def stop(self) -> None:
        """Stop listening, finish the instance in hand, leave the rest spooled for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._sender is not None:
            self._sender.join(timeout=self.settings.timeout_s + 5)
        self.audit.close()
        self.spool.close()

    # -- receiving ----------------------------------------------------------------------------
    def _on_store(self, event) -> int:
        """Spool the instance durably, queue it for the model, answer at once (0xA700 if the disk fails)."""
        name = f"{uuid.uuid4().hex}.dcm"
        try:
            data = event.encoded_dataset(include_meta=True)
            _write_durably(self.spool.inbox / name, data)
            sop_hash = uid_hash(event.request.AffectedSOPInstanceUID)
            inbound_id = self.spool.add_inbound(sop_hash, name)
        except Exception as exc:  # noqa: BLE001 - answer the modality; it will resend
            log.error("could not spool an instance from %s: %s", event.assoc.requestor.ae_title, type(exc).__name__)
            return 0xA700
        log.info("received #%d sop=%s from %s", inbound_id, sop_hash[:12], event.assoc.requestor.ae_title)
        self.pool.submit(self._process, inbound_id, name)
        return 0x0000

    # -- the model ----------------------------------------------------------------------------
    def _process(self, inbound_id: int, name: str) -> None:
        path = self.spool.inbox / name
        t0 = time.perf_counter()
        try:
            outcome, queued = self._analyse(inbound_id, path, t0)
        except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the node
            log.error("#%d: no result (%s)", inbound_id, type(exc).__name__)
            self.audit.record(AuditRow(request_id=f"dicom-inbound:{inbound_id}", outcome="error", format="DICOM",
                                       error_code="internal", latency_ms=(time.perf_counter() - t0) * 1e3))
            outcome, queued = "error", []
        self.spool.finish_inbound(inbound_id, outcome, queued)
        path.unlink(missing_ok=True)
        self._wake.set()

    def _analyse(self, inbound_id: int, path: Path, t0: float) -> tuple[str, list[tuple[str, str]]]:
        """One spooled instance through the analysis service (:mod:`pneumo.analysis`) → the SR/SC to send."""
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
        pred = a.prediction if a is not None else None
        if a is not None:
            if a.meta is not None:
                row.width, row.height = a.meta.width, a.meta.height
            row.flags = ",".join(c for c, _ in a.flags) or None
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
            if a.headline:
                lines.insert(1, a.headline)
            rgb = picture.render(a.pixels, ev.heatmap, lines)
            queued.append(("sr", self._write(results.build_sr(header, m, pred, None, a.headline), inbound_id, "sr")))
            queued.append(("sc", self._write(results.build_sc(header, m, rgb), inbound_id, "sc")))
        elif self.settings.refused_sr:
            queued.append(("sr", self._write(results.build_sr(header, m, pred, refusal), inbound_id, "sr")))
        row.latency_ms = (time.perf_counter() - t0) * 1e3
        self.audit.record(row)
        p = "" if a is None or not a.accepted else f" p={a.probability:.4f} {a.decision}"
        log.info("done #%d sop=%s outcome=%s%s%s in %.0f ms, %d result(s) queued", inbound_id, sop_hash[:12],
                 row.outcome, f" ({row.error_code})" if row.error_code else "", p, row.latency_ms, len(queued))
        return row.outcome, queued

    def _write(self, ds, inbound_id: int, kind: str) -> str:
        name = f"{inbound_id}-{kind}-{uuid.uuid4().hex[:8]}.dcm"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        _write_durably(self.spool.outbox / name, buf.getvalue())
        return name

    # -- sending ------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            due = self.spool.due(time.time())
            if not due:
                nxt = self.spool.next_due()
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
    """Write, fsync, then rename: a file in the spool is either whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


__all__ = ["DicomNode", "Destination", "NodeSettings"]
