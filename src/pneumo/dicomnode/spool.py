"""The node's memory on disk: received instances waiting for the model, results waiting for the PACS.

Why on disk and in SQLite: a PACS that is down for an hour, or a node restarted by the hospital's
IT at night, must not lose a film or a result. Every received instance is a file in ``in/`` plus an
``inbound`` row before the C-STORE is answered; every result is a file in ``out/`` plus an
``outbound`` row. Finishing an instance (its results queued, the instance marked done) is one
transaction, so a crash either redoes the whole instance or nothing: each result is queued once.
Rows hold hashes of UIDs and file names only; the DICOM files themselves are deleted once handled.
WAL mode lets ``pneumo dicom-node --status`` read while the node writes.

An instance whose results could not be written (disk full) stays ``received`` with a backoff
(``attempts``, ``next_try``) and is retried by the running node; one that cannot be answered at all
(or has used up its attempts) is ``failed``: its file moves to ``dead/`` (the dead-letter folder),
``--status`` shows it, and ``pneumo dicom-node --status --retry-dead`` queues it again.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from pathlib import Path

from pneumo.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received TEXT NOT NULL,
    sop_hash TEXT NOT NULL,
    file TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('received', 'done', 'failed')),
    outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS outbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    inbound_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    file TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    sent TEXT
);
CREATE INDEX IF NOT EXISTS outbound_due ON outbound (state, next_try);
"""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Seconds to wait after ``attempts`` failed tries: doubling from ``base_s``, capped at ``max_s``."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))


