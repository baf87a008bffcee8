"""pneumo as a DICOM node beside a real PACS: Orthanc C-STOREs a chest film to `pneumo dicom-node`, which
sends a Structured Report and a heatmap Secondary Capture back into the same study."""

from __future__ import annotations

import io
import json
import statistics
import threading
import time
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pneumo.cli import main
from pneumo.inference import default_bundle_path
from pneumo.server.audit_store import AuditStore
from server_support import free_port
from test_dicom_node_support import (
    PATIENT_ID,
    PATIENT_NAME,
    Node,
    Orthanc,
    c_store,
    chest_dicom,
    files_text,
    need_orthanc,
    sr_all,
    sr_values,
)

pytestmark = pytest.mark.slow
BUNDLE = default_bundle_path()


@pytest.fixture(scope="module")
def pacs_and_node(tmp_path_factory):
    """Orthanc (pneumo declared as a modality) and a node whose --send-to is that Orthanc."""
    need_orthanc()
    root = tmp_path_factory.mktemp("pacs")
    node_port = free_port()
    pacs = Orthanc(root / "orthanc", {"pneumo": ("PNEUMO", node_port)}).start()
    node = Node(root / "node", BUNDLE, pacs.send_to, node_port, "--allow-callers", f"{pacs.aet},TESTSCU",
                "--retry-base", "0.2", "--retry-max", "1")
    try:
        node.start()
        yield pacs, node
    finally:
        node.stop()
        pacs.stop()


