"""Issue 22: every film that goes into the node comes back with an answer, in objects a PACS validator
accepts, and the node's log names nobody.

Real chest DICOMs (the shared val originals, re-encoded as CR with missing and non-conformant
attributes, MONOCHROME1, implicit VR, JPEG baseline, JPEG 2000) and the real DICOMs of
external_dev are sent to `pneumo dicom-node` (dcmtk's `storescu` and pynetdicom) beside a real
Orthanc. For each: a result (SR + SC) or a refusal SR in its study, or a refusal in the C-STORE
response for an instance that can never be answered; `--status` clean; Debian's `dciodvfy` finds no
Error in any object the node made; no source's patient name (and no traceback) in the node's log.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE, _config

from pneumo.inference import default_bundle_path
from pneumo.server.audit_store import AuditStore
from server_support import free_port
from test_dicom_node_support import SCU_AET, Node, Orthanc, c_store, chest_dicom, need_orthanc, sr_all, sr_values

pytestmark = pytest.mark.slow
DCIODVFY = shutil.which("dciodvfy")
STORESCU = shutil.which("storescu")


def _film(image: Path, name: str, **changes) -> Dataset:
    """A chest CR of a shared film in a study of its own, with ``changes`` (None deletes the attribute)."""
    ds = pydicom.dcmread(io.BytesIO(chest_dicom(image, generate_uid())))
    ds.PatientName = name
    for kw, value in changes.items():
        if value is None:
            delattr(ds, kw)
        else:
            setattr(ds, kw, value)
    return ds


def _monochrome1_implicit(image: Path, name: str) -> Dataset:
    ds = _film(image, name)
    ds.PixelData = (4095 - ds.pixel_array).astype(np.uint16).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _jpeg_baseline(image: Path, name: str) -> Dataset:
    ds = _film(image, name)
    eight = (ds.pixel_array >> 4).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(eight, mode="L").save(buf, format="JPEG", quality=90)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    return ds


def _jpeg2000(image: Path, name: str) -> Dataset:
    ds = _film(image, name)
    ds.compress(JPEG2000Lossless)
    return ds


def odd_films(images: list[Path]) -> dict[str, Dataset]:
    """The issue's list of missing and non-conformant attributes, one film each, plus encodings."""
    long_name = "Longfamilyname" + "q" * 9986  # 10,000 characters, one component
    return {
        "no PatientName": _film(images[0], "", PatientName=None),
        "no PatientID": _film(images[1], "Nopid^Oswaldina", PatientID=None),
        "PatientSex X": _film(images[2], "Sexx^Perpetua", PatientSex="X"),
        "PatientAge 62": _film(images[3], "Agesixtytwo^Hortensia", PatientAge="62"),
        "StudyDate with dashes": _film(images[4], "Dashdate^Wilbrord", StudyDate="2026-01-15", StudyTime="10:15:00"),
        "no StudyID": _film(images[5], "Nostudyid^Clothilde", StudyID=None),
        "10,000-character name": _film(images[6], long_name),
        "BirthDate 00000000, identity removed Yes": _film(images[7], "Zerobirth^Eustachius",
                                                          PatientBirthDate="00000000", PatientIdentityRemoved="Yes"),
        "MONOCHROME1 implicit VR": _monochrome1_implicit(images[8], "Monoone^Philippa"),
        "JPEG baseline": _jpeg_baseline(images[9], "Jpegbase^Radegunde"),
        "JPEG 2000": _jpeg2000(images[10], "Jpegtwok^Sigismunda"),
    }