class Spool:
    """The ``in/`` and ``out/`` folders and ``queue.sqlite`` under one spool directory."""

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root)
        self.inbox = self.root / "in"
        self.outbox = self.root / "out"
        self.dead = self.root / "dead"
        self.db = self.root / "queue.sqlite"
        if not create and not self.db.exists():
            raise ConfigError(f"{self.root}: no dicom-node spool here (pass --spool DIR)")
        self._lock = threading.Lock()
        try:
            for d in (self.inbox, self.outbox, self.dead):
                d.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.db, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # a C-STORE answered 'success' must survive power loss
            self._migrate()
            self._conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{self.root}: cannot open the spool ({exc})") from exc

    def _migrate(self) -> None:
        """A spool made before the dead-letter states: rebuild ``inbound`` with the new columns and CHECK."""
        cols = {r[1] for r in self._conn.execute("PRAGMA table_info(inbound)")}
        if cols and "attempts" not in cols:
            create_inbound = SCHEMA.split("CREATE TABLE IF NOT EXISTS outbound")[0]
            self._conn.executescript(
                "BEGIN; ALTER TABLE inbound RENAME TO inbound_old;" + create_inbound
                + "INSERT INTO inbound (id, received, sop_hash, file, state, outcome) "
                  "SELECT id, received, sop_hash, file, state, outcome FROM inbound_old; "
                  "DROP TABLE inbound_old; COMMIT;")

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # -- received instances -------------------------------------------------------------------
    def add_inbound(self, sop_hash: str, file: str) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO inbound (received, sop_hash, file, state) VALUES (?, ?, ?, 'received')",
                (utc_now(), sop_hash, file),
            )
            if cur.lastrowid is None:  # sqlite3 sets it after every INSERT
                raise RuntimeError("the spool's INSERT into inbound returned no row id")
            return int(cur.lastrowid)

    def unfinished_inbound(self) -> list[tuple[int, str]]:
        """``(id, file)`` of instances received but not yet turned into results (oldest first)."""
        return [(int(i), f) for i, f in self._run("SELECT id, file FROM inbound WHERE state='received' ORDER BY id")]

    def due_inbound(self, now: float, limit: int = 256) -> list[tuple[int, str, int]]:
        """``(id, file, attempts)`` of received instances whose (next) try is due, oldest first."""
        rows = self._run("SELECT id, file, attempts FROM inbound WHERE state='received' AND next_try <= ? "
                         "ORDER BY id LIMIT ?", (now, limit))
        return [(int(i), f, int(a)) for i, f, a in rows]

    def next_inbound_due(self) -> float | None:
        rows = self._run("SELECT MIN(next_try) FROM inbound WHERE state='received'")
        return None if rows[0][0] is None else float(rows[0][0])

    def retry_inbound(self, inbound_id: int, error: str, *, base_s: float, max_s: float) -> int:
        """One more failed try at turning an instance into results: due again after a backoff. Returns attempts."""
        with self._lock:
            row = self._conn.execute("SELECT attempts FROM inbound WHERE id=?", (inbound_id,)).fetchone()
            attempts = int(row[0]) + 1 if row else 1
            due = time.time() + backoff_s(attempts, base_s, max_s)
            self._conn.execute("UPDATE inbound SET attempts=?, next_try=?, last_error=? "
                               "WHERE id=? AND state='received'", (attempts, due, error[:300], inbound_id))
            return attempts

    def fail_inbound(self, inbound_id: int, error: str) -> None:
        """Give an instance up: its file is in ``dead/``; ``--status`` lists it, ``requeue_dead`` retries it."""
        self._run("UPDATE inbound SET state='failed', outcome='failed', last_error=? WHERE id=?",
                  (error[:300], inbound_id))

    def requeue_dead(self) -> int:
        """Move every dead-letter instance back to ``in/`` and make it due now (a running node picks it up)."""
        with self._lock:
            rows = self._conn.execute("SELECT id, file FROM inbound WHERE state='failed'").fetchall()
            n = 0
            for inbound_id, name in rows:
                src = self.dead / name
                if src.exists():
                    src.replace(self.inbox / name)
                if (self.inbox / name).exists():
                    self._conn.execute("UPDATE inbound SET state='received', attempts=0, next_try=0, outcome=NULL "
                                       "WHERE id=?", (inbound_id,))
                    n += 1
            return n

    def finish_inbound(self, inbound_id: int, outcome: str, results: list[tuple[str, str]]) -> None:
        """Queue ``(kind, file)`` results and mark the instance done, in one transaction."""
        now = utc_now()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO outbound (created, inbound_id, kind, file, state, next_try) "
                    "VALUES (?, ?, ?, ?, 'pending', 0)",
                    [(now, inbound_id, kind, file) for kind, file in results],
                )
                self._conn.execute("UPDATE inbound SET state='done', outcome=? WHERE id=?", (outcome, inbound_id))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # -- results to send ----------------------------------------------------------------------
    def due(self, now: float, limit: int = 16) -> list[tuple[int, str, str, int]]:
        """``(id, kind, file, attempts)`` of pending results whose next try is due, oldest first."""
        rows = self._run(
            "SELECT id, kind, file, attempts FROM outbound WHERE state='pending' AND next_try <= ? ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [(int(i), k, f, int(a)) for i, k, f, a in rows]

    def next_due(self) -> float | None:
        rows = self._run("SELECT MIN(next_try) FROM outbound WHERE state='pending'")
        return None if rows[0][0] is None else float(rows[0][0])

    def mark_sent(self, outbound_id: int) -> None:
        self._run("UPDATE outbound SET state='sent', sent=?, attempts=attempts+1, last_error=NULL WHERE id=?",
                  (utc_now(), outbound_id))

    def mark_failed_try(self, outbound_id: int, error: str, *, base_s: float, max_s: float, max_attempts: int) -> None:
        """One more failed try: pending again after a backoff, or ``failed`` after ``max_attempts``."""
        with self._lock:
            row = self._conn.execute("SELECT attempts FROM outbound WHERE id=? AND state='pending'",
                                     (outbound_id,)).fetchone()
            if row is None:  # already sent (or given up): a late failure report changes nothing
                return
            attempts = int(row[0]) + 1
            state = "failed" if attempts >= max_attempts else "pending"
            self._conn.execute(
                "UPDATE outbound SET attempts=?, state=?, next_try=?, last_error=? WHERE id=?",
                (attempts, state, time.time() + backoff_s(attempts, base_s, max_s), error[:300], outbound_id),
            )

    def requeue_failed(self) -> int:
        """Give every ``failed`` result a fresh start (after the destination was fixed)."""
        with self._lock:
            cur = self._conn.execute("UPDATE outbound SET state='pending', attempts=0, next_try=0 WHERE state='failed'")
            return cur.rowcount

    # -- what an operator asks ----------------------------------------------------------------
    def status(self) -> dict:
        """Counts by state and every result not yet delivered (pending or failed)."""
        inbound = dict(self._run("SELECT state, COUNT(*) FROM inbound GROUP BY state"))
        dead = [{"id": i, "attempts": a, "last_error": e, "received": r, "file": f"dead/{f}"}
                for i, a, e, r, f in self._run("SELECT id, attempts, last_error, received, file FROM inbound "
                                                "WHERE state='failed' ORDER BY id LIMIT 200")]
        retrying = [{"id": i, "attempts": a, "next_try_in_s": round(max(0.0, t - time.time()), 1), "last_error": e}
                    for i, a, t, e in self._run("SELECT id, attempts, next_try, last_error FROM inbound "
                                                "WHERE state='received' AND attempts > 0 ORDER BY id LIMIT 200")]
        outbound = dict(self._run("SELECT state, COUNT(*) FROM outbound GROUP BY state"))
        now = time.time()
        waiting = [
            {"id": i, "kind": k, "state": s, "attempts": a,
             "next_try_in_s": None if s == "failed" else round(max(0.0, t - now), 1), "last_error": e, "created": c}
            for i, k, s, a, t, e, c in self._run(
                "SELECT id, kind, state, attempts, next_try, last_error, created FROM outbound "
                "WHERE state != 'sent' ORDER BY id LIMIT 200"
            )
        ]
        return {
            "spool": str(self.root),
            "received_waiting": inbound.get("received", 0),
            "received_done": inbound.get("done", 0),
            "received_failed": inbound.get("failed", 0),
            "received_retrying": retrying,
            "dead_letter": dead,
            "pending": outbound.get("pending", 0),
            "sent": outbound.get("sent", 0),
            "failed": outbound.get("failed", 0),
            "not_sent": waiting,
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()
