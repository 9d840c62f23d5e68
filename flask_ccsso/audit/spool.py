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

Every failure of the spool itself (directory not creatable, read-only or full
file system, permissions, a corrupt file) is raised as :class:`SpoolError`
carrying the *original* cause (``ENOSPC``, ``SQLITE_FULL``...), never a
secondary error from cleaning up. A row whose content is not a well-formed
event comes back from :meth:`Spool.read` as a :class:`BadRow`, so the sink
can quarantine it instead of stalling on it.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import math
import os
import re
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigError
from .events import AuditEvent

log = logging.getLogger("flask_ccsso.audit")


class SpoolError(Exception):
    """The spool could not be read or written. ``reason`` names the real cause, e.g.
    ``ENOSPC (No space left on device)`` or ``SQLITE_FULL (database or disk is full)``;
    it holds no path and no event content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe_io_error(exc: BaseException) -> str:
    """A short name for a local I/O failure: the errno or SQLite code plus its text."""
    if isinstance(exc, SpoolError):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror or os.strerror(exc.errno)})"
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or _SQLITE_NAMES.get(str(exc)) or type(exc).__name__
        return f"{name} ({exc})"
    return type(exc).__name__


# Python 3.10's sqlite3 errors carry no result code (``sqlite_errorname`` is 3.11+), but
# SQLite's own text for each code (``sqlite3_errstr``) is fixed: it names the codes a
# spool meets there, so operators read the same ``SQLITE_...`` on every Python.
_SQLITE_NAMES = {
    "database or disk is full": "SQLITE_FULL",
    "file is not a database": "SQLITE_NOTADB",
    "database disk image is malformed": "SQLITE_CORRUPT",
    "disk I/O error": "SQLITE_IOERR",
    "attempt to write a readonly database": "SQLITE_READONLY",
    "unable to open database file": "SQLITE_CANTOPEN",
    "access permission denied": "SQLITE_PERM",
    "database is locked": "SQLITE_BUSY",
    "database table is locked": "SQLITE_LOCKED",
    "interrupted": "SQLITE_INTERRUPT",
}


def _fcntl() -> Any:
    """``fcntl``, imported when the replay lock is first taken: it is POSIX only,
    and importing the package must work everywhere."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise SpoolError("the audit spool's replay lock needs a POSIX system (fcntl: Linux, macOS, BSD); "
                         "run with the audit spool on such a system, or turn the spool off.") from None
    return fcntl


def _spool_error(exc: BaseException) -> SpoolError:
    err = SpoolError(describe_io_error(exc))
    err.__cause__ = exc
    return err


#: how every file in the spool directory is opened: never through a symlink (one planted there
#: would redirect audit events -- personal data -- or the replay lock into the file it names:
#: ``ELOOP``, a :class:`SpoolError` like any other unwritable file), never inherited by a child
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_private(path: str, flags: int) -> int:
    """Open (creating it ``0600``: events hold personal data) the spool-directory file ``path``,
    without following a symlink. Raises ``OSError``."""
    return os.open(path, flags | os.O_CREAT | _NO_FOLLOW, 0o600)


def _private_file(path: str) -> None:
    """Create ``path`` readable by this user only, before SQLite opens it: a symlink in its
    place is refused here (SQLite itself would follow it)."""
    os.close(_open_private(path, os.O_APPEND | os.O_WRONLY))


