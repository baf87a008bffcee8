"""Receiving a C-STORE without holding it in memory, and deciding at the C-STORE whether it is usable.

Why stream to disk: pynetdicom assembles a C-STORE's P-DATA fragments in memory by default, and
the node then encoded it again to spool it (a 200 MB dataset peaked at ~2× its size, with no bound
across associations). With ``STORE_RECV_CHUNKED_DATASET`` each fragment is appended to a file as it
arrives, so an association holds at most one PDU in memory. pynetdicom creates that file with
``tempfile.NamedTemporaryFile``; :func:`install` points it at :class:`SpoolFile` instead, which
writes in the spool's ``tmp/`` (the same file system as ``in/``, so spooling is a rename), stops
writing once an instance passes ``--max-instance-mb`` and frees the space at once when the disk is
full, so the C-STORE is answered 0xA700 and no temporary file is left behind.

Why check at the C-STORE: an instance without the UIDs its result must reference, or with a header
pydicom cannot parse, can never be answered; refusing it in the C-STORE response (0xA900 / 0xC000)
tells the sender now instead of accepting it and losing it later.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pydicom
from pynetdicom import _config, dimse_messages

from pneumo.dicomnode.header import missing_uids

OUT_OF_RESOURCES = 0xA700  # disk full, or the instance is over --max-instance-mb
DOES_NOT_MATCH = 0xA900  # "Data Set does not match SOP Class": a required UID is missing
CANNOT_UNDERSTAND = 0xC000  # the header cannot be parsed
_TARGET: dict = {"dir": None, "limit": None}


class SpoolFile:
    """The file one C-STORE's data set is streamed into (the interface pynetdicom uses of a temp file)."""

    def __init__(self, directory: str | Path, limit: int | None):
        fd, self.name = tempfile.mkstemp(prefix=".recv-", suffix=".dcm.tmp", dir=directory)
        self._fh = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed by close(); unbuffered: errors show at write
        self.file = self  # pynetdicom calls ``.file.flush()`` after each fragment
        self.limit, self.size = limit, 0
        self.error: str | None = None

    def write(self, data) -> int:
        if self.error is not None:
            return len(data)
        if self.limit is not None and self.size + len(data) > self.limit:
            self._give_up("too_large")
            return len(data)
        try:
            self._fh.write(data)
        except OSError as exc:
            self._give_up("no_space" if exc.errno == 28 else f"write_error:{type(exc).__name__}")
            return len(data)
        self.size += len(data)
        return len(data)

    def _give_up(self, why: str) -> None:
        """Stop writing and free the space now; the handler answers the C-STORE from ``error``."""
        self.error = why
        self.close()
        Path(self.name).unlink(missing_ok=True)

    def flush(self) -> None:
        """Nothing to flush (unbuffered); ``fsync`` happens once, when the file is spooled."""

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _named_temporary_file(*_args, **_kwargs) -> SpoolFile:
    return SpoolFile(_TARGET["dir"] or tempfile.gettempdir(), _TARGET["limit"])


def install(tmp_dir: Path, max_instance_bytes: int | None) -> None:
    """Stream every received C-STORE data set into ``tmp_dir`` (one node per process)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    _TARGET.update(dir=str(tmp_dir), limit=max_instance_bytes)
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _named_temporary_file


def sweep(tmp_dir: Path, older_than_s: float) -> int:
    """Delete receive files nobody has written to for ``older_than_s`` (their association died)."""
    n, now = 0, time.time()
    for p in tmp_dir.glob(".recv-*.dcm.tmp"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                n += 1
        except OSError:
            continue
    return n


def check(event) -> tuple[int | None, SpoolFile | None, str]:
    """``(status, file, why)``: a refusal status for an unusable instance, else ``(None, file, "")``."""
    f = getattr(event.request, "_dataset_file", None)
    if not isinstance(f, SpoolFile):
        return CANNOT_UNDERSTAND, None, "no data set"
    f.close()
    if f.error is not None:
        return OUT_OF_RESOURCES, f, f.error
    try:
        ds = pydicom.dcmread(f.name, stop_before_pixels=True)
        for elem in ds:  # values are parsed lazily: touch each, so a damaged header fails here
            _ = elem.value
    except Exception as exc:  # noqa: BLE001 - any parse failure means the header cannot be understood
        return CANNOT_UNDERSTAND, f, f"undecodable header ({type(exc).__name__})"
    missing = missing_uids(ds)
    if missing:
        return DOES_NOT_MATCH, f, f"missing {', '.join(missing)}"
    return None, f, ""


def spool_into(f: SpoolFile, path: Path) -> None:
    """Make the received file durable under ``path`` (fsync, rename, fsync the folder)."""
    with open(f.name, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(f.name, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def discard(f: SpoolFile | None) -> None:
    if f is not None:
        f.close()
        Path(f.name).unlink(missing_ok=True)
