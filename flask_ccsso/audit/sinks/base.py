"""The sink base class: batching, retry with backoff, spooling, dead letters.

A backend implements :meth:`Sink.write_batch` (and, if it holds a connection,
:meth:`Sink.open` / :meth:`Sink.close`). It signals trouble by raising:

- :class:`TransientSinkError` (or any other exception): the backend is down or
  slow; the batch is retried with exponential backoff and jitter, then spooled.
- :class:`PoisonBatchError`: the backend refused the *content* (HTTP 4xx). The
  batch is split to find the refused events, which go to the dead-letter file;
  they are never retried, so a bad event cannot block the others for ever.

Each sink runs one daemon thread fed by its own bounded queue, so a slow sink
never holds back another one, and a request thread only ever appends to a
deque (or, for a security event when that deque is full, to the spool).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..events import AuditEvent
from ..settings import AuditSettings, SinkSettings
from ..spool import DeadLetter, Spool

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
    """Counters for one sink (per process)."""

    written: int = 0
    spooled: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    overflow_spooled: int = 0
    failures: int = 0
    lost: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Sink:
    """One audit destination with its queue, worker thread, spool and dead-letter file."""

    #: how many spooled batches one worker iteration replays before looking at the queue again
    replay_batches_per_turn = 20

    def __init__(self, settings: SinkSettings, audit: AuditSettings, *, spool_dir: str) -> None:
        self.settings = settings
        self.audit = audit
        self.name = settings.name
        self.spool = Spool(spool_dir, settings.name)
        self.dead_letter = DeadLetter(spool_dir, settings.name)
        self.stats = SinkStats()
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
        self._last_drop_warning = 0.0
        self._dropped_since_warning = 0
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

        Queue full: a security event is appended to the durable spool instead
        (never silently lost); any other event is dropped, counted, and a
        warning is logged at most once a minute.
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
            try:
                self.spool.append([event])
                self.stats.overflow_spooled += 1
                return True
            except Exception:  # disk full, permissions: say so loudly, never fail the request
                self.stats.lost += 1
                log.exception("audit sink %r: queue full and the spool refused a %s event; it is lost",
                              self.name, event.type)
                return False
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
        """Events queued in memory plus events waiting in the spool."""
        return len(self._queue) + len(self.spool)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything offered so far is delivered (or, if the sink is down, spooled)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            target = self._offered
            self._flush_wanted += 1
            self._cv.notify_all()
            try:
                while True:
                    done = self._handled >= target and (self.is_down or len(self.spool) == 0)
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
        return finished

    # -- the worker ------------------------------------------------------------------------

    def _next_batch(self) -> list[AuditEvent]:
        """Wait for up to ``batch_size`` events, at most ``flush_interval`` after the first arrived."""
        size = self.audit.batch_size
        with self._cv:
            wait = self.audit.flush_interval
            if self.spool and not self._queue:
                # something to replay: come back soon, at the latest when the sink is due again
                wait = min(wait, max(0.01, self._down_until - time.monotonic()))
            if not self._queue and not self._stopping:
                self._cv.wait(wait)
            if not self._queue:
                return []
            first_deadline = time.monotonic() + self.audit.flush_interval
            while (len(self._queue) < size and not self._stopping and not self._flush_wanted):
                remaining = first_deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            n = min(size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

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
                        self._mark_handled(len(batch))
                self._replay()
                with self._cv:
                    if self._stopping:
                        break
                    if self._flush_wanted:
                        self._cv.notify_all()
            except Exception:  # the worker must never die
                log.exception("audit sink %r: unexpected error in the worker", self.name)
                time.sleep(0.1)
        self._drain_on_stop()

    def _drain_on_stop(self) -> None:
        try:
            while True:
                with self._cv:
                    n = min(self.audit.batch_size, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(n)]
                if not batch:
                    break
                try:
                    self._deliver(batch, attempts=1)
                finally:
                    self._mark_handled(len(batch))
            if not self.is_down and self.spool:
                self._replay(deadline=self._stop_deadline or time.monotonic() + 1.0)
        finally:
            if self._opened:
                try:
                    self.close()
                except Exception:  # closing must not stop the shutdown
                    log.exception("audit sink %r: error while closing", self.name)

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: ``min(max, base * 2**(n-1))`` scaled by 0.5..1."""
        base = max(self.audit.retry_backoff, 0.01)
        return min(self.audit.max_backoff, base * (2 ** max(failures - 1, 0))) * random.uniform(0.5, 1.0)

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
            self.stats.dead_lettered += len(events)
            self.dead_letter.write(events, str(exc))
            log.error("audit sink %r refused %d event(s) (%s); moved to %s", self.name, len(events), exc,
                      self.dead_letter.path)

    def _deliver(self, batch: list[AuditEvent], attempts: int | None = None) -> None:
        if self.spool or time.monotonic() < self._down_until:
            # keep order: while anything waits in the spool, new events queue up behind it
            self.spool.append(batch)
            self.stats.spooled += len(batch)
            return
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
                    self.spool.append(batch)
                    self.stats.spooled += len(batch)
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
            log.warning("audit sink %r is not accepting events (%s); spooling to %s and retrying",
                        self.name, _describe(exc), self.spool.path)
        else:
            log.debug("audit sink %r still down (%s); next try in %.1fs", self.name, _describe(exc), delay)

    def _replay(self, deadline: float | None = None) -> None:
        if not self.spool or time.monotonic() < self._down_until:
            return
        if not self.spool.try_acquire_replay():
            self._down_until = time.monotonic() + self.audit.flush_interval
            return
        try:
            turns = 0
            while True:
                rows = self.spool.peek(self.audit.batch_size)
                if not rows:
                    break
                events = [e for _, e in rows]
                try:
                    self._write(events)
                except Exception as exc:  # noqa: BLE001 - any backend failure is retried, then spooled
                    self._failed(exc, getattr(exc, "retry_after", None))
                    return
                self.spool.delete([seq for seq, _ in rows])
                self.stats.replayed += len(rows)
                turns += 1
                if deadline is not None:
                    if time.monotonic() >= deadline:
                        break
                elif turns >= self.replay_batches_per_turn or (self._queue and not self._flush_wanted):
                    break
            if self.is_down:
                log.info("audit sink %r is back; spooled events replayed", self.name)
            self._failures = 0
            self._down_until = 0.0
            if not self.spool.refresh():
                self.spool.release_replay()
        finally:
            with self._cv:
                self._cv.notify_all()


def _describe(exc: BaseException) -> str:
    """A short, secret-free description (no URLs, no bodies)."""
    if isinstance(exc, SinkError):
        return str(exc)
    return type(exc).__name__


def sink_options(settings: SinkSettings) -> dict[str, Any]:  # pragma: no cover - debugging aid
    return {"type": settings.type, "name": settings.name}


__all__ = ["PoisonBatchError", "Sink", "SinkError", "TransientSinkError"]
