"""The sink base class: batching, retry with backoff, spooling, dead letters.

A backend implements :meth:`Sink.write_batch` (and, if it holds a connection,
:meth:`Sink.open` / :meth:`Sink.close`). It signals trouble by raising:

- :class:`TransientSinkError` (or any other exception): the backend is down or
  slow; the batch is retried with exponential backoff and jitter, then spooled.
- :class:`PoisonBatchError`: the backend refused the *content* (HTTP 4xx). The
  batch is split to find the refused events, which go to the dead-letter file;
  they are never retried, so a bad event cannot block the others for ever.

A spool row that holds no well-formed event (see
:func:`~flask_ccsso.audit.spool.decode_row`) is quarantined the same way:
copied to the dead-letter file as raw bytes, deleted from the spool, and the
replay goes on with the next row.

The dead-letter file failing is its own condition, never taken for the sink
or the spool failing: bad rows then stay in the spool, skipped, until the file
can be written (retried on a backoff); events the sink refuses are lost and
counted; the failure is logged once.

When the sink is down *and* its spool cannot be written (read-only or full
file system, permissions, a corrupt file), events wait in a bounded in-memory
backlog, in order, and go to the spool or the sink as soon as either takes
them. An event that finds the backlog full is lost: counted in
``stats.lost``, reported by one log line and the ``auth.failure_threshold``
signal (``key_type="audit_sink"``) at most once a minute, never one traceback
per event.

Each sink runs one daemon thread fed by its own bounded queue, so a slow sink
never holds back another one, and a request thread only ever appends to a
deque (or, for a security event when that deque is full, to the spool or the
backlog).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ...exceptions import ConfigError
from ..events import AuditEvent
from ..settings import AuditSettings, SinkSettings
from ..spool import BadRow, DeadLetter, Spool, SpoolError

log = logging.getLogger("flask_ccsso.audit")



#: every sink in this process, so a forked child can restart their threads
_LIVE_SINKS: weakref.WeakSet[Sink] = weakref.WeakSet()


def _restart_sinks_in_child() -> None:
    for sink in list(_LIVE_SINKS):
        try:
            sink._restart_in_child()
        except Exception:
            log.exception("audit sink %r could not restart after fork", getattr(sink, "name", "?"))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_sinks_in_child)

class SinkError(Exception):
    """Base of the errors a backend raises from :meth:`Sink.write_batch`."""


class TransientSinkError(SinkError):
    """Try again later. ``retry_after`` (seconds) is honoured when the backend says so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PoisonBatchError(SinkError):
    """The backend refused the batch's content; retrying it will not help."""

    def __init__(self, message: str, *, splittable: bool = True) -> None:
        super().__init__(message)
        self.splittable = splittable


@dataclass
class SinkStats:
    """Counters for one sink (per process, since start).

    ``spooled``: events written to the spool; ``backlogged``: events kept in
    memory because the spool failed; ``dead_lettered``: events the backend
    refused; ``quarantined``: spool rows holding no well-formed event, moved
    to the dead-letter file; ``dropped``: low-value events dropped on a full
    queue (policy); ``lost``: events that should have been kept and were not
    (backlog full, still in memory at shutdown, offered after shutdown while
    the spool failed, or refused by the sink while the dead-letter file
    failed); ``spool_errors``: failed spool operations; ``dead_letter_errors``:
    failed dead-letter writes.
    """

    written: int = 0
    spooled: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    overflow_spooled: int = 0
    failures: int = 0
    lost: int = 0
    quarantined: int = 0
    backlogged: int = 0
    spool_errors: int = 0
    dead_letter_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


#: how often (seconds) the loss summary and alert, and an unexpected worker error, may be logged
REPORT_INTERVAL = 60.0
#: pauses (seconds) before trying a busy spool again after the pipeline closed (about 1.5 s in all)
AFTER_STOP_BUSY_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8)

#: ``on_alert(sink_name, lost_count, window)``: events were lost (wired to a signal by the pipeline)
AlertHook = Callable[[str, int, float], None]