def _predict_cli(path: Path) -> float:
    res = CliRunner().invoke(main, ["predict", str(BUNDLE), str(path), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["rows"][0]["probability"]


@pytest.mark.timeout(1500)  # 20 round trips one by one; minutes only on a starved shared CPU
def test_round_trip_sr_and_sc_in_the_same_study(pacs_and_node, val_originals, tmp_path):
    pacs, node = pacs_and_node
    study = generate_uid()
    images = [s.path for s in val_originals]
    latencies, first = [], None
    for i in range(20):  # one at a time: the latency of a film arriving on a quiet node
        data = chest_dicom(images[i % len(images)], study, number=i + 1)
        oid = pacs.upload(data)
        t0 = time.perf_counter()
        assert pacs.store("pneumo", [oid])["FailedInstancesCount"] == 0
        found = pacs.wait_for(study, {"SR": i + 1}, timeout=300)
        latencies.append(time.perf_counter() - t0)
        assert len(found["SR"]) == i + 1, node.log.read_text()[-2000:]
        if first is None:
            first = data
            (tmp_path / "chest.dcm").write_bytes(data)
    found = pacs.wait_for(study, {"SR": 20, "OT": 20}, timeout=300)
    assert len(found["OT"]) == 20
    median = statistics.median(latencies)
    print(f"\nround trip C-STORE → SR visible in Orthanc: median {median * 1e3:.0f} ms of 20 "
          f"(min {min(latencies) * 1e3:.0f}, max {max(latencies) * 1e3:.0f})")

    src = pydicom.dcmread(io.BytesIO(first))
    srs = [pacs.dataset(i) for i in found["SR"]]
    sr = next(d for d in srs if sr_values(d)["Source (attribute)"] == src.SOPInstanceUID)
    v = sr_values(sr)
    assert abs(v["Probability"] - _predict_cli(tmp_path / "chest.dcm")) <= 1e-6
    assert v["Finding"] in ("Pneumonia", "Normal")
    assert v["Chest X-ray gate"] == "Frontal chest X-ray"
    assert 0.9 < v["Case Sensitivity"] <= 1.0
    sha = json.loads((BUNDLE / "pneumo.json").read_text())["weights_sha256"]
    assert v["Algorithm Parameters"] == f"weights SHA-256 {sha}"
    assert v["Population check"] in ("Like the validation films", "Unlike the validation films")
    assert v["Header policy check"] == "Nothing in the header refuses or flags the film"
    assert "not a diagnosis" in v["Comment"]
    assert sr.StudyInstanceUID == study and str(sr.PatientName) == PATIENT_NAME and sr.PatientID == PATIENT_ID
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == study

    sc = pacs.dataset(found["OT"][0])
    assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and sc.BurnedInAnnotation == "YES"
    assert sc.StudyInstanceUID == study and sc.SeriesInstanceUID not in (src.SeriesInstanceUID, sr.SeriesInstanceUID)
    assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape[2] == 3
    assert sc.pixel_array.std() > 10  # a picture, not a blank frame

    rows = [r for r in AuditStore(node.audit_db).rows() if r["request_id"].startswith("dicom:")]
    assert sum(r["outcome"] == "ok" for r in rows) >= 20
    assert all(len(r["request_id"]) == len("dicom:") + 64 for r in rows)  # a SHA-256, never the UID itself
    for leak in (PATIENT_NAME.encode(), PATIENT_NAME.split("^")[0].encode(), PATIENT_ID.encode(), study.encode()):
        assert leak not in files_text(node.log, node.audit_db, node.spool / "queue.sqlite")


def test_non_chest_instance_gets_a_refusal_sr(pacs_and_node):
    pacs, node = pacs_and_node
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.StudyInstanceUID = study = generate_uid()  # a fresh study, so the refusal is easy to find
    assert c_store(node.port, [ct]) == [0x0000]
    found = pacs.wait_for(study, {"SR": 1}, timeout=300)
    assert len(found["SR"]) == 1, node.log.read_text()[-2000:]
    sr = pacs.dataset(found["SR"][0])
    v, every = sr_values(sr), sr_all(sr)
    assert v["Reason no result is given"] == "Refused: not a projection radiograph"
    assert any("CT is not a chest radiograph" in c for c in every["Comment"])
    assert "Probability" not in v and "Finding" not in v
    assert pacs.instances(study, "OT") == []
    rows = [r for r in AuditStore(node.audit_db).rows() if r["error_code"] == "not_a_radiograph"]
    assert rows and rows[-1]["outcome"] == "error" and rows[-1]["probability"] is None
    assert node.proc.poll() is None


def test_echo_and_unknown_caller_rejected(pacs_and_node):
    _, node = pacs_and_node
    for calling, ok in (("TESTSCU", True), ("INTRUDER", False)):
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="PNEUMO")
        assert assoc.is_established is ok
        if ok:
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
        else:
            assert assoc.is_rejected
    assert "INTRUDER" in node.log.read_text() and "rejected" in node.log.read_text()


def test_twenty_concurrent_instances_all_get_results(pacs_and_node, dataset):
    pacs, node = pacs_and_node
    study = generate_uid()
    images = [s.path for s in dataset.select("train")[:20]]
    data = [pydicom.dcmread(io.BytesIO(chest_dicom(p, study, number=i + 1))) for i, p in enumerate(images)]
    statuses: list = [None] * 20

    def send(i: int) -> None:
        statuses[i] = c_store(node.port, [data[i]])[0]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [0x0000] * 20
    found = pacs.wait_for(study, {"SR": 20, "OT": 20}, timeout=300)
    assert (len(found["SR"]), len(found["OT"])) == (20, 20), node.log.read_text()[-2000:]
    refs = {sr_values(pacs.dataset(i))["Source (attribute)"] for i in found["SR"]}
    assert refs == {str(d.SOPInstanceUID) for d in data}
    assert node.proc.poll() is None


def test_header_policy_reaches_the_study_as_the_other_paths_answer(pacs_and_node, val_originals):
    """Issue 21 on the node's path: a lateral DX is refused from its header (a refusal SR, no SC) and a
    45-year-old's frontal film is answered but flagged (coded header answer + the headline as a comment)
    — the same status, reason and probability the Python API gives for the same bytes."""
    import pneumo

    pacs, node = pacs_and_node
    model = pneumo.load(BUNDLE)
    cases = {}
    for label, header in (("lateral", {"ViewPosition": "LL"}), ("adult", {"PatientAge": "045Y"})):
        ds = pydicom.dcmread(io.BytesIO(chest_dicom(val_originals[2].path, generate_uid())))
        for key, value in header.items():
            setattr(ds, key, value)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        cases[label] = (ds, model.predict(buf.getvalue()))
        assert c_store(node.port, [ds]) == [0x0000], label
    lateral_ds, lateral = cases["lateral"]
    assert lateral.status == "refused" and lateral.code == "lateral_view"
    found = pacs.wait_for(str(lateral_ds.StudyInstanceUID), {"SR": 1}, timeout=300)
    v = sr_values(pacs.dataset(found["SR"][0]))
    assert v["Header policy check"] == v["Reason no result is given"] == "Refused: lateral view"
    assert "Probability" not in v and pacs.instances(str(lateral_ds.StudyInstanceUID), "OT") == []

    adult_ds, adult = cases["adult"]
    assert adult.status == "flagged" and adult.code == "age_outside_range"
    found = pacs.wait_for(str(adult_ds.StudyInstanceUID), {"SR": 1, "OT": 1}, timeout=300)
    sr = pacs.dataset(found["SR"][0])
    v, every = sr_values(sr), sr_all(sr)
    assert v["Header policy check"] == "Flagged: age outside the validated range"
    assert abs(v["Probability"] - adult.probability) <= 1e-6
    assert any(c.startswith("Outside the validated population — patient age 45 years") for c in every["Comment"])
    rows = [r for r in AuditStore(node.audit_db).rows() if r["flags"] and "age_outside_range" in r["flags"]]
    assert rows and rows[-1]["outcome"] == "ok"