def ensure_dir(path: str) -> str:
    """Create the spool (or journal) directory ``0700`` and check that it is private: a real
    directory (not a symlink), this user's own, writable by nobody else.

    Only then do the no-follow opens of the files in it hold: SQLite opens the spool by
    name, so another user who could write to the directory could swap a symlink in
    between our check of the file and SQLite's open of it. A directory that fails the
    check is refused (``EACCES``), like an unwritable one: the events go on to the
    next fallback (memory, then the loss counter), never into a file someone else steers.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EACCES, "the audit spool directory is a symlink or not a directory")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise OSError(errno.EACCES, "the audit spool directory belongs to another user (chown it to this one)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(errno.EACCES, "the audit spool directory is writable by other users (chmod 700 it)")
    # and no directory above it lets everyone rename entries (which would move the spool directory
    # away and put another in its place): world-writable without the sticky bit (/tmp has it)
    parent = os.path.dirname(os.path.realpath(path))
    while True:
        up = os.stat(parent)
        if up.st_mode & stat.S_IWOTH and not up.st_mode & stat.S_ISVTX:
            raise OSError(errno.EACCES, "a directory above the audit spool directory is writable by everyone "
                                        "(without the sticky bit); put spoolDir somewhere private")
        above = os.path.dirname(parent)
        if above == parent:
            return path
        parent = above


def _finish(db: sqlite3.Connection, exc: BaseException) -> None:
    """Roll back after ``exc`` without letting a failing ROLLBACK replace it.

    SQLite rolls a transaction back by itself on ``SQLITE_FULL``, ``SQLITE_IOERR``
    and friends; a second ``ROLLBACK`` then fails with "no transaction is
    active", and that error used to be the one logged instead of the full disk.
    """
    if not db.in_transaction:
        return
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error as rollback_exc:
        note = f"(the rollback failed too: {describe_io_error(rollback_exc)})"
        if sys.version_info >= (3, 11):  # exception notes are 3.11+; on 3.10 ``exc`` stays as it is
            exc.add_note(note)


# -- reading rows back ---------------------------------------------------------

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REQUIRED_STR = ("id", "time", "type", "outcome")
_OPTIONAL_STR = ("reason", "provider", "skill", "via", "request_id", "client_ip", "user_agent", "detail")
_KNOWN_KEYS = frozenset(("schema_version", "data", "actor", "claims", "groups") + _REQUIRED_STR + _OPTIONAL_STR)


@dataclass(frozen=True)
class BadRow:
    """A spool row that is not a well-formed event (see :func:`decode_row`)."""

    seq: int
    #: the row's event id when it is a plain token (safe to log), else ``None``
    event_id: str | None
    raw: bytes
    problem: str

    def to_dead_letter(self) -> dict[str, Any]:
        return {"spool_seq": self.seq, "event_id": self.event_id,
                "raw_b64": base64.b64encode(self.raw).decode("ascii")}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _is_json_value(value: Any, depth: int = 0) -> bool:
    """Plain JSON that serialises back (finite numbers, string keys, bounded depth)."""
    if depth > 32:
        return False
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v, depth + 1) for k, v in value.items())
    return False


def _check_event_dict(data: Any) -> str | None:
    """Why ``data`` is not an event as :meth:`AuditEvent.to_dict` writes it, or ``None``."""
    if not isinstance(data, dict):
        return "not a JSON object"
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        return "unknown keys"
    for key in _REQUIRED_STR:
        if not isinstance(data.get(key), str) or not data[key]:
            return f"'{key}' is missing or not a string"
    for key in _OPTIONAL_STR:
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"'{key}' is not a string"
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        return "'schema_version' is not an integer"
    for key in ("actor", "claims"):
        if data.get(key) is not None and not (isinstance(data[key], dict) and _is_json_value(data[key])):
            return f"'{key}' is not an object"
    if data.get("data") is not None and not (isinstance(data["data"], dict) and _is_json_value(data["data"])):
        return "'data' is not an object"
    groups = data.get("groups")
    if groups is not None and not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
        return "'groups' is not a list of strings"
    return None


def decode_row(seq: int, event_id: bytes | None, body: bytes | None) -> AuditEvent | BadRow:
    """The event a spool row holds, or a :class:`BadRow` saying why it holds none.

    Validated as a *class*: anything that is not UTF-8 JSON of exactly the
    shape :meth:`AuditEvent.to_dict` writes (types included, no NaN/Infinity)
    is bad, so a sink never sees input that could make it raise on content.
    """
    raw = body if isinstance(body, bytes) else b""
    try:
        rid = event_id.decode("ascii") if isinstance(event_id, bytes) else None
    except UnicodeDecodeError:
        rid = None
    safe_id = rid if rid is not None and _SAFE_ID.fullmatch(rid) else None
    if not isinstance(body, bytes):
        return BadRow(seq, safe_id, raw, "empty body")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return BadRow(seq, safe_id, raw, "not UTF-8 JSON")
    problem = _check_event_dict(data)
    if problem is not None:
        return BadRow(seq, safe_id, raw, problem)
    if rid is not None and data["id"] != rid:
        return BadRow(seq, safe_id, raw, "event id does not match its row")
    try:
        event = AuditEvent.from_dict(data)
        event.to_json()
    except (TypeError, ValueError, KeyError) as exc:  # pragma: no cover - the checks above should catch it
        return BadRow(seq, safe_id, raw, f"cannot rebuild the event ({type(exc).__name__})")
    return event


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
        self._disk_signature: tuple[Any, ...] = ()
        # Nothing is created until the first append: a healthy sink leaves no files behind.
        # A spool left by an earlier process is opened (and then replayed) straight away.
        self._count = self._open_existing() if os.path.exists(self.path) else 0

    def _open_existing(self) -> int:
        """Count an existing spool's rows; a file that is not a readable spool stops start-up."""
        try:
            return self._count_rows()
        except SpoolError as exc:
            raise ConfigError(self.path, f"is not a readable audit spool: {exc.reason}.",
                              "move the file aside (keep it: it may hold undelivered audit events), "
                              "fix the directory's permissions or free disk space, then start again.") from None

    def _db(self) -> sqlite3.Connection:
        """The connection, creating the file on first use. Call with ``self._lock`` held.

        Raises :class:`SpoolError` when the directory or file cannot be made or opened.
        """
        if self._conn is None:
            if self._closed:
                raise RuntimeError("the audit spool is closed")
            conn: sqlite3.Connection | None = None
            try:
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
            except (OSError, sqlite3.Error) as exc:
                if conn is not None:
                    conn.close()
                raise _spool_error(exc) from exc
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        """Forget a connection after a failure, so the next call reopens the file
        (the disk may have been freed, the file replaced). Call with ``self._lock`` held."""
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _count_rows(self) -> int:
        with self._lock:
            if self._conn is None and not os.path.exists(self.path):
                return 0
            db = self._db()
            try:
                return int(db.execute("SELECT count(*) FROM spool").fetchone()[0])
            except sqlite3.Error as exc:
                self._drop_connection()
                raise _spool_error(exc) from exc

    def __len__(self) -> int:
        """Rows this process knows of (cheap; refreshed from disk by :meth:`refresh`)."""
        return self._count

    def refresh(self) -> int:
        self._count = self._count_rows()
        return self._count

    def changed_on_disk(self) -> bool:
        """Whether the spool file (or its write-ahead log) changed since the last call: another
        process may have appended rows. Two ``stat`` calls; no SQLite work."""
        sig: list[tuple[int, int, int] | None] = []
        for path in (self.path, self.path + "-wal"):
            try:
                st = os.stat(path)
            except OSError:
                sig.append(None)
                continue
            sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
        seen, self._disk_signature = self._disk_signature, tuple(sig)
        return seen != self._disk_signature and self._disk_signature[0] is not None

    def _write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Run ``sql`` for every row in one transaction; :class:`SpoolError` on failure.

        Call with ``self._lock`` held. The *first* error is the one raised.
        """
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException as exc:
                _finish(db, exc)
                raise
        except sqlite3.Error as exc:
            self._drop_connection()
            raise _spool_error(exc) from exc
        return max(cur.rowcount, 0)

    def append(self, events: Iterable[AuditEvent]) -> int:
        """Append ``events`` in order, all or none. :class:`SpoolError` when the spool cannot take them."""
        rows = [(e.id, e.to_json()) for e in events]
        if not rows:
            return 0
        with self._lock:
            self._write("INSERT INTO spool (event_id, body) VALUES (?, ?)", rows)
            self._count += len(rows)
        return len(rows)

    def read(self, limit: int, after: int = 0) -> list[tuple[int, AuditEvent | BadRow]]:
        """The oldest ``limit`` rows with a sequence number above ``after``, in order:
        ``(seq, event)``, or ``(seq, BadRow)`` for a row that holds no well-formed event.
        Raw bytes are read, so not even invalid UTF-8 in a row can make the query fail."""
        return self._select("seq > ? ORDER BY seq LIMIT ?", (after, limit))

    def read_seqs(self, seqs: Sequence[int]) -> list[tuple[int, AuditEvent | BadRow]]:
        """The rows with these sequence numbers that still exist, in order (as :meth:`read`)."""
        wanted = sorted(set(seqs))[:500]
        if not wanted:
            return []
        return self._select(f"seq IN ({','.join('?' * len(wanted))}) ORDER BY seq", tuple(wanted))

    def _select(self, where: str, params: tuple[Any, ...]) -> list[tuple[int, AuditEvent | BadRow]]:
        with self._lock:
            if self._conn is None and not os.path.exists(self.path):
                return []
            db = self._db()
            try:
                rows = db.execute(
                    f"SELECT seq, CAST(event_id AS BLOB), CAST(body AS BLOB) FROM spool WHERE {where}", params
                ).fetchall()
            except sqlite3.Error as exc:
                self._drop_connection()
                raise _spool_error(exc) from exc
        return [(seq, decode_row(seq, eid, body)) for seq, eid, body in rows]

    def peek(self, limit: int) -> list[tuple[int, AuditEvent]]:
        """The oldest ``limit`` well-formed events, in order, with their sequence numbers
        (bad rows are skipped here; :meth:`read` returns them)."""
        return [(seq, e) for seq, e in self.read(limit) if isinstance(e, AuditEvent)]

    def delete(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            deleted = self._write("DELETE FROM spool WHERE seq = ?", [(s,) for s in seqs])
            self._count = max(0, self._count - deleted)

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
        fcntl = _fcntl()
        try:
            ensure_dir(self.directory)
            fd = _open_private(self._lock_path, os.O_RDWR)
        except OSError as exc:
            raise _spool_error(exc) from exc
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
                _fcntl().flock(self._lock_fd, _fcntl().LOCK_UN)
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
    """Events that will never be delivered, kept as JSON lines for a person to look at.

    Two kinds of line, both with ``dead_at`` (epoch seconds) and ``problem``:
    events a sink refused as malformed (HTTP 4xx, a database data error) carry
    ``event``; spool rows that hold no well-formed event carry ``spool_seq``,
    ``event_id`` (or ``null``) and ``raw_b64`` (the row's bytes, base64). The
    file is append-only and ``0600``, next to the spool.
    """

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"ccsso-audit-{name}.deadletter.jsonl")
        self._lock = threading.Lock()

    def write(self, events: Sequence[AuditEvent], problem: str) -> None:
        now = time.time()
        self._append({"dead_at": now, "problem": problem, "event": e.to_dict()} for e in events)

    def write_rows(self, rows: Sequence[BadRow]) -> None:
        """Quarantine undecodable spool rows. :class:`SpoolError` if the file cannot be written."""
        now = time.time()
        self._append({"dead_at": now, "problem": r.problem, **r.to_dead_letter()} for r in rows)

    def _append(self, records: Iterable[Mapping[str, Any]]) -> None:
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
        with self._lock:
            try:
                ensure_dir(self.directory)
                fd = _open_private(self.path, os.O_APPEND | os.O_WRONLY)
                try:
                    size = os.fstat(fd).st_size
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        os.fsync(fd)
                    except OSError:
                        try:
                            os.ftruncate(fd, size)  # no half line for the next append to run into
                        except OSError:
                            pass
                        raise
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _spool_error(exc) from exc


__all__ = ["BadRow", "DeadLetter", "Spool", "SpoolError", "decode_row", "describe_io_error"]