def _garbage_file(path: Path) -> Path:
    """A Part-10 file whose data set is random bytes after a valid file meta."""
    meta = Dataset()
    meta.file_meta = pydicom.dataset.FileMetaDataset()
    meta.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.file_meta.MediaStorageSOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    meta.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(buf, meta.file_meta, enforce_standard=True)
    rng = np.random.default_rng(22)
    path.write_bytes(b"\0" * 128 + b"DICM" + buf.getvalue() + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return path


def _send_raw(port: int, path: Path) -> int | None:
    """C-STORE a file's bytes as they are (pynetdicom's chunked send never parses the data set)."""
    meta = pydicom.filereader.read_file_meta_info(path)
    old, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        ae = AE(ae_title=SCU_AET)
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
        assert assoc.is_established
        try:
            return getattr(assoc.send_c_store(path), "Status", None)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


STORESCU_PROPOSE = {JPEG2000Lossless: "-xv", pydicom.uid.JPEGLosslessSV1: "-xs", JPEGBaseline8Bit: "-xy"}


def _storescu(port: int, path: Path) -> subprocess.CompletedProcess:
    """dcmtk's storescu, proposing the file's own (compressed) syntax so that it sends it as it is."""
    ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    propose = [STORESCU_PROPOSE[ts]] if ts in STORESCU_PROPOSE else []
    return subprocess.run([STORESCU, *propose, "-aet", SCU_AET, "-aec", "PNEUMO", "127.0.0.1", str(port), str(path)],
                          capture_output=True, text=True, timeout=120)


def _dciodvfy(path: Path) -> str:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def _names(ds: Dataset) -> list[str]:
    """The source's person names and their longer components (what must not reach the log)."""
    out = []
    for kw in ("PatientName", "ReferringPhysicianName"):
        text = str(ds.get(kw, "") or "")
        out += [t for t in {text, *text.replace("=", "^").split("^")} if len(t) >= 6]
    return out


@pytest.mark.timeout(1800)
def test_every_film_comes_back_with_an_answer_in_valid_objects(tmp_path, val_originals, external_dev):
    need_orthanc()
    if DCIODVFY is None or STORESCU is None:
        pytest.skip("dciodvfy (Debian dicom3tools) or storescu (dcmtk) missing: `make orthanc` installs them as root")
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", {"pneumo": ("PNEUMO", port)}).start()
    node = Node(tmp_path / "node", default_bundle_path(), pacs.send_to, port, "--retry-base", "0.2",
                "--retry-max", "1")
    films = odd_films([s.path for s in val_originals])
    externals = sorted(external_dev.glob("**/*.dcm"))
    sent: dict[str, Dataset] = {}  # what the node accepted: each must come back with an SR
    try:
        node.start()
        for label, ds in films.items():
            assert c_store(node.port, [ds]) == [0x0000], label
            sent[label] = ds
        for path in externals:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            uid_ok = all(pydicom.uid.UID(str(ds.get(k, ""))).is_valid
                         for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
            if uid_ok:
                result = _storescu(node.port, path)
                if result.returncode != 0:  # dcmtk cannot read a few of these files itself (explicit_VR-UN)
                    assert "Store Response" not in result.stderr, (path.name, result.stderr)
                    assert _send_raw(node.port, path) == 0x0000, path.name
                sent[path.name] = ds
            else:  # bad_sequence.dcm: its StudyInstanceUID is a hex digest (storescu will not send it)
                assert _send_raw(node.port, path) == 0xA900, path.name
        # never answerable: refused in the C-STORE response, not accepted and dropped
        no_study = _film(val_originals[11].path, "Nostudy^Bartholomea", StudyInstanceUID=None)
        assert c_store(node.port, [no_study]) == [0xA900]
        assert _send_raw(node.port, _garbage_file(tmp_path / "garbage.dcm")) in (0xA900, 0xC000)

        studies = {str(ds.StudyInstanceUID) for ds in sent.values()}
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            srs = {study: [pacs.dataset(i) for i in pacs.instances(study, "SR")] for study in studies}
            answered = {str(v["Source (attribute)"]) for s in srs.values() for v in map(sr_values, s)}
            if all(str(ds.SOPInstanceUID) in answered for ds in sent.values()):
                break
            time.sleep(1.0)
        missing = [k for k, ds in sent.items() if str(ds.SOPInstanceUID) not in answered]
        assert not missing, (missing, node.log.read_text()[-3000:])

        # a result (SR + SC) or a refusal SR saying why, for each
        accepted = 0
        for label, ds in sent.items():
            sr = next(s for s in srs[str(ds.StudyInstanceUID)]
                      if sr_values(s)["Source (attribute)"] == str(ds.SOPInstanceUID))
            v = sr_values(sr)
            if "Finding" in v:
                accepted += 1
                assert pacs.wait_for(str(ds.StudyInstanceUID), {"OT": 1}, timeout=300)["OT"], label
                assert v["Population check"] and v["Header policy check"], label
            else:
                assert v["Reason no result is given"] and len(sr_all(sr)["Comment"]) == 2, label
        assert accepted >= 8  # the re-encoded val films are real chest films
        st = node.status()
        deadline = time.monotonic() + 300
        while st["pending"] and time.monotonic() < deadline:
            time.sleep(0.5)
            st = node.status()
        assert (st["received_waiting"], st["received_failed"], st["pending"], st["failed"]) == (0, 0, 0, 0), st

        # every object the node made passes dciodvfy with no Error
        outputs = {}
        for study in studies:
            for modality in ("SR", "OT"):
                for oid in pacs.instances(study, modality):
                    f = tmp_path / f"{modality}-{oid}.dcm"
                    pacs.dataset(oid).save_as(f, enforce_file_format=True)
                    outputs[f] = _dciodvfy(f)
        errors = {f.name: [ln for ln in out.splitlines() if ln.startswith("Error")] for f, out in outputs.items()}
        assert not any(errors.values()), {k: v for k, v in errors.items() if v}
        sr_file = next(f for f in outputs if f.name.startswith("SR-"))
        sc_file = next(f for f in outputs if f.name.startswith("OT-"))
        print(f"\n{len(outputs)} objects, dciodvfy errors: 0\n--- dciodvfy SR ---\n{outputs[sr_file]}"
              f"--- dciodvfy SC ---\n{outputs[sc_file]}")

        # the audit log: one row per accepted film, with the population check and the flags
        rows = [r for r in AuditStore(node.audit_db).rows() if r["request_id"].startswith("dicom")]
        assert len(rows) == len(sent), [r["request_id"][:20] for r in rows]
        assert sum(r["population"] in ("typical", "atypical") for r in rows) == accepted
    finally:
        node.stop()
        pacs.stop()
    log = node.log.read_text(errors="replace")
    sources = [*sent.values(), no_study]
    leaks = [n for ds in sources for n in _names(ds) if n in log]
    assert not leaks, leaks
    assert "Traceback" not in log
