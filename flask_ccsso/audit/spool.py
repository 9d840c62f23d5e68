"""A durable local spool: one SQLite file per sink in ``spoolDir``.

While a sink is down (or the in-memory queue is full) events are appended
here; they are replayed in the order they were appended once the sink answers
again, and deleted only after the sink accepted them. A process that dies
leaves its spool behind and the next pipeline started on the same directory
replays it, so delivery is *at least once*: an event can reach a sink twice
(for instance when the process died between the sink's answer and the
delete), and sinks de-duplicate on the event id where they can.

The file uses SQLite's write-ahead log with ``synchronous=NORMAL``: an append
survives the process being killed; a power cut may lose the last few appends.
Several processes may share one spool file; an advisory lock file lets only
one of them replay at a time.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence

from .events import AuditEvent

log = logging.getLogger("flask_ccsso.audit")


def _private_file(path: str) -> None:
    """Create ``path`` readable by this user only (events hold personal data)."""
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    os.close(fd)


def ensure_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class Spool:
    """An ordered, durable FIFO of events for one sink."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"ccsso-audit-{name}.spool.sqlite3")
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._lock_path = self.path + ".lock"
        self._lock_fd: int | None = None
        self._closed = False
        # Nothing is created until the first append: a healthy sink leaves no files behind.
        # A spool left by an earlier process is opened (and then replayed) straight away.
        self._count = self._count_rows() if os.path.exists(self.path) else 0

    def _db(self) -> sqlite3.Connection:
        """The connection, creating the file on first use. Call with ``self._lock`` held."""
        if self._conn is None:
            if self._closed:
                raise RuntimeError("the audit spool is closed")
            ensure_dir(self.directory)
            _private_file(self.path)
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # AUTOINCREMENT: sequence numbers are never reused, so order survives deletes and restarts
            conn.execute(
                "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "event_id TEXT NOT NULL, body TEXT NOT NULL)"
            )
            self._conn = conn
        return self._conn

    def _count_rows(self) -> int:
        with self._lock:
            if self._conn is None and not os.path.exists(self.path):
                return 0
            return int(self._db().execute("SELECT count(*) FROM spool").fetchone()[0])

    def __len__(self) -> int:
        """Rows this process knows of (cheap; refreshed from disk by :meth:`refresh`)."""
        return self._count

    def refresh(self) -> int:
        self._count = self._count_rows()
        return self._count

    def append(self, events: Iterable[AuditEvent]) -> int:
        rows = [(e.id, e.to_json()) for e in events]
        if not rows:
            return 0
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO spool (event_id, body) VALUES (?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count += len(rows)
        return len(rows)

    def peek(self, limit: int) -> list[tuple[int, AuditEvent]]:
        """The oldest ``limit`` events, in order, with their sequence numbers."""
        with self._lock:
            if self._conn is None and not os.path.exists(self.path):
                return []
            rows = self._db().execute("SELECT seq, body FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(seq, AuditEvent.from_dict(json.loads(body))) for seq, body in rows]

    def delete(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.executemany("DELETE FROM spool WHERE seq = ?", [(s,) for s in seqs])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count = max(0, self._count - max(cur.rowcount, 0))

    def after_fork(self) -> None:
        """In a forked child: the inherited SQLite connection and replay lock
        belong to the parent; drop our references (closing the lock fd copy
        leaves the parent's lock alone)."""
        self._lock = threading.Lock()
        self._conn = None
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None

    def try_acquire_replay(self) -> bool:
        """Take the replay lock (non-blocking). Held until :meth:`release_replay`."""
        if self._lock_fd is not None:
            return True
        ensure_dir(self.directory)
        fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def release_replay(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def close(self) -> None:
        self.release_replay()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class DeadLetter:
    """Events a sink refused as malformed (HTTP 4xx), kept as JSON lines for a person to look at."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"ccsso-audit-{name}.deadletter.jsonl")
        self._lock = threading.Lock()

    def write(self, events: Sequence[AuditEvent], problem: str) -> None:
        now = time.time()
        lines = "".join(
            json.dumps({"dead_at": now, "problem": problem, "event": e.to_dict()}, sort_keys=True) + "\n"
            for e in events
        )
        with self._lock:
            ensure_dir(self.directory)
            _private_file(self.path)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())


__all__ = ["DeadLetter", "Spool"]
