"""Nothing lost: results for a PACS that is down wait in the node's on-disk queue, survive a SIGKILL of
the node, and arrive once each when the PACS is back."""

from __future__ import annotations

import io
import signal
import time

import pydicom
import pytest
from pydicom.uid import generate_uid

from pneumo.dicomnode.spool import Spool, backoff_s
from pneumo.errors import ConfigError
from pneumo.inference import default_bundle_path
from server_support import free_port
from test_dicom_node_support import Node, Orthanc, c_store, chest_dicom, need_orthanc, sr_values


def _wait_status(node: Node, ok, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = node.status()
        if ok(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.3)


def _all_tried(n: int):
    return lambda st: st["pending"] == n and all(r["attempts"] >= 1 for r in st["not_sent"])


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(a, 2.0, 10.0) for a in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_spool_states_survive_reopening(tmp_path):
    spool = Spool(tmp_path)
    first = spool.add_inbound("h1", "a.dcm")
    spool.add_inbound("h2", "b.dcm")
    spool.finish_inbound(first, "ok", [("sr", "1-sr.dcm"), ("sc", "1-sc.dcm")])
    sr, sc = (row[0] for row in spool.due(time.time()))
    spool.mark_sent(sc)
    spool.mark_failed_try(sc, "late report", base_s=1, max_s=1, max_attempts=5)  # ignored: already sent
    spool.mark_failed_try(sr, "down", base_s=60, max_s=60, max_attempts=5)
    assert spool.due(time.time()) == []  # backing off
    spool.close()
    again = Spool(tmp_path, create=False)  # a restart
    assert again.unfinished_inbound() == [(first + 1, "b.dcm")]
    st = again.status()
    assert (st["pending"], st["sent"], st["failed"]) == (1, 1, 0)
    assert st["not_sent"][0]["attempts"] == 1 and st["not_sent"][0]["last_error"] == "down"
    again.mark_failed_try(sr, "down", base_s=0, max_s=0, max_attempts=2)
    assert again.status()["failed"] == 1 and again.requeue_failed() == 1 and len(again.due(time.time())) == 1
    again.close()
    with pytest.raises(ConfigError):
        Spool(tmp_path / "nothing", create=False)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # three node starts; minutes only on a starved shared CPU
def test_down_destination_then_restart_with_queued_results(tmp_path, dataset):
    need_orthanc()
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", {"pneumo": ("PNEUMO", port)})
    node = Node(tmp_path / "node", default_bundle_path(), pacs.send_to, port, "--retry-base", "0.2", "--retry-max", "1")
    study = generate_uid()
    films = [pydicom.dcmread(io.BytesIO(chest_dicom(s.path, study, number=i + 1)))
             for i, s in enumerate(dataset.select("train")[:4])]
    try:
        node.start()
        # 1. the PACS is down: results wait, each tried at least once, none lost
        assert c_store(node.port, films[:2]) == [0x0000, 0x0000]
        st = _wait_status(node, _all_tried(4))
        assert st["pending"] == 4 and st["sent"] == 0, st
        assert "no association" in st["not_sent"][0]["last_error"]
        # ... and comes up: they arrive without anyone touching the node
        pacs.start()
        found = pacs.wait_for(study, {"SR": 2, "OT": 2}, timeout=300)
        assert (len(found["SR"]), len(found["OT"])) == (2, 2), node.log.read_text()[-2000:]

        # 2. down again; two more films; the node is killed with their results queued, then restarted
        pacs.stop()
        assert c_store(node.port, films[2:]) == [0x0000, 0x0000]
        st = _wait_status(node, _all_tried(4))
        assert st["pending"] == 4, st
        node.stop(signal.SIGKILL)
        pacs.start()
        node.start()
        found = pacs.wait_for(study, {"SR": 4, "OT": 4}, timeout=300)
        st = _wait_status(node, lambda s: s["pending"] == 0)
        time.sleep(1.0)  # time for a duplicate to show up, if the queue were to make one
        found = {m: pacs.instances(study, m) for m in ("SR", "OT")}
        assert (len(found["SR"]), len(found["OT"])) == (4, 4), node.log.read_text()[-2000:]
        st = node.status()
        assert (st["received_done"], st["sent"], st["pending"], st["failed"]) == (4, 8, 0, 0), st
        refs = sorted(sr_values(pacs.dataset(i))["Source (attribute)"] for i in found["SR"])
        assert refs == sorted(str(f.SOPInstanceUID) for f in films)
        assert list((node.spool / "out").glob("*.dcm")) == [] and list((node.spool / "in").glob("*.dcm")) == []
    finally:
        node.stop()
        pacs.stop()
