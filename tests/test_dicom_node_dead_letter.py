"""Issue 22 item 1: an accepted instance that cannot be answered is never silently dropped: it is
`failed` in `--status` and the audit log, kept in the spool's dead/ folder, and `--status --retry-dead`
brings it back to a running node; 10 films in flight, a SIGKILL and a PACS that is down still end as
10 SR + 10 SC, each delivered once."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from pneumo.dicomnode.spool import Spool
from pneumo.inference import default_bundle_path
from pneumo.server.audit_store import AuditStore
from server_support import free_port
from test_dicom_node_support import Node, Orthanc, c_store, chest_dicom, need_orthanc, sr_values, wait_until

NOWHERE = "NOBODY@127.0.0.1:9"


def test_spool_dead_letter_states(tmp_path):
    spool = Spool(tmp_path)
    first = spool.add_inbound("h1", "a.dcm")
    (spool.inbox / "a.dcm").write_bytes(b"x")
    assert spool.due_inbound(time.time()) == [(first, "a.dcm", 0)]
    assert spool.retry_inbound(first, "OSError errno 28", base_s=60, max_s=60) == 1
    assert spool.due_inbound(time.time()) == []  # backing off
    assert spool.status()["received_retrying"][0]["attempts"] == 1
    (spool.inbox / "a.dcm").replace(spool.dead / "a.dcm")
    spool.fail_inbound(first, "ValueError")
    st = spool.status()
    assert (st["received_waiting"], st["received_failed"]) == (0, 1) and st["dead_letter"][0]["file"] == "dead/a.dcm"
    assert spool.requeue_dead() == 1 and (spool.inbox / "a.dcm").exists()
    assert spool.due_inbound(time.time()) == [(first, "a.dcm", 0)]
    spool.close()


def test_spool_made_before_dead_letters_is_migrated(tmp_path):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "queue.sqlite")
    conn.executescript("""CREATE TABLE inbound (id INTEGER PRIMARY KEY AUTOINCREMENT, received TEXT NOT NULL,
        sop_hash TEXT NOT NULL, file TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('received', 'done')),
        outcome TEXT);
        INSERT INTO inbound (received, sop_hash, file, state) VALUES ('t', 'h', 'old.dcm', 'received');""")
    conn.close()
    spool = Spool(tmp_path)
    assert spool.due_inbound(time.time()) == [(1, "old.dcm", 0)]
    spool.fail_inbound(1, "x")  # the new state passes the new CHECK
    assert spool.status()["received_failed"] == 1
    spool.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_unanswerable_instance_goes_to_dead_letter_and_retry_dead_brings_it_back(tmp_path, val_originals):
    node = Node(tmp_path / "node", default_bundle_path(), NOWHERE, None)
    # an instance damaged on disk after it was accepted (the C-STORE refuses such data on the wire)
    spool = Spool(node.spool)
    inbound_id = spool.add_inbound("0" * 64, "damaged.dcm")
    (spool.inbox / "damaged.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 500)
    spool.close()
    node.start()
    try:
        st = wait_until(lambda: (s := node.status())["received_failed"] == 1 and s, timeout=120)
        assert st and st["dead_letter"][0]["id"] == inbound_id, node.status()
        assert (node.spool / "dead" / "damaged.dcm").exists() and not (node.spool / "in" / "damaged.dcm").exists()
        rows = list(AuditStore(node.audit_db).rows())
        assert [r["error_code"] for r in rows] == ["dead_letter"]
        human = subprocess.run([str(Path(sys.executable).with_name("pneumo")), "dicom-node", "--status", "--spool",
                                str(node.spool)], capture_output=True, text=True, timeout=60)
        assert "dead letter: 1 instance(s)" in human.stdout and "dead/damaged.dcm" in human.stdout
        # repaired (here: replaced by a readable film), then requeued into the running node
        (node.spool / "dead" / "damaged.dcm").write_bytes(chest_dicom(val_originals[0].path, generate_uid()))
        requeue = subprocess.run([str(Path(sys.executable).with_name("pneumo")), "dicom-node", "--status",
                                  "--retry-dead", "--spool", str(node.spool)], capture_output=True, text=True,
                                 timeout=60)
        assert "1 dead-letter instance(s) queued again" in requeue.stderr
        st = wait_until(lambda: (s := node.status())["received_done"] == 1 and s, timeout=300)
        assert st and st["received_failed"] == 0 and st["pending"] == 2, node.status()
    finally:
        node.stop()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_kill_nine_with_ten_films_in_flight_and_the_pacs_down(tmp_path, dataset):
    """The figure to keep: SIGKILL with 10 films in flight and the PACS down → after a restart, 10 SR
    and 10 SC in the study, each exactly once."""
    need_orthanc()
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", {"pneumo": ("PNEUMO", port)})
    node = Node(tmp_path / "node", default_bundle_path(), pacs.send_to, port, "--retry-base", "0.2",
                "--retry-max", "1")
    study = generate_uid()
    films = [pydicom.dcmread(io.BytesIO(chest_dicom(s.path, study, number=i + 1)))
             for i, s in enumerate(dataset.select("train")[:10])]
    try:
        node.start()
        assert c_store(node.port, films) == [0x0000] * 10
        time.sleep(1.0)  # some analysed, most still waiting for a worker
        node.stop(signal.SIGKILL)
        pacs.start()
        node.start()
        found = pacs.wait_for(study, {"SR": 10, "OT": 10}, timeout=900)
        wait_until(lambda: node.status()["pending"] == 0, timeout=120)
        time.sleep(1.0)  # time for a duplicate to show up, if the queue were to make one
        found = {m: pacs.instances(study, m) for m in ("SR", "OT")}
        assert (len(found["SR"]), len(found["OT"])) == (10, 10), node.log.read_text()[-2000:]
        refs = sorted(sr_values(pacs.dataset(i))["Source (attribute)"] for i in found["SR"])
        assert refs == sorted(str(f.SOPInstanceUID) for f in films)
        st = node.status()
        assert (st["received_done"], st["received_failed"], st["pending"], st["failed"]) == (10, 0, 0, 0), st
        print("\nSIGKILL with 10 films in flight, PACS down: 10 SR + 10 SC delivered once each after restart")
    finally:
        node.stop()
        pacs.stop()
