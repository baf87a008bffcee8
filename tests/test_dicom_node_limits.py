"""Issue 24, the node's items: half-sent PDUs cannot lock it (6), a full disk loses nothing and leaves
nothing behind (9), and what one C-STORE holds in memory is bounded (10). Each starts a real
`pneumo dicom-node`; no PACS is needed (results wait in the spool, which is what is checked)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pneumo.inference import default_bundle_path
from pneumo.server.audit_store import AuditStore
from test_dicom_node_support import SCU_AET, Node, c_store, chest_dicom, wait_until

pytestmark = pytest.mark.slow
NOWHERE = "NOBODY@127.0.0.1:9"  # results wait in the spool: nothing listens there


def _echo(port: int, timeout: float = 5.0) -> bool:
    ae = AE(ae_title=SCU_AET)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
    if not assoc.is_established:
        return False
    try:
        return getattr(assoc.send_c_echo(), "Status", None) == 0x0000
    finally:
        assoc.release()


@pytest.mark.timeout(600)
def test_half_sent_pdus_do_not_lock_the_node(tmp_path, val_originals):
    """32 associations that each send a P-DATA-TF header promising 5,000 bytes, then 100, and wait:
    another caller's C-ECHO and C-STORE still succeed within --timeout + 5 s."""
    timeout_s = 3.0
    node = Node(tmp_path / "node", default_bundle_path(), NOWHERE, None, "--timeout", str(timeout_s),
                "--max-associations", "32").start()
    attackers = []
    try:
        for _ in range(32):
            ae = AE(ae_title=SCU_AET)
            ae.add_requested_context(Verification)
            ae.network_timeout = ae.acse_timeout = 120  # the attacker waits longer than the node
            assoc = ae.associate("127.0.0.1", node.port, ae_title="PNEUMO")
            assert assoc.is_established
            assoc.dul.socket.socket.sendall(b"\x04\x00" + struct.pack(">I", 5000) + b"\x00" * 100)
            attackers.append(assoc)
        t0 = time.monotonic()
        assert wait_until(lambda: _echo(node.port, timeout=2.0), timeout_s + 5, step=0.1), "C-ECHO locked out"
        echo_s = time.monotonic() - t0
        film = pydicom.dcmread(io.BytesIO(chest_dicom(val_originals[0].path, generate_uid())))
        assert wait_until(lambda: c_store(node.port, [film]) == [0x0000], timeout_s + 5 - echo_s, step=0.1)
        store_s = time.monotonic() - t0
        print(f"\n32 half-sent PDUs waiting: C-ECHO succeeded after {echo_s:.1f} s, C-STORE after {store_s:.1f} s "
              f"(--timeout {timeout_s:.0f} s)")
        assert node.proc.poll() is None
        assert "Traceback" not in node.log.read_text()
    finally:
        for assoc in attackers:
            assoc.abort()
        node.stop()


@contextmanager
def _tmpfs(path: Path, size: str):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A file that takes all free space of ``folder``'s file system but ``leave`` bytes."""
    st = os.statvfs(folder)
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        os.posix_fallocate(fh.fileno(), 0, max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def _leftovers(spool: Path) -> list[str]:
    return sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file() and p.name.endswith(".tmp"))


@pytest.mark.timeout(600)
def test_disk_full_at_c_store_answers_a700_and_leaves_nothing(tmp_path, val_originals):
    with _tmpfs(tmp_path / "disk", "16m") as disk:
        node = Node(tmp_path / "node", default_bundle_path(), NOWHERE, None)
        node.spool = disk / "spool"
        node.cmd[node.cmd.index("--spool") + 1] = str(node.spool)
        node.start()
        try:
            film = pydicom.dcmread(io.BytesIO(chest_dicom(val_originals[0].path, generate_uid())))
            filler = _fill(disk, leave=256 * 1024)  # room for the queue's own writes, not for a film
            assert c_store(node.port, [film]) == [0xA700]
            assert _leftovers(node.spool) == [] and list((node.spool / "in").iterdir()) == []
            filler.unlink()  # room again: the same film is accepted
            assert c_store(node.port, [film]) == [0x0000]
        finally:
            node.stop()


@pytest.mark.timeout(900)
def test_disk_full_for_results_retries_without_restart(tmp_path, val_originals):
    """Room for the film but not its results: nothing half-written stays, the instance is retried with
    backoff by the running node once there is room, and the film gets one audit row."""
    with _tmpfs(tmp_path / "disk", "48m") as disk:
        node = Node(tmp_path / "node", default_bundle_path(), NOWHERE, None, "--retry-base", "0.5",
                    "--retry-max", "1")
        node.spool = disk / "spool"
        node.cmd[node.cmd.index("--spool") + 1] = str(node.spool)
        node.start()
        try:
            data = chest_dicom(val_originals[0].path, generate_uid())
            film = pydicom.dcmread(io.BytesIO(data))
            filler = _fill(disk, leave=len(data) + 600 * 1024)  # the film fits; its 2-3 MB Secondary Capture does not
            assert c_store(node.port, [film]) == [0x0000]
            st = wait_until(lambda: (s := node.status())["received_retrying"] and s, timeout=300)
            assert st and st["received_retrying"][0]["attempts"] >= 1, node.log.read_text()[-2000:]
            assert "errno 28" in st["received_retrying"][0]["last_error"]
            assert _leftovers(node.spool) == [] and list((node.spool / "out").iterdir()) == []
            assert list(AuditStore(node.audit_db).rows()) == []  # no row until the film's final state
            filler.unlink()
            st = wait_until(lambda: (s := node.status())["received_done"] == 1 and s, timeout=300)
            assert st and st["pending"] == 2 and st["received_failed"] == 0, node.status()
            assert sorted(p.name.split("-")[1] for p in (node.spool / "out").glob("*.dcm")) == ["sc", "sr"]
            assert _leftovers(node.spool) == []
            rows = list(AuditStore(node.audit_db).rows())
            assert len(rows) == 1 and rows[0]["outcome"] == "ok", rows
            print(f"\ndisk full for results: {st['received_done']} film done after the disk had room again, "
                  f"{len(rows)} audit row, no temp file left")
        finally:
            node.stop()


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _big_film(mb: int) -> pydicom.Dataset:
    """A CR of about ``mb`` MB (zeros: the node refuses it by size before anything reads it)."""
    side = int((mb * 2**20 / 2) ** 0.5)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CR"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.zeros((side, side), np.uint16).tobytes()
    return ds


@pytest.mark.timeout(600)
def test_a_big_c_store_is_streamed_and_bounded(tmp_path):
    """A 200 MB C-STORE is streamed to disk (the node's peak memory does not grow by its size) and,
    over --max-instance-mb, refused with 0xA700 (out of resources) without being kept."""
    node = Node(tmp_path / "node", default_bundle_path(), NOWHERE, None, "--max-instance-mb", "64").start()
    try:
        time.sleep(2.0)
        before = _vm_hwm_kb(node.proc.pid)
        big = _big_film(200)
        assert c_store(node.port, [big]) == [0xA700]
        grew_mb = (_vm_hwm_kb(node.proc.pid) - before) / 1024
        print(f"\n200 MB C-STORE over --max-instance-mb 64: refused 0xA700; node peak memory grew {grew_mb:.1f} MB")
        assert grew_mb < 32, grew_mb
        assert _leftovers(node.spool) == [] and list((node.spool / "in").iterdir()) == []
        assert list((node.spool / "tmp").iterdir()) == []
        assert node.proc.poll() is None
    finally:
        node.stop()