class Sink:
    """One audit destination with its queue, worker thread, spool and dead-letter file."""

    #: how many spooled batches one worker iteration replays (each followed by the live events
    #: queued meanwhile) before it looks at flushes, the stop flag and the shared spool again
    replay_batches_per_turn = 50
    #: how often (seconds) the worker looks for rows other processes appended to the shared spool
    spool_scan_interval = 1.0

    def __init__(self, settings: SinkSettings, audit: AuditSettings, *, spool_dir: str) -> None:
        self.settings = settings
        self.audit = audit
        self.name = settings.name
        self.spool = Spool(spool_dir, settings.name)
        self.dead_letter = DeadLetter(spool_dir, settings.name)
        self.stats = SinkStats()
        #: called (from the worker thread) when events were lost; see :class:`AuditPipeline`
        self.on_alert: AlertHook | None = None
        #: called from the worker thread once per loop (the pipeline's crash-journal upkeep)
        self.on_tick: Callable[[], None] | None = None
        self._queue: deque[AuditEvent] = deque()
        self._cv = threading.Condition()
        self._offered = 0
        self._handled = 0
        self._flush_wanted = 0
        self._stopping = False
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._opened = False
        self._failures = 0
        self._down_until = 0.0  # monotonic
        #: another process held the shared spool's replay lock: look again at this time (monotonic)
        self._replay_retry_at = 0.0
        #: when the shared spool was last looked at for rows other processes appended (monotonic)
        self._spool_scanned_at = 0.0
        self._last_drop_warning = 0.0
        self._dropped_since_warning = 0
        # the spool's own health, and the in-memory backlog used while it fails
        self._backlog: deque[AuditEvent] = deque()
        self._backlog_lock = threading.RLock()
        self._spool_error: str | None = None
        self._spool_failures = 0
        self._spool_retry_at = 0.0  # monotonic
        #: spool rows already delivered (or quarantined) whose delete failed: deleted before the next
        #: replay instead of being sent again while the disk is full
        self._undeleted: set[int] = set()
        #: the spool could not be read (or locked) for replay: only then may the backlog overtake it
        self._spool_unreadable = False
        # the dead-letter file's health: its failures are not the spool's, nor the sink's
        self._dead_letter_error: str | None = None
        self._dead_letter_failures = 0
        self._dead_letter_retry_at = 0.0  # monotonic
        #: bad spool rows not quarantined yet (the dead-letter file failed): left in the spool, skipped
        self._held: set[int] = set()
        #: the worker has finished: an event offered now goes straight to the spool, or is lost and counted
        self._finished = False
        #: the fresh batch the worker is writing: kept by :meth:`stop` if the write outlives the budget
        self._inflight: list[AuditEvent] = []
        # losses not yet reported, and when they last were
        self._unreported_lost = 0
        self._loss_reason = ""
        self._last_loss_report = 0.0
        self._last_worker_error = 0.0
        _LIVE_SINKS.add(self)

    # -- what a backend provides ---------------------------------------------------

    def open(self) -> None:
        """Connect / create tables. Called in the worker thread before the first write."""

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        """Deliver ``events`` (in order) or raise. Must be safe to call again with the same events."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Called once, in the worker thread, at shutdown."""

    def after_fork(self) -> None:
        """In a forked child: forget connections inherited from the parent
        (never close them: they are the parent's)."""

    # -- the request side ---------------------------------------------------------------

    def offer(self, event: AuditEvent) -> bool:
        """Queue an event without blocking. Returns ``False`` when it was dropped.

        Queue full: a security event is kept in the durable spool instead (or,
        while the spool fails, in the bounded backlog); any other event is
        dropped, counted, and a warning is logged at most once a minute.
        """
        with self._cv:
            if len(self._queue) < self.audit.queue_size and not self._stopping:
                self._queue.append(event)
                self._offered += 1
                n = len(self._queue)
                if n == 1 or n >= self.audit.batch_size:
                    self._cv.notify()
                return True
        if event.security or self._stopping:
            kept = self._stash([event])
            self.stats.overflow_spooled += kept
            return bool(kept)
        self.stats.dropped += 1
        self._dropped_since_warning += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= 60.0 or self._last_drop_warning == 0.0:
            self._last_drop_warning = now
            log.warning("audit sink %r: queue full (%d events); dropped %d low-value event(s) such as %s "
                        "(security events are spooled instead)", self.name, self.audit.queue_size,
                        self._dropped_since_warning, event.type)
            self._dropped_since_warning = 0
        return False

    # -- lifecycle -------------------------------------------------------------------------

    def _restart_in_child(self) -> None:
        """``fork()`` copies no threads: under ``gunicorn --preload`` the
        pipeline was started in the master, and each worker needs its own
        writer thread, lock and connections, or its events would sit in
        memory and be lost at exit."""
        was_running = self._thread is not None and not self._stopping
        self._cv = threading.Condition()
        self._backlog_lock = threading.RLock()
        self._backlog = deque()  # the parent's to deliver; a copy here would arrive twice
        self._undeleted = set()
        self._held = set()
        self._inflight = []
        self._thread = None
        self._opened = False
        self.spool.after_fork()
        self.after_fork()
        if was_running:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"ccsso-audit-{self.name}", daemon=True)
            self._thread.start()

    @property
    def is_down(self) -> bool:
        return self._failures > 0

    @property
    def pending(self) -> int:
        """Events queued in memory, waiting in the spool, or in the backlog."""
        return len(self._queue) + self._spooled() + len(self._backlog)

    def _spooled(self) -> int:
        """Spool rows still to deliver (not counting delivered rows whose delete failed)."""
        return max(len(self.spool) - len(self._undeleted) - len(self._held), 0)

    def journal_mark(self, offered: bool) -> tuple[int, int] | None:
        """For the crash journal: ``(events offered or handled, events lost)``; ``None`` when
        handled events may sit in memory only (the backlog), so not durable yet."""
        if offered:
            return self._offered, self.stats.lost
        if self._backlog:
            return None
        return self._handled, self.stats.lost

    @property
    def backlog(self) -> int:
        """Events held in memory because the spool could not take them."""
        return len(self._backlog)

    @property
    def spool_error(self) -> str | None:
        """Why the spool last failed (``ENOSPC (...)``, ``SQLITE_FULL (...)``), ``None`` while it works."""
        return self._spool_error

    def health(self) -> dict[str, Any]:
        """State and counters, for a health endpoint or a monitoring job."""
        return {
            "up": not self.is_down,
            "spool_ok": self._spool_error is None,
            "spool_error": self._spool_error,
            "queued": len(self._queue),
            "in_spool": self._spooled(),
            "backlog": len(self._backlog),
            "backlog_limit": self.audit.backlog_size,
            "dead_letter_ok": self._dead_letter_error is None,
            "dead_letter_error": self._dead_letter_error,
            "quarantine_pending": len(self._held),
            "spool_path": self.spool.path,
            "dead_letter_path": self.dead_letter.path,
            **self.stats.as_dict(),
        }

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything offered so far is delivered (or, if the sink is down, kept for later)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            target = self._offered
            self._flush_wanted += 1
            self._cv.notify_all()
            try:
                while True:
                    done = self._handled >= target and (
                        self.is_down or (self._spooled() == 0 and not self._backlog))
                    if done or self._thread is None or not self._thread.is_alive():
                        return done
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cv.wait(min(remaining, 0.05))
            finally:
                self._flush_wanted -= 1

    def stop(self, timeout: float = 5.0) -> bool:
        """Deliver or spool what is queued, then stop the worker. Returns ``True`` if it finished in time."""
        with self._cv:
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
            finished = not self._thread.is_alive()
        else:
            finished = True
            self._drain_on_stop()
        if finished:
            self.spool.close()
        else:
            self._keep_leftovers(timeout + 1.0)
        return finished

    def _keep_leftovers(self, waited: float) -> None:
        """The worker is still inside a write when the stop budget ran out (a sink that accepts
        but does not answer: an HTTP read timeout longer than the budget, a hung database).

        The process is about to exit and the daemon thread dies with it, so the stopping thread
        keeps what the worker still holds in memory -- the backlog, the batch being written and
        the queue, in that order -- in the spool for the next process (through a connection of
        its own), or counts it as lost. At least once: if that write still succeeds, the batch
        arrives twice (the SQL sink ignores known ids; collectors de-duplicate on ``id``).
        """
        with self._cv:
            events = [*self._inflight, *self._queue]
            self._queue.clear()
            self._inflight = []
        with self._backlog_lock:
            events = [*self._backlog, *events]
            self._backlog.clear()
            self._finished = True  # from here the worker's own late stashes go to the spool too
            kept = self._keep_after_stop(events) if events else 0
        log.warning("audit sink %r was still writing %.1fs after shutdown began (slow or hanging sink); "
                    "kept %d undelivered event(s) in %s for the next start", self.name, waited, kept,
                    self.spool.path)
        self._report_losses(final=True)

    # -- the worker ------------------------------------------------------------------------

    def _next_batch(self) -> list[AuditEvent]:
        """Wait for up to ``batch_size`` events, at most ``flush_interval`` after the first arrived."""
        size = self.audit.batch_size
        with self._cv:
            wait = self.audit.flush_interval
            due = self._next_due()
            if due is not None and not self._queue:
                # something to replay: come back when the sink (or the spool) is due again
                wait = min(wait, max(0.01, due - time.monotonic()))
            if not self._queue and not self._stopping:
                self._cv.wait(wait)
            if not self._queue:
                return []
            first_deadline = time.monotonic() + self.audit.flush_interval
            # no waiting for a full batch while kept events are due: the replay serves the queue too
            replay_due = due is not None and due <= time.monotonic()
            while (len(self._queue) < size and not self._stopping and not self._flush_wanted
                   and not replay_due):
                remaining = first_deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            n = min(size, len(self._queue))
            self._inflight = [self._queue.popleft() for _ in range(n)]  # popped and marked in one step
            return self._inflight

    def _next_due(self) -> float | None:
        """When kept events can next make progress (monotonic), or ``None`` if none wait."""
        candidates = []
        if self._spooled():
            # an unreadable spool is retried on its own backoff, not in a tight loop
            candidates.append(max(self._down_until, self._replay_retry_at,
                                  self._spool_retry_at if self._spool_unreadable else 0.0))
        if self._held:
            candidates.append(self._dead_letter_retry_at)
        if self._backlog:
            candidates.append(self._down_until)
            if self._spool_error is not None:
                candidates.append(self._spool_retry_at)
        return min(candidates) if candidates else None

    def _mark_handled(self, n: int) -> None:
        with self._cv:
            self._handled += n
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            try:
                batch = self._next_batch()
                if batch:
                    try:
                        self._deliver(batch)
                    finally:
                        self._inflight = []
                        self._mark_handled(len(batch))
                self._scan_shared_spool()
                self._replay()
                self._report_losses()
                if self.on_tick is not None:
                    self.on_tick()
                with self._cv:
                    if self._stopping:
                        break
                    if self._flush_wanted:
                        self._cv.notify_all()
            except Exception:  # noqa: BLE001 - the worker must never die
                self._worker_error()
                time.sleep(0.1)
        self._drain_on_stop()

    def _scan_shared_spool(self) -> None:
        """Count the rows other processes appended to the shared spool (the ``sessions revoke``
        CLI while the sink was down, a worker that exited while it was): this process then
        replays them without a restart. Each row is delivered by one process only: the replay
        lock (``flock``) lets one replay at a time, and rows are deleted once delivered."""
        now = time.monotonic()
        if now - self._spool_scanned_at < self.spool_scan_interval:
            return
        self._spool_scanned_at = now
        if self._spool_unreadable or not self.spool.changed_on_disk():
            return
        try:
            self.spool.refresh()
        except SpoolError as exc:
            self._spool_failed(exc)

    def _worker_error(self) -> None:
        """Log an unexpected worker error with its traceback at most once a minute."""
        now = time.monotonic()
        if self._last_worker_error == 0.0 or now - self._last_worker_error >= REPORT_INTERVAL:
            self._last_worker_error = now
            log.exception("audit sink %r: unexpected error in the worker (repeats are not logged for %ds)",
                          self.name, int(REPORT_INTERVAL))
        else:
            log.debug("audit sink %r: unexpected error in the worker again", self.name, exc_info=True)  # noqa: LOG014 - called from the handler

    def _drain_on_stop(self) -> None:
        try:
            while True:
                with self._cv:
                    n = min(self.audit.batch_size, len(self._queue))
                    batch = self._inflight = [self._queue.popleft() for _ in range(n)]
                if not batch:
                    break
                try:
                    self._deliver(batch, attempts=1)
                finally:
                    self._inflight = []
                    self._mark_handled(len(batch))
            # one more try within the budget, also after a failure during the stop itself (a batch
            # spooled a moment ago is delivered now rather than at the next start)
            if (self._spooled() or self._backlog) and time.monotonic() < (self._stop_deadline or 0.0):
                self._down_until = 0.0
                self._replay(deadline=self._stop_deadline or time.monotonic() + 1.0)
            self._abandon_backlog()
        finally:
            self._report_losses(final=True)
            if self._opened:
                try:
                    self.close()
                except Exception:  # closing must not stop the shutdown
                    log.exception("audit sink %r: error while closing", self.name)

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: ``min(max, base * 2**(n-1))`` scaled by 0.5..1."""
        base = max(self.audit.retry_backoff, 0.01)
        return min(self.audit.max_backoff, base * 2.0 ** max(failures - 1, 0)) * random.uniform(0.5, 1.0)

    def _write(self, events: Sequence[AuditEvent]) -> None:
        """Write, isolating refused events into the dead-letter file."""
        if not self._opened:
            self.open()
            self._opened = True
        try:
            self.write_batch(events)
            self.stats.written += len(events)
        except PoisonBatchError as exc:
            if len(events) > 1 and exc.splittable:
                mid = len(events) // 2
                self._write(events[:mid])
                self._write(events[mid:])
                return
            try:
                self.dead_letter.write(events, str(exc))
            except SpoolError as dl_exc:
                # refused for good and no copy possible: a counted loss, not a sink outage to retry
                self._dead_letter_failed(dl_exc)
                self._lose(len(events), f"the sink refused them ({exc}) and the dead-letter file cannot be "
                           f"written ({dl_exc.reason})")
                return
            self._dead_letter_ok()
            self.stats.dead_lettered += len(events)
            log.error("audit sink %r refused %d event(s) (%s); moved to %s", self.name, len(events), exc,
                      self.dead_letter.path)

    def _deliver(self, batch: list[AuditEvent], attempts: int | None = None) -> None:
        if self._backlog or time.monotonic() < self._down_until:
            # the sink is down (or events wait in memory): keep the batch for the replay
            self._stash(batch)
            return
        # A healthy sink takes new events straight away, even while spooled ones wait: the replay
        # interleaves them with spool batches (see _replay_spool), so an outage's backlog drains
        # under continued load instead of every new event queueing behind it.
        attempts = attempts if attempts is not None else self.audit.retry_attempts
        for attempt in range(1, attempts + 1):
            try:
                self._write(batch)
                self._failures = 0
                return
            except Exception as exc:  # noqa: BLE001 - any backend failure is retried, then spooled
                retry_after = getattr(exc, "retry_after", None)
                if attempt == attempts or self._stopping:
                    self._failed(exc, retry_after)
                    self._stash(batch)
                    return
                delay = max(self._backoff(attempt), retry_after or 0.0)
                with self._cv:
                    if not self._stopping:
                        self._cv.wait(delay)

    def _failed(self, exc: BaseException, retry_after: float | None) -> None:
        self._failures += 1
        self.stats.failures += 1
        delay = max(self._backoff(self._failures), retry_after or 0.0)
        self._down_until = time.monotonic() + delay
        if self._failures == 1:
            log.warning("audit sink %r is not accepting events (%s); keeping them in %s and retrying",
                        self.name, _describe(exc), self.spool.path)
        else:
            log.debug("audit sink %r still down (%s); next try in %.1fs", self.name, _describe(exc), delay)

    # -- spool, backlog and losses ---------------------------------------------------------

    def _spool_usable(self) -> bool:
        return self._spool_error is None or time.monotonic() >= self._spool_retry_at

    def _spool_failed(self, exc: SpoolError) -> None:
        """Note a spool failure; the first of a run is logged with its real cause, the rest only counted."""
        self.stats.spool_errors += 1
        self._spool_failures += 1
        self._spool_retry_at = time.monotonic() + self._backoff(self._spool_failures)
        if self._spool_error is None:
            log.error("audit sink %r: its spool %s cannot be used (%s); keeping up to %d events in memory "
                      "until the spool or the sink takes them", self.name, self.spool.path, exc.reason,
                      self.audit.backlog_size)
        else:
            log.debug("audit sink %r: spool still failing (%s)", self.name, exc.reason)
        self._spool_error = exc.reason

    def _spool_ok(self) -> None:
        if self._spool_error is not None:
            log.warning("audit sink %r: its spool works again (after %d failed operations)", self.name,
                        self._spool_failures)
        self._spool_error = None
        self._spool_failures = 0

    def _stash(self, events: Sequence[AuditEvent]) -> int:
        """Keep events the sink did not take, in order: in the spool, or while it fails, in the
        backlog. Returns how many were kept (the rest were lost and counted)."""
        with self._backlog_lock:
            if self._finished:
                return self._keep_after_stop(events)
            if self._backlog:
                self._backlog_to_spool()
            if not self._backlog and self._spool_usable():
                try:
                    self.spool.append(events)
                except SpoolError as exc:
                    self._spool_failed(exc)
                else:
                    self._spool_ok()
                    self.stats.spooled += len(events)
                    return len(events)
            return self._keep_in_memory(events)

    def _keep_after_stop(self, events: Sequence[AuditEvent]) -> int:
        """The worker has finished, yet a request still running at exit offers an event: append it
        to the spool for the next process to replay (a connection of its own: the sink's spool is
        closed), or count it as lost. Call with the backlog lock held."""
        problem = self._append_after_stop(events)
        if problem is not None:
            self._lose(len(events), f"offered after the pipeline closed, and the spool cannot be written ({problem})")
            self._report_losses()
            return 0
        self.stats.spooled += len(events)
        return len(events)

    def _append_after_stop(self, events: Sequence[AuditEvent]) -> str | None:
        """Append ``events`` on a spool connection of their own; ``None``, or what failed. Every
        worker of a stopping server may be spooling its leftovers into this file at once: a
        ``SQLITE_BUSY`` that SQLite's own wait did not ride out is tried again, briefly."""
        for pause in (*AFTER_STOP_BUSY_RETRIES, None):
            try:
                spool = Spool(self.spool.directory, self.name)
                try:
                    spool.append(events)
                finally:
                    spool.close()
                return None
            except (SpoolError, ConfigError) as exc:
                problem = getattr(exc, "reason", None) or type(exc).__name__
                if pause is None or "SQLITE_BUSY" not in problem:
                    return problem
                time.sleep(pause)
        return None  # pragma: no cover - the last attempt returns

    def _keep_in_memory(self, events: Sequence[AuditEvent]) -> int:
        """Append to the bounded backlog; what does not fit is lost. Call with the backlog lock held."""
        room = max(self.audit.backlog_size - len(self._backlog), 0)
        kept = list(events[:room])
        self._backlog.extend(kept)
        self.stats.backlogged += len(kept)
        if len(events) > len(kept):
            self._lose(len(events) - len(kept), "the sink is down, the spool cannot be written "
                       f"({self._spool_error or 'unknown'}) and the in-memory backlog is full")
        return len(kept)

    def _backlog_to_spool(self, force: bool = False) -> None:
        """Move the backlog into the spool once the spool works again (keeps order)."""
        with self._backlog_lock:
            if not self._backlog or not (force or self._spool_usable()):
                return
            events = list(self._backlog)
            try:
                self.spool.append(events)
            except SpoolError as exc:
                self._spool_failed(exc)
                return
            self._spool_ok()
            self._backlog.clear()
            self.stats.spooled += len(events)
            log.info("audit sink %r: moved %d event(s) from memory to the spool", self.name, len(events))

    def _abandon_backlog(self) -> None:
        """At shutdown: a backlog the spool still cannot take is lost, and counted. From here
        on nothing is kept in memory (see :meth:`_keep_after_stop`)."""
        with self._backlog_lock:
            self._backlog_to_spool(force=True)
            if self._backlog:
                n = len(self._backlog)
                self._backlog.clear()
                self._lose(n, f"shutting down while the sink is down and the spool cannot be written "
                           f"({self._spool_error or 'unknown'})")
            self._finished = True

    def _lose(self, n: int, reason: str) -> None:
        with self._backlog_lock:
            self.stats.lost += n
            self._unreported_lost += n
            self._loss_reason = reason

    def _report_losses(self, final: bool = False) -> None:
        """One log line and one alert for the losses since the last report: the first loss
        straight away, then a summary at most once a minute (and at shutdown)."""
        with self._backlog_lock:
            n = self._unreported_lost
            if not n:
                return
            now = time.monotonic()
            first = self._last_loss_report == 0.0
            if not (first or final or now - self._last_loss_report >= REPORT_INTERVAL):
                return
            window = REPORT_INTERVAL if first else now - self._last_loss_report
            self._unreported_lost = 0
            self._last_loss_report = now
            reason = self._loss_reason
        log.error("audit sink %r: LOST %d audit event(s) (%d since start): %s", self.name, n, self.stats.lost,
                  reason)
        if self.on_alert is not None:
            try:
                self.on_alert(self.name, n, round(window, 3))
            except Exception:  # an alert receiver must not stop the worker
                log.exception("audit sink %r: the loss alert failed", self.name)

    def _quarantine(self, rows: Sequence[BadRow]) -> None:
        """Copy undecodable spool rows to the dead-letter file, then delete them from the spool.

        While the dead-letter file cannot be written the rows are *held*: they stay in the
        spool (never deleted without a copy), the replay reads past them, and they are tried
        again after a backoff."""
        if not rows:
            return
        seqs = [r.seq for r in rows]
        if not self._dead_letter_usable():
            self._held.update(seqs)
            return
        try:
            self.dead_letter.write_rows(rows)
        except SpoolError as exc:
            self._dead_letter_failed(exc)
            self._held.update(seqs)
            return
        self._dead_letter_ok()
        self._held.difference_update(seqs)
        self.stats.quarantined += len(rows)
        for r in rows:
            log.error("audit sink %r: spool row %d (event %s) holds no valid event (%s); moved to %s",
                      self.name, r.seq, r.event_id or "<unreadable id>", r.problem, self.dead_letter.path)
        self._delete_spooled(seqs)

    def _retry_held(self) -> None:
        """Quarantine held rows again once the dead-letter file may work (rows another
        process removed meanwhile are forgotten)."""
        if not self._held or not self._dead_letter_usable():
            return
        asked = sorted(self._held)[:500]
        rows = self.spool.read_seqs(asked)
        self._held.difference_update(set(asked) - {seq for seq, _ in rows})
        self._quarantine([r for _, r in rows if isinstance(r, BadRow)])

    def _dead_letter_usable(self) -> bool:
        return self._dead_letter_error is None or time.monotonic() >= self._dead_letter_retry_at

    def _dead_letter_failed(self, exc: SpoolError) -> None:
        """Note a dead-letter failure: the first of a run is logged with its real cause, the rest counted."""
        self.stats.dead_letter_errors += 1
        self._dead_letter_failures += 1
        self._dead_letter_retry_at = time.monotonic() + self._backoff(self._dead_letter_failures)
        if self._dead_letter_error is None:
            log.error("audit sink %r: its dead-letter file %s cannot be written (%s); spool rows holding no "
                      "valid event stay in the spool, skipped, and events the sink refuses are lost (counted) "
                      "until it can", self.name, self.dead_letter.path, exc.reason)
        else:
            log.debug("audit sink %r: dead-letter file still failing (%s)", self.name, exc.reason)
        self._dead_letter_error = exc.reason

    def _dead_letter_ok(self) -> None:
        if self._dead_letter_error is not None:
            log.warning("audit sink %r: its dead-letter file can be written again (after %d failed writes)",
                        self.name, self._dead_letter_failures)
        self._dead_letter_error = None
        self._dead_letter_failures = 0

    # -- replay ------------------------------------------------------------------------------

    def _replay(self, deadline: float | None = None) -> None:
        """Spool first (oldest), then the backlog; while the sink is down, move the backlog to the spool.

        The backlog overtakes spooled rows only when the spool cannot be read at all.
        """
        try:
            if time.monotonic() < self._down_until:
                self._backlog_to_spool()
                return
            if time.monotonic() < self._replay_retry_at:
                return  # another process holds the replay lock
            held_due = bool(self._held) and self._dead_letter_usable()
            if (self._spooled() or held_due) and not (self._spool_unreadable and not self._spool_usable()):
                try:
                    if not self._replay_spool(deadline):
                        return
                except SpoolError as exc:
                    self._spool_unreadable = True
                    self._spool_failed(exc)
            if self._backlog:
                self._replay_backlog(deadline)
        finally:
            with self._cv:
                self._cv.notify_all()

    def _next_turn(self, turns: int, deadline: float | None) -> bool:
        """Whether the replay may write another batch now. At shutdown: until the deadline.
        Otherwise up to :attr:`replay_batches_per_turn` batches back to back, each followed by
        the live events queued meanwhile (:meth:`_serve_live`), so neither starves the other."""
        if deadline is not None:
            return time.monotonic() < deadline
        if turns >= self.replay_batches_per_turn or self._stopping:
            return False
        return self._serve_live()

    def _serve_live(self) -> bool:
        """Deliver the events queued while a replay batch was written (one batch at most).
        ``False`` when the sink failed meanwhile (the batch was stashed behind the spool)."""
        with self._cv:
            n = min(self.audit.batch_size, len(self._queue))
            batch = self._inflight = [self._queue.popleft() for _ in range(n)]
        if not batch:
            return True
        try:
            self._deliver(batch)
        finally:
            self._inflight = []
            self._mark_handled(len(batch))
        return not self.is_down

    def _replay_spool(self, deadline: float | None) -> bool:
        """Replay the spool in order. ``True`` when nothing is left to deliver from it.

        :class:`SpoolError` when the spool cannot be locked or read; a failed delete
        does not stop the replay (see :meth:`_delete_spooled`), nor does a dead-letter
        file that cannot be written (see :meth:`_quarantine`).
        """
        if not self.spool.try_acquire_replay():
            # another process is replaying the shared spool: it delivers those rows; this one
            # keeps delivering its own new events and looks again later
            self._replay_retry_at = time.monotonic() + self.audit.flush_interval
            return False
        if self._undeleted:
            self._delete_spooled(sorted(self._undeleted), retry=True)
        self._retry_held()
        turns = 0
        delivered = False
        while True:
            rows = self.spool.read(self.audit.batch_size, after=max(self._undeleted | self._held, default=0))
            self._spool_unreadable = False
            if not rows:
                break
            bad = [r for _, r in rows if isinstance(r, BadRow)]
            if bad:
                self._quarantine(bad)
            good = [(seq, e) for seq, e in rows if isinstance(e, AuditEvent)]
            if good:
                try:
                    self._write([e for _, e in good])
                except Exception as exc:  # noqa: BLE001 - any backend failure is retried, then spooled
                    self._failed(exc, getattr(exc, "retry_after", None))
                    return False
                delivered = True
                self.stats.replayed += len(good)
                self._delete_spooled([seq for seq, _ in good])
            turns += 1
            if not self._next_turn(turns, deadline):
                break
        if self.is_down and time.monotonic() < self._down_until:
            return False  # a live batch served between replay batches failed
        if delivered:
            self._back_up()  # only an answer from the sink says it is back
        try:
            left = self.spool.refresh()
        except SpoolError:
            left = len(self.spool)
        if left - len(self._undeleted) - len(self._held) <= 0:
            if not self._undeleted and not self._held:
                self.spool.release_replay()
            return True
        return False

    def _delete_spooled(self, seqs: list[int], retry: bool = False) -> None:
        """Delete delivered (or quarantined) rows. If the spool refuses (a full disk), remember
        them: the replay reads past them, and they are never sent twice."""
        try:
            self.spool.delete(seqs)
        except SpoolError as exc:
            self._undeleted.update(seqs)
            if not retry:
                self._spool_failed(exc)
            return
        self._undeleted.difference_update(seqs)
        self._spool_ok()

    def _replay_backlog(self, deadline: float | None) -> None:
        """Deliver the backlog straight to the sink, oldest first (the spool is empty or unreadable)."""
        turns = 0
        while True:
            with self._backlog_lock:
                batch = list(itertools.islice(self._backlog, self.audit.batch_size))
            if not batch:
                break
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - any backend failure is retried later
                self._failed(exc, getattr(exc, "retry_after", None))
                return
            with self._backlog_lock:
                for _ in batch:
                    self._backlog.popleft()
            self.stats.replayed += len(batch)
            turns += 1
            if not self._next_turn(turns, deadline):
                break
        if not (self.is_down and time.monotonic() < self._down_until):
            self._back_up()

    def _back_up(self) -> None:
        if self.is_down:
            log.info("audit sink %r is back; kept events replayed", self.name)
        self._failures = 0
        self._down_until = 0.0


def _describe(exc: BaseException) -> str:
    """A short, secret-free description (no URLs, no bodies)."""
    if isinstance(exc, SinkError):
        return str(exc)
    return type(exc).__name__


def sink_options(settings: SinkSettings) -> dict[str, Any]:  # pragma: no cover - debugging aid
    return {"type": settings.type, "name": settings.name}


__all__ = ["PoisonBatchError", "Sink", "SinkError", "SinkStats", "TransientSinkError"]
