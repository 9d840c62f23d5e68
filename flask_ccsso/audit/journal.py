"""The crash journal: every event on local disk before the request that made it completes.

The sinks' queues live in memory, so a worker killed with ``SIGKILL`` (the
OOM killer, gunicorn's worker timeout, a crash in a C extension) used to take
its last second or so of events with it. Now the request thread first appends
each event to a per-process, append-only file in the spool directory, then
queues it. One ``os.write`` of a small msgpack record, no ``fsync``: the data
is in the kernel's page cache when ``write`` returns, and the page cache
survives the death of the process (not a power cut: see ``docs/audit.md``).

Files, all ``0600`` in ``spoolDir``::

    ccsso-audit-journal-<token>.lock         held with flock(LOCK_EX) while the process lives
    ccsso-audit-journal-<token>.<n>.log      segments, records appended in order

A record is ``<length u32><crc32 u32><msgpack payload>`` (little endian);
reading stops at the first short or damaged record of a segment (only a power
cut can leave one).

The pipeline's writer *rotates* the segment about twice a second, noting how
many events each sink had been offered, and deletes a segment once every sink
has handled that many (delivered, spooled or dead-lettered: each is durable
without the journal). So the journal holds about the last second of events,
and nothing while the process is idle.

At start, and every few seconds after, a pipeline looks for journals whose
lock no one holds: their process is dead. It takes the lock, appends their
records to its sinks' spools (then the normal replay delivers them) and deletes
the files. An event can then arrive twice (it was delivered, but its segment
not deleted yet); collectors de-duplicate on the event ``id`` and the SQL sink
ignores ids it holds.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import secrets
import stat
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping

import msgspec

from .events import AuditEvent, captured_from_plain
from .spool import _check_event_dict, _fcntl, describe_io_error, ensure_dir

log = logging.getLogger("flask_ccsso.audit")

_HEADER = struct.Struct("<II")
_PREFIX = "ccsso-audit-journal-"
#: a record bigger than this is damage, not an event (events are a few kB at most)
_MAX_RECORD = 16 * 1024 * 1024

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def encode_event(event: AuditEvent) -> bytes:
    """The journal's form of an event, on the request thread, so as cheap as can be.

    An event made lazily (:meth:`AuditEvent.from_capture`) is written as its
    :data:`~flask_ccsso.audit.events.Captured` tuple, a msgpack *array*: nothing is
    cleaned or built here (the id is in the tuple, so the recovered event keeps it).
    A tuple holding a value msgpack cannot encode (a sender's own object) and an
    eagerly built event are written as :meth:`AuditEvent.to_dict`, a msgpack *map*.
    """
    captured = getattr(event, "captured", None)
    if captured is not None:
        try:
            return _encode(captured)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
            pass  # RecursionError: a value nested too deep (the built event drops nested values)
    return _encode(event.to_dict())


def decode_event(payload: bytes, max_field_length: int = 1024) -> AuditEvent | None:
    """The event a record holds, or ``None`` when it holds no well-formed event
    (a map gets the same shape check as a spool row; an array, the captured tuple's).

    Never raises: a record that cannot become an event is skipped, whatever the reason (nested
    deeper than the decoder recurses, a time no calendar holds) -- it must not stop the
    recovery of the records and journals after it."""
    try:
        data = _decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    try:
        if isinstance(data, list):
            captured = captured_from_plain(data)
            if captured is None:
                return None
            event = AuditEvent.from_capture(captured, max_field_length)
            event.to_json()  # built now: a value that cannot be is a bad record, not a stuck spool
            return event
        if _check_event_dict(data) is not None:
            return None
        return AuditEvent.from_dict(data)
    except Exception:  # noqa: BLE001 - any reason at all: a bad record (OverflowError, OSError, ...)
        return None


#: ``(events counted, events lost so far)`` for one sink; ``None``: not durable yet
Mark = tuple[int, int] | None


def _done_with(done: Mark, offered: Mark) -> bool:
    if done is None or offered is None:
        return False
    return done[0] >= offered[0] and done[1] == offered[1]


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: str) -> Iterator[bytes]:
    """The intact records of one segment, in order (stops at the first damaged one).

    Only a regular file is read, never through a symbolic link, one record at a time: what
    else sits under a segment's name in a spool directory others can write (a FIFO, which
    would block the reader for good; ``/dev/zero``, which would fill its memory) holds no
    records. The caller then deletes the name (the link, not its target)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        log.error("audit: %s is a symbolic link, not a crash journal segment; ignored", path)
        return
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.error("audit: %s is not a regular file, not a crash journal segment; ignored", path)
            return
        while True:
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            length, crc = _HEADER.unpack(header)
            if length > _MAX_RECORD:
                return
            payload = fh.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            yield payload


#: every open journal in this process, so a forked child can start its own
_LIVE: weakref.WeakSet[Journal] = weakref.WeakSet()


def _journals_after_fork() -> None:
    for journal in list(_LIVE):
        journal._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_journals_after_fork)


