"""The audit log: one SQLite row per prediction request, never pixels, never patient data.

Why SQLite: a hospital needs to answer "what did the model say about this image, when, with which
model?" without running a database server. WAL mode lets readers (``pneumo audit export``) work
while the server writes; each request is one short transaction. Connections are per thread (sqlite3
objects must not cross threads) and ``busy_timeout`` covers several worker processes on one file.
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO

from pneumo.errors import ConfigError

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
"""


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            have = {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
            for col in ("population", "flags"):  # a log written before the gate / the header policy
                if col not in have:
                    conn.execute(f"ALTER TABLE predictions ADD COLUMN {col} TEXT")
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open the audit database ({exc})") from exc

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
        conn = self._conn()
        with conn:
            conn.execute(f"INSERT INTO predictions ({cols}) VALUES ({marks})", values)

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


def parse_since(value: str) -> str:
    """A date or datetime (naive = UTC) → the ISO form stored in the log, for text comparison."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"--since {value!r}: expected a date like 2026-01-31 or 2026-01-31T08:00") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds")
