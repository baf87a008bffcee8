"""Helpers for the DICOM-node tests (no tests here): a real Orthanc per test, a real `pneumo dicom-node`
process, chest DICOMs written with pydicom from shared images, and a pynetdicom sender."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from pneumo.data import read_image
from server_support import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PATIENT_NAME = "Quixote^Zebulon^Testpatient"
PATIENT_ID = "FAKE-PID-44719"
SCU_AET = "TESTSCU"


def stop_process(proc: subprocess.Popen | None, log, sig: int, grace_s: float) -> None:
    """Signal a process this test started (by its own handle), kill it after ``grace_s``, close its log."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log.close()


def wait_until(cond, timeout: float, step: float = 0.2):
    """``cond()``'s first truthy value, polled every ``step`` s; its last value once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def need_orthanc() -> None:
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc is not installed (Debian package `orthanc`; `make orthanc` installs it as root)")


class Orthanc:
    """A real Orthanc with its own config and storage under ``root``; DICOM and HTTP on 127.0.0.1.

    Only the modalities declared here (at 127.0.0.1) may C-STORE into it: Orthanc 1.10 cannot bind
    its DICOM port to loopback, so ``DicomAlwaysAllowStore`` is off and the caller's host is checked.
    """

    def __init__(self, root: Path, modalities: dict[str, tuple[str, int]], aet: str = "ORTHANC"):
        self.root, self.aet = root, aet
        self.dicom_port, self.http_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        (root / "db").mkdir(parents=True, exist_ok=True)
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": f"pneumo-test-{aet}", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "DicomAet": aet, "DicomPort": self.dicom_port, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "Plugins": [], "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True, "DicomAssociationCloseDelay": 0,
            "DicomModalities": {name: [ae, "127.0.0.1", port] for name, (ae, port) in modalities.items()},
            "StableAge": 1, "ConcurrentJobs": 2, "HttpTimeout": 120, "DicomScuTimeout": 120,
        }))
        self.proc: subprocess.Popen | None = None

    @property
    def send_to(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = 30.0) -> Orthanc:
        self._log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([ORTHANC, str(self.config)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.root / "orthanc.log").read_text()[-1500:]
                raise RuntimeError(f"Orthanc exited {self.proc.returncode}: {log}")
            try:
                if httpx.get(self.url + "/system", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("Orthanc did not answer in time")

    def stop(self) -> None:
        stop_process(self.proc, self._log, signal.SIGTERM, grace_s=15)
        self.proc = None

    def upload(self, data: bytes) -> str:
        r = httpx.post(self.url + "/instances", content=data, timeout=30)
        r.raise_for_status()
        return r.json()["ID"]

    def store(self, modality: str, ids: list[str]) -> dict:
        r = httpx.post(f"{self.url}/modalities/{modality}/store", json={"Resources": ids, "Synchronous": True},
                       timeout=180)
        r.raise_for_status()
        return r.json()

    def series(self, study_uid: str) -> list[dict]:
        """Every series of the study (MainDicomTags + Instances), as Orthanc's REST API lists them."""
        r = httpx.post(self.url + "/tools/find", timeout=30,
                       json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
        r.raise_for_status()
        return r.json()

    def instances(self, study_uid: str, modality: str) -> list[str]:
        return [i for s in self.series(study_uid) if s["MainDicomTags"].get("Modality") == modality
                for i in s["Instances"]]

    def wait_for(self, study_uid: str, counts: dict[str, int], timeout: float) -> dict[str, list[str]]:
        """Poll until the study holds at least ``counts`` instances per modality, e.g. ``{"SR": 1, "OT": 1}``."""
        deadline = time.monotonic() + timeout
        while True:
            found = {m: self.instances(study_uid, m) for m in counts}
            if all(len(found[m]) >= n for m, n in counts.items()) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def dataset(self, orthanc_id: str) -> Dataset:
        r = httpx.get(f"{self.url}/instances/{orthanc_id}/file", timeout=30)
        r.raise_for_status()
        return pydicom.dcmread(io.BytesIO(r.content))


class Node:
    """`pneumo dicom-node` as a subprocess on 127.0.0.1 with its own spool, audit log and log file."""

    def __init__(self, root: Path, bundle: Path, send_to: str, port: int | None = None, *extra: str):
        self.root, self.port = root, port or free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.spool, self.audit_db, self.log = root / "spool", root / "audit.sqlite", root / "node.log"
        exe = Path(sys.executable).with_name("pneumo")
        self.cmd = [str(exe), "dicom-node", str(bundle), "--port", str(self.port), "--send-to", send_to,
                    "--spool", str(self.spool), "--audit-db", str(self.audit_db), *extra]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> Node:
        before = self.log.read_text().count("listening as") if self.log.exists() else 0
        self._log = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dicom-node exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if self.log.read_text().count("listening as") > before:
                return self
            time.sleep(0.1)
        raise RuntimeError("dicom-node did not start in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, self._log, sig, grace_s=30)
        self.proc = None

    def status(self) -> dict:
        exe = Path(sys.executable).with_name("pneumo")
        out = subprocess.run([str(exe), "dicom-node", "--status", "--spool", str(self.spool), "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)


def chest_dicom(image: Path, study_uid: str, number: int = 1, series_uid: str | None = None) -> bytes:
    """A CR Part-10 file (12-bit MONOCHROME2) of a shared X-ray, with a fake patient and a fresh SOP UID."""
    pixels, _ = read_image(image)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid or generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = PATIENT_NAME, PATIENT_ID, "20210611", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260115", "101500", "ACC-TEST-1", "1"
    ds.ReferringPhysicianName, ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "", "CR", "CHEST", "AP"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    arr = np.round(pixels * 4095).astype(np.uint16)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def c_store(port: int, datasets: list[Dataset], calling: str = SCU_AET, called: str = "PNEUMO") -> list[int | None]:
    """Send datasets over one association; the C-STORE status of each (``None``: not established)."""
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return [None] * len(datasets)
    try:
        return [getattr(assoc.send_c_store(ds), "Status", None) for ds in datasets]
    finally:
        assoc.release()


def sr_values(sr: Dataset) -> dict:
    """Concept-name meaning → value (number, code meaning, text, or referenced SOP UID) of a flat SR tree
    (the last one where a name repeats, e.g. Comment: see :func:`sr_all`)."""
    return {name: values[-1] for name, values in sr_all(sr).items()}


def sr_all(sr: Dataset) -> dict[str, list]:
    """Concept-name meaning → every value with that name, in order."""
    out: dict[str, list] = {}
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        kind = item.ValueType
        value: object = None
        if kind == "NUM":
            mv = item.MeasuredValueSequence[0]
            value = float(mv.FloatingPointValue) if "FloatingPointValue" in mv else float(mv.NumericValue)
        elif kind == "CODE":
            value = item.ConceptCodeSequence[0].CodeMeaning
        elif kind == "TEXT":
            value = str(item.TextValue)
        elif kind == "IMAGE":
            value = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        out.setdefault(name, []).append(value)
    return out


def files_text(*paths: Path) -> bytes:
    """Raw bytes of files (SQLite databases with their WAL included), to search for leaked patient data."""
    out = b""
    for p in paths:
        for f in (p, p.with_name(p.name + "-wal")):
            if f.exists():
                out += f.read_bytes()
    return out
