"""The audit log: one SQLite row per prediction request, never pixels, never patient data.

Why SQLite: a hospital needs to answer "what did the model say about this image, when, with which
model?" without running a database server. WAL mode lets readers (``pneumo audit export``) work
while the server writes; each request is one short transaction. Connections are per thread (sqlite3
objects must not cross threads) and ``busy_timeout`` covers several worker processes on one file.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO

from pneumo.errors import ConfigError, PneumoError

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    request_id TEXT NOT NULL,
    image_sha256 TEXT,
    width INTEGER,
    height INTEGER,
    format TEXT,
    model_name TEXT,
    model_version TEXT,
    model_sha256 TEXT,
    probability REAL,
    decision TEXT,
    ood_score REAL,
    ood_flag INTEGER,
    population TEXT,
    flags TEXT,
    latency_ms REAL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused_ood', 'error')),
    error_code TEXT
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), time TEXT NOT NULL);
"""
# Below this much free space where the log lives, /health tries a real write before saying ok.
LOW_SPACE_BYTES = 4 * 2**20


class AuditUnavailable(PneumoError):
    """The audit log cannot be written (disk full, read-only, I/O error): predictions are not served,
    because a prediction that cannot be audited must not be given."""

    code = "audit_unavailable"
    status = 503


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds, e.g. ``2026-01-31T12:00:00.123+00:00`` (sorts as text)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class AuditRow:
    """What is kept about one request. Deliberately no file name, no pixels, no DICOM tags."""

    request_id: str
    outcome: str
    time: str = ""
    image_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    probability: float | None = None
    decision: str | None = None
    ood_score: float | None = None
    ood_flag: bool | None = None
    population: str | None = None  # 'typical' | 'atypical' | None (refused, error, or no population model)
    flags: str | None = None  # comma-separated reason codes of a flagged/refused film (pneumo.analysis)
    latency_ms: float | None = None
    error_code: str | None = None


COLUMNS = ["time", *(f.name for f in fields(AuditRow) if f.name != "time")]


class AuditStore:
    """Append-only audit log in one SQLite file (WAL), safe from many threads and processes."""

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_error: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            have = {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
            for col in ("population", "flags"):  # a log written before the gate / the header policy
                if col not in have:
                    conn.execute(f"ALTER TABLE predictions ADD COLUMN {col} TEXT")
        except (sqlite3.Error, OSError) as exc:
            self.close()
            why = _why(exc, self.path) if isinstance(exc, sqlite3.Error) else f"{self.path}: {exc.strerror or exc}"
            raise ConfigError(f"{self.path}: cannot open the audit database ({why})") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # used only by the thread that opened it; check_same_thread=False just lets close() run at shutdown
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def record(self, row: AuditRow) -> None:
        """Insert one row in its own transaction."""
        values = asdict(row)
        values["time"] = values["time"] or utc_now()
        if values["ood_flag"] is not None:
            values["ood_flag"] = int(values["ood_flag"])
        cols = ", ".join(COLUMNS)
        marks = ", ".join(f":{c}" for c in COLUMNS)
        self._write(f"INSERT INTO predictions ({cols}) VALUES ({marks})", values)

    def _write(self, sql: str, values: dict) -> None:
        """One statement in its own transaction; any SQLite failure → :class:`AuditUnavailable`,
        remembered for :meth:`problem` until a write succeeds again."""
        try:
            conn = self._conn()
            with conn:
                conn.execute(sql, values)
        except sqlite3.Error as exc:
            self._write_error = _why(exc, self.path)
            raise AuditUnavailable(f"The audit log cannot be written ({self._write_error}); predictions are not "
                                   "served until it can, because every prediction must be audited.") from exc
        self._write_error = None

    def check_writable(self) -> None:
        """A real write now (to a one-row table, never a fake audit row): :class:`AuditUnavailable` if
        it fails. ``pneumo serve`` calls it before it starts listening."""
        self._write("INSERT OR REPLACE INTO write_probe (id, time) VALUES (1, :time)", {"time": utc_now()})

    def problem(self) -> str | None:
        """Why the log cannot be written now, or ``None``. After a failed write, or when its file system
        is nearly full, a real write (to a one-row table) decides, so that recovery shows as soon as
        space is freed, before the next prediction tries."""
        if self._write_error is None and _free_bytes(self.path) >= LOW_SPACE_BYTES:
            return None
        with contextlib.suppress(AuditUnavailable):
            self.check_writable()
        return self._write_error

    def rows(self, since: str | None = None, until: str | None = None) -> Iterator[dict]:
        """Rows with ``since <= time < until`` (ISO strings, UTC), oldest first."""
        sql = f"SELECT {', '.join(COLUMNS)} FROM predictions WHERE time >= ? AND time < ? ORDER BY time, id"
        cur = self._conn().execute(sql, (since or "", until or "9999"))
        for values in cur:
            yield dict(zip(COLUMNS, values, strict=True))

    def export_csv(self, out: IO[str], since: str | None = None, until: str | None = None) -> int:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        n = 0
        for row in self.rows(since, until):
            writer.writerow(row)
            n += 1
        return n

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def _why(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc).strip() or type(exc).__name__
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one
    if code == sqlite3.SQLITE_FULL or "full" in text or (code == sqlite3.SQLITE_IOERR and _free_bytes(path) < 2**16):
        return f"the disk holding {path} is full"
    if code == sqlite3.SQLITE_READONLY or "readonly" in text:
        return f"{path} is read-only"
    return f"{path}: {text}"


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


class BadTime(ConfigError):
    """A ``since``/``until`` that is not a date, or lies outside the calendar once converted to UTC."""

    code = "bad_parameter"
    status = 400


def parse_since(value: str, name: str = "--since") -> str:
    """A date or datetime (naive = UTC) → the ISO form stored in the log, for text comparison.

    ``name`` is how the caller's user gave the value (``--until`` on the command line, ``until`` as a
    query parameter): the one-line error names it."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadTime(f"{name} {value!r}: expected a date like 2026-01-31 or 2026-01-31T08:00") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        utc = when.astimezone(dt.UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before year 1 in UTC; 9999-12-31T23:59-01:00 after 9999
        raise BadTime(f"{name} {value!r}: outside the dates that can be stored once converted to UTC "
                      "(0001-01-01 to 9999-12-31 UTC)") from exc
    return utc.isoformat(timespec="milliseconds")