class Journal:
    """This process's crash journal in ``directory``.

    :meth:`append` is called on the request thread with :attr:`lock` held (the
    pipeline queues the event under the same lock, so a rotation never falls
    between the two). Everything else runs in a writer thread.
    """

    #: rotate the current segment at most this often (seconds)
    rotate_interval = 0.5
    #: a journal that failed is tried again after this many seconds
    retry_interval = 30.0

    def __init__(self, directory: str, max_field_length: int = 1024) -> None:
        self.directory = directory
        self.max_field_length = max_field_length
        #: held while an event is journaled and queued (request threads) and while rotating
        self.lock = threading.Lock()
        #: one upkeep at a time (the writer's, or a flush's)
        self._upkeep = threading.Lock()
        self._token = ""
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment = 0
        self._segment_bytes = 0
        #: closed segments, oldest first: (path, each sink's offered mark at rotation)
        self._closed: list[tuple[str, Mapping[int, Mark]]] = []
        self._rotated_at = 0.0
        self._error: str | None = None
        self._retry_at = 0.0
        self._created_dir = False
        self._shut = False
        _LIVE.add(self)

    # -- paths ---------------------------------------------------------------------------

    def _lock_path(self, token: str) -> str:
        return os.path.join(self.directory, f"{_PREFIX}{token}.lock")

    def _segment_path(self, token: str, n: int) -> str:
        return os.path.join(self.directory, f"{_PREFIX}{token}.{n:08d}.log")

    def _segments_of(self, token: str) -> list[str]:
        return sorted(glob.glob(os.path.join(glob.escape(self.directory), f"{_PREFIX}{glob.escape(token)}.*.log")))

    @property
    def error(self) -> str | None:
        """Why the journal stopped working (``ENOSPC (...)``), or ``None``."""
        return self._error

    # -- the request side ------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Append one record. Call with :attr:`lock` held. Never raises: a failing journal is
        logged once and tried again every :attr:`retry_interval` seconds (meanwhile the events
        still go to the sinks as before, only without a copy on disk)."""
        if self._shut or (self._error is not None and time.monotonic() < self._retry_at):
            return
        try:
            if self._fd is None:
                self._open_segment()
            assert self._fd is not None
            data = frame(payload)
            written = os.write(self._fd, data)
            while written < len(data):  # a regular file takes it whole unless the disk is full
                written += os.write(self._fd, data[written:])
            self._segment_bytes += len(data)
        except (OSError, AssertionError) as exc:
            self._fail(exc)
            return
        if self._error is not None:
            log.warning("audit: the crash journal in %s works again", self.directory)
            self._error = None

    def _open_segment(self) -> None:
        if self._lock_fd is None:
            self._take_lock()
        self._segment += 1
        self._fd = os.open(self._segment_path(self._token, self._segment),
                           os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o600)
        self._segment_bytes = 0

    def _take_lock(self) -> None:
        fcntl = _fcntl()
        existed = os.path.lexists(self.directory)
        ensure_dir(self.directory)  # every time: an existing directory must be private too (spool.ensure_dir)
        self._created_dir = self._created_dir or not existed
        token = f"{os.getpid()}-{secrets.token_hex(6)}"
        # locked under a name no scan looks at, then renamed: a scan never finds it unlocked
        # (and takes this live process for a dead one)
        tmp = self._lock_path(token) + ".new"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, self._lock_path(token))
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._token = token
        self._lock_fd = fd

    def _fail(self, exc: BaseException) -> None:
        first = self._error is None
        self._error = describe_io_error(exc)
        self._retry_at = time.monotonic() + self.retry_interval
        if first:
            log.error("audit: the crash journal in %s cannot be written (%s); events are still queued, but a "
                      "process killed now loses the ones not yet delivered or spooled", self.directory,
                      self._error)
        # a later append starts a new segment: none lands behind a half-written record
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- the writer side ---------------------------------------------------------------------

    def maintain(self, offered: Callable[[], Mapping[int, Mark]], handled: Callable[[], Mapping[int, Mark]],
                 force: bool = False) -> None:
        """Rotate the current segment (at most every :attr:`rotate_interval` seconds) and delete
        the segments every sink is done with.

        Both callables give, for each sink (by ``id``), a :data:`Mark`: ``(count, lost)``.
        ``offered()`` (called with :attr:`lock` held) counts the events offered; ``handled()``
        the events handled durably (delivered, spooled, dead-lettered), or ``None`` while the
        sink holds some in memory only (its backlog). A segment is deleted once every sink has
        handled what it had been offered at rotation *and* lost none since (a segment that saw
        a loss stays for the next start to recover: a duplicate is better than a gap).
        """
        with self._upkeep:
            self._maintain(offered, handled, force)

    def _maintain(self, offered: Callable[[], Mapping[int, Mark]], handled: Callable[[], Mapping[int, Mark]],
                  force: bool) -> None:
        now = time.monotonic()
        if force or now - self._rotated_at >= self.rotate_interval:
            self._rotated_at = now
            with self.lock:
                if self._fd is not None and self._segment_bytes:
                    self._closed.append((self._segment_path(self._token, self._segment), offered()))
                    self._close_fd()
        if not self._closed:
            return
        done = handled()
        kept = []
        for path, snapshot in self._closed:
            if not all(_done_with(done.get(key), mark) for key, mark in snapshot.items()):
                kept.append((path, snapshot))
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.debug("audit: could not delete journal segment %s (%s)", path, describe_io_error(exc))
                kept.append((path, snapshot))
        self._closed = kept

    def recover(self, keep: Callable[[list[AuditEvent]], None]) -> int:
        """Hand the events of every dead process's journal to ``keep`` (which must make them
        durable, or raise), then delete that journal. Returns how many events were recovered."""
        if not os.path.lexists(self.directory):
            return 0
        try:
            ensure_dir(self.directory)
        except OSError as exc:
            log.error("audit: crash journals in %s were not recovered: %s", self.directory, describe_io_error(exc))
            return 0
        fcntl = _fcntl()
        total = 0
        for lock_path in sorted(glob.glob(os.path.join(glob.escape(self.directory), f"{_PREFIX}*.lock"))):
            token = os.path.basename(lock_path)[len(_PREFIX):-len(".lock")]
            if token == self._token:
                continue
            try:
                fd = os.open(lock_path, os.O_RDWR)
            except OSError:
                continue  # gone meanwhile: another process recovered it
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process is alive (or another one is recovering it)
                if not os.path.exists(lock_path):
                    continue  # recovered and removed between our open and our lock
                total += self._recover_one(token, keep)
                os.unlink(lock_path)
            finally:
                os.close(fd)
        return total

    def _recover_one(self, token: str, keep: Callable[[list[AuditEvent]], None]) -> int:
        count = 0
        for path in self._segments_of(token):
            events: list[AuditEvent] = []
            bad = 0
            for payload in read_records(path):
                event = decode_event(payload, self.max_field_length)
                if event is None:
                    bad += 1
                else:
                    events.append(event)
            if events:
                keep(events)
            if bad:
                log.error("audit: %d record(s) of the crash journal %s hold no valid event; skipped", bad, path)
            os.unlink(path)
            count += len(events)
        if count:
            log.warning("audit: recovered %d event(s) from the crash journal of a process that died (%s); "
                        "they are spooled for delivery", count, token)
        return count

    def close(self, *, keep_files: bool) -> None:
        """At shutdown: delete this process's journal when every event reached a sink or a spool
        (``keep_files=False``); otherwise leave it for the next start to recover."""
        with self.lock:
            self._close_fd()
            paths = [p for p, _ in self._closed]
            if self._token:
                paths = self._segments_of(self._token)
            self._closed = []
            if not keep_files:
                for path in paths:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                if self._token:
                    with contextlib.suppress(OSError):
                        os.unlink(self._lock_path(self._token))
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
            if not keep_files and self._created_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(self.directory)  # only if empty: a healthy run leaves nothing behind
            self._shut = True

    def _after_fork(self) -> None:
        """In a forked child: the parent's journal files and lock are the parent's (closing our
        copies of the descriptors keeps its flock); this process starts its own."""
        self.lock = threading.Lock()
        self._upkeep = threading.Lock()
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = None
        self._lock_fd = None
        self._token = ""
        self._segment = 0
        self._segment_bytes = 0
        self._closed = []


__all__ = ["Journal", "decode_event", "encode_event", "read_records"]
