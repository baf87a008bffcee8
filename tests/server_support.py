"""Helpers shared by the server tests: DICOM files written with pydicom, and a live server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from dicom_support import new_dataset, to_bytes

PATIENT = {"PatientName": "Doe^Janet^Secretname", "PatientID": "PID-7731-XYZZY", "PatientBirthDate": "20190314"}


def make_dicom(
    pixels: np.ndarray | None,
    *,
    frames: int = 1,
    syntax: str = "1.2.840.10008.1.2.1",
    patient: bool = True,
) -> bytes:
    """A Part-10 DICOM file with 12-bit MONOCHROME2 pixels (``H×W`` in [0, 1]) and patient fields."""
    from pydicom.uid import UID

    ds = new_dataset("CR", syntax)
    if patient:
        for key, value in PATIENT.items():
            setattr(ds, key, value)
    if pixels is not None:
        arr = np.round(np.asarray(pixels, dtype=np.float32) * 4095).astype(np.uint16)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        if frames > 1:
            ds.NumberOfFrames = frames
        if UID(syntax).is_compressed:  # encapsulate raw bytes: a file that claims a codec it does not hold
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([arr.tobytes()] * frames)
        else:
            ds.PixelData = np.concatenate([arr.ravel()] * frames).tobytes()
    return to_bytes(ds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``pneumo serve BUNDLE --port P`` as a subprocess on 127.0.0.1, waited for until healthy."""

    def __init__(self, bundle: Path, tmp: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "audit.sqlite"
        self.log = tmp / "server.log"
        exe = Path(sys.executable).with_name("pneumo")
        cmd = [str(exe), "serve", str(bundle), "--port", str(self.port), "--audit-db", str(self.db), *extra]
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def wait(self, timeout: float = 60.0) -> LiveServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1.0).json().get("status") == "ok":
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
