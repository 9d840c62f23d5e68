"""Signals in, events out: :class:`AuditPipeline` and :func:`init_audit`.

The pipeline connects to each signal in :mod:`flask_ccsso.signals` it records
(strongly, filtered to its own app as sender; a signal it neither records nor
counts gets no receiver, so its sender skips it). In the thread that sent the
signal it only *captures* the event (:func:`~flask_ccsso.audit.events.capture`:
allow-listed keyword arguments and identity fields by reference, the request
id, ``request.remote_addr`` and user agent) and appends it to each sink's
bounded queue; the event is built (cleaned, JSON, hash) by the sink thread that
first reads it, and every sink's own daemon thread does the I/O. A request
never waits on a sink.

Queue full: security events (``auth.*``, ``session.*``, ``stepup.*``,
``permission.denied``) are appended to that sink's durable spool instead;
other events (``skill.invoked``, ``token.refreshed``) are dropped, counted in
:attr:`AuditPipeline.stats` and reported by a warning at most once a minute.

Failed sign-ins are counted in the app's shared store (see
:class:`SharedFailureCounter`), so ``failureThreshold`` holds across workers and
hosts and raises one alert per key per window; while the store cannot be
reached, each process counts its own share in memory (:class:`FailureCounter`).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, g, has_request_context, request

from .. import reasons
from .. import signals as _signals_module
from ..exceptions import StoreUnavailable
from ..signals import _signals as _namespace
from .events import AuditEvent, RequestInfo, capture, new_event_id
from .journal import Journal, encode_event
from .settings import AuditSettings
from .sinks import Sink, make_sink
from .spool import SpoolError

if TYPE_CHECKING:
    from ..stores import SharedStore

log = logging.getLogger("flask_ccsso.audit")

EXTENSION_KEY = "ccsso_audit"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_notices_logged: set[str] = set()
_notices_lock = threading.Lock()


def request_id() -> str | None:
    """This request's id: a sane ``X-Request-ID`` header, else a new one; kept on ``g.ccsso_request_id``
    (and in the WSGI environ as ``ccsso.request_id``, where the audit receivers read it)."""
    if not has_request_context():
        return None
    environ = request.environ
    rid = environ.get("ccsso.request_id")
    if rid is None:
        rid = g.get("ccsso_request_id")
        if rid is None:
            header = environ.get("HTTP_X_REQUEST_ID", "")
            # a new id: 32 hex digits, unique per process and time-ordered, no system call
            rid = header if _REQUEST_ID.match(header) else new_event_id()
            g.ccsso_request_id = rid
        environ["ccsso.request_id"] = rid
    return str(rid)


def _request_info() -> RequestInfo | None:
    info = _request_tuple()
    return RequestInfo(*info) if info is not None else None


try:  # Flask 3.0/3.1: the request context's ContextVar (read directly: no proxy lookups per event)
    from flask.globals import _cv_request
except ImportError:  # pragma: no cover - a later Flask: the public path below
    _cv_request = None  # type: ignore[assignment]


def _request_tuple() -> tuple[str | None, str | None, str | None] | None:
    """``(request_id, client_ip, user_agent)`` of the current request, ``None`` outside one.

    The address and user agent are ``request.remote_addr`` and the ``User-Agent``
    header, read from the WSGI environ they come from.
    """
    ctx = _cv_request.get(None) if _cv_request is not None else None
    if ctx is None:
        if _cv_request is not None or not has_request_context():
            return None
        environ = request.environ
    else:
        environ = ctx.request.environ
    rid = environ.get("ccsso.request_id")
    if rid is None:
        rid = request_id()
    return rid, environ.get("REMOTE_ADDR"), environ.get("HTTP_USER_AGENT")


class FailureCounter:
    """Sliding-window counts of failed sign-ins per key, in this process's memory:
    what :class:`SharedFailureCounter` falls back on while the store is down, and
    the counter of a pipeline with no store (an app without flask-ccsso's state).

    ``hit(key)`` returns the count when it reaches ``count`` within ``window``
    seconds and no alert was raised for that key in the last ``window``
    seconds; otherwise ``None``. At most ``max_keys`` keys are tracked (the
    least recently failed are forgotten first), so a spray from many addresses
    cannot exhaust memory.
    """

    def __init__(self, count: int, window: float, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self.count = count
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._alerted: dict[str, float] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> int | None:
        now = self.clock()
        with self._lock:
            hits = self._hits.pop(key, None)
            if hits is None:
                hits = deque()
            hits.append(now)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            self._hits[key] = hits
            while len(self._hits) > self.max_keys:
                old, _ = self._hits.popitem(last=False)
                self._alerted.pop(old, None)
            if len(hits) < self.count:
                return None
            last = self._alerted.get(key)
            if last is not None and now - last < self.window:
                return None
            self._alerted[key] = now
            return len(hits)


class SharedFailureCounter:
    """Counts of failed sign-ins per key in the shared store: one threshold for
    every worker and host, one alert per key per window.

    The window slides approximately: counts go into fixed windows (one
    :meth:`~flask_ccsso.stores.SharedStore.incr` per failure, atomic on every
    backend) and the previous window's count is weighted by the share of it
    that still overlaps the sliding window -- the estimate most rate limiters
    use, one store key per key and window instead of one entry per failure.
    The alert marker is written with :meth:`~flask_ccsso.stores.SharedStore.update`
    (read-decide-write as one step), so exactly one process, the one whose
    failure crossed the threshold, raises the alert.

    Store keys hold a hash of the user or address, never the value: their
    length is fixed whatever an attacker sends, and every key has a TTL (two
    windows for a count, one for a marker), so the store holds nothing for
    longer than that.

    Counting must never fail the request that failed to sign in: when the
    store cannot be reached, ``fallback`` (this process's own
    :class:`FailureCounter`) counts instead, a warning is logged once per
    outage, and the store is tried again after :attr:`retry_after` seconds
    (a failed sign-in pays for a store that is down at most that often).
    """

    #: seconds the in-process counter stands in after a store error before the store is tried again
    retry_after = 5.0
    #: the store keys' prefix (below the store's own key prefix)
    key_prefix = "audit:failures:"

    def __init__(self, store: SharedStore, fallback: FailureCounter) -> None:
        self.store = store
        self.fallback = fallback
        self.count = fallback.count
        self.window = fallback.window
        self.clock = fallback.clock
        self._retry_at = 0.0
        self._degraded = False
        self._lock = threading.Lock()

    def hit(self, key: str) -> int | None:
        """As :meth:`FailureCounter.hit`, across every process sharing the store."""
        if self._retry_at and time.monotonic() < self._retry_at:
            return self.fallback.hit(key)
        try:
            count = self._shared_hit(key)
        except Exception as exc:  # whatever the store raises, the failed sign-in must not fail too
            with self._lock:
                self._retry_at = time.monotonic() + self.retry_after
                first, self._degraded = not self._degraded, True
            if first:
                log.warning("audit: failed sign-ins cannot be counted in the shared store (%s); each process "
                            "counts its own share until it answers again", type(exc).__name__,
                            exc_info=not isinstance(exc, StoreUnavailable))  # an outage needs no traceback
            return self.fallback.hit(key)
        if self._degraded:
            with self._lock:
                back, self._degraded, self._retry_at = self._degraded, False, 0.0
            if back:
                log.info("audit: failed sign-ins are counted in the shared store again")
        return count

    def _shared_hit(self, key: str) -> int | None:
        now = self.clock()
        window = self.window
        slot, into = divmod(now, window)
        base = self.key_prefix + hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).hexdigest()
        # a window's count is the previous window's too: it lives two windows
        count = self.store.incr(f"{base}:{int(slot)}", 2 * window)
        if count < self.count:
            earlier = self.store.get(f"{base}:{int(slot) - 1}")
            if earlier and earlier.isdigit():
                count += int(int(earlier) * (1 - into / window) + 0.5)
            if count < self.count:
                return None

        def alert_due(last: str | None) -> tuple[str, float] | None:
            try:
                recent = last is not None and now - float(last) < window
            except ValueError:
                recent = False
            return None if recent else (repr(now), window)

        return count if self.store.update(base + ":alerted", alert_due) else None


class AuditPipeline:
    """Turns this app's signals into audit events and hands them to the sinks."""

    def __init__(self, app: Flask, settings: AuditSettings, *, clock: Callable[[], float] = time.time,
                 spool_dir: str | None = None, sinks: list[Sink] | None = None,
                 store: SharedStore | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.spool_dir = spool_dir or settings.spool_dir or os.path.join(app.instance_path, "ccsso-audit-spool")
        self._app_ref = weakref.ref(app)  # the signal holds the pipeline strongly; the app must not be
        self._receivers: list[tuple[Any, Callable[..., None]]] = []
        self.sinks: list[Sink] = []
        if settings.enabled:
            self.sinks = sinks if sinks is not None else [
                make_sink(s, settings, spool_dir=self.spool_dir) for s in settings.destinations
            ]
        for sink in self.sinks:
            sink.on_alert = self._sink_lost_events
        #: this process's crash journal (see :mod:`flask_ccsso.audit.journal`)
        self.journal: Journal | None = Journal(self.spool_dir, settings.max_field_length) if self.sinks else None
        self._recovered_at = 0.0
        ft = settings.failure_threshold
        #: this process's failed sign-in counts: the fallback of :attr:`shared_failures`
        self.failures = FailureCounter(ft.count, ft.window, clock) if ft is not None and settings.enabled else None
        #: the store failed sign-ins are counted in (``None``: the app's, see :meth:`failure_counter`)
        self.store = store
        self._shared_failures: SharedFailureCounter | None = None
        self._closed = False
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> AuditPipeline:
        if self._started or not self.settings.enabled:
            self._started = True
            return self
        self._started = True
        self._recover_journals()
        if self.journal is not None:
            self.sinks[0].on_tick = self._journal_upkeep
        for sink in self.sinks:
            sink.start()
        for name, signal in _namespace.items():
            receiver = self._make_receiver(name)
            if receiver is None:
                continue  # not recorded, not counted: no receiver, so senders do not even build kwargs
            signal.connect(receiver, sender=self._app_ref(), weak=False)
            self._receivers.append((signal, receiver))
        atexit.register(self._atexit)
        return self

    def _make_receiver(self, name: str) -> Callable[..., None] | None:
        if not (self.settings.records(name) or (name == "auth.login_failed" and self.failures is not None)):
            return None

        def receiver(sender: Any, **kwargs: Any) -> None:
            try:
                self._on_signal(name, sender, kwargs)
            except Exception:  # auditing must never break the request that sent the signal
                log.exception("audit: could not record %s", name)

        receiver.__name__ = f"ccsso_audit_{name.replace('.', '_')}"
        return receiver

    def _on_signal(self, name: str, sender: Any, kwargs: dict[str, Any]) -> None:
        app = self._app_ref()
        if app is None or sender is not app:
            return
        record = self.settings.records(name)
        count = name == "auth.login_failed" and self.failures is not None
        if not (record or count):
            return  # the hot path: an unrecorded skill.invoked costs no request introspection
        info = _request_tuple()
        if record:
            self._submit(self._build(name, kwargs, info))
        if count:
            self._count_failure(app, kwargs, info)  # after: the alert follows the failure that tripped it

    def _count_failure(self, app: Flask, kwargs: dict[str, Any],
                       info: tuple[str | None, str | None, str | None] | None) -> None:
        assert self.failures is not None
        keys = []
        user = kwargs.get("email") or kwargs.get("subject")
        if isinstance(user, str) and user:
            keys.append(("user", user.strip().lower()))
        if info is not None and info[1]:
            keys.append(("address", info[1]))
        # a sign-in refused because the store is down is not counted there: that would only wait on it again
        counter = self.failures if kwargs.get("reason") == reasons.STORE_UNAVAILABLE else self.failure_counter(app)
        for key_type, key in keys:
            count = counter.hit(f"{key_type}:{key}")
            if count is not None:
                _signals_module.failure_threshold.send(app, key_type=key_type, key=key, count=count,
                                                       window=self.failures.window)

    def failure_counter(self, app: Flask) -> FailureCounter | SharedFailureCounter:
        """Where failed sign-ins are counted: the :attr:`store` given, else the app's
        shared store (``init_app`` builds the pipeline before the state that holds
        the store, so it is looked up here, at the first failure), else -- an app
        without flask-ccsso's state -- this process's memory."""
        assert self.failures is not None
        store = self.store
        if store is None:
            store = getattr(app.extensions.get("ccsso"), "store", None)
        if store is None:
            return self.failures
        shared = self._shared_failures
        if shared is None or shared.store is not store:
            shared = self._shared_failures = SharedFailureCounter(store, self.failures)
        return shared

    def _sink_lost_events(self, sink_name: str, count: int, window: float) -> None:
        """A sink lost ``count`` events: raise the alert signal (from the sink's worker thread).

        The same signal as a sign-in failure threshold, with ``key_type="audit_sink"``
        and the sink's name as ``key``, so one alert hook covers both. It is sent
        whether or not ``failureThreshold`` is on: losing audit events is always worth
        an alert.
        """
        app = self._app_ref()
        if app is not None:
            _signals_module.failure_threshold.send(app, key_type="audit_sink", key=sink_name, count=count,
                                                   window=window)

    def _build(self, event_type: str, fields: dict[str, Any],
               info: tuple[str | None, str | None, str | None] | None) -> AuditEvent:
        """Capture the event (request thread); its fields are worked out by the writer that first
        reads them (:meth:`AuditEvent.materialize`): no cleaning, JSON or hashing here."""
        settings = self.settings
        captured = capture(event_type, fields, info, self.clock(), include_claims=settings.include_user_claims,
                           include_groups=settings.include_group_memberships)
        return AuditEvent.from_capture(captured, settings.max_field_length)

    def _submit(self, event: AuditEvent) -> None:
        journal = self.journal
        if journal is None:
            for sink in self.sinks:
                sink.offer(event)
            return
        record = encode_event(event)
        with journal.lock:  # journaled and queued in one step: a rotation never falls in between
            journal.append(record)
            for sink in self.sinks:
                sink.offer(event)

    #: how often (seconds) the writer looks for dead processes' crash journals
    journal_scan_interval = 5.0

    def _journal_upkeep(self) -> None:
        """In the first sink's worker: rotate and trim this process's journal, and now and then
        recover the journals of processes that died (a SIGKILLed gunicorn worker's replacement
        recovers its predecessor's events within seconds)."""
        journal = self.journal
        if journal is None:
            return
        self._trim_journal()
        if time.monotonic() - self._recovered_at >= self.journal_scan_interval:
            self._recover_journals()

    def _trim_journal(self, force: bool = False) -> None:
        if self.journal is not None:
            self.journal.maintain(lambda: {id(s): s.journal_mark(True) for s in self.sinks},
                                  lambda: {id(s): s.journal_mark(False) for s in self.sinks}, force=force)

    def _recover_journals(self) -> None:
        """Spool the events of dead processes' crash journals for every sink (they are then
        replayed like any spooled event); a journal whose events cannot be spooled stays."""
        self._recovered_at = time.monotonic()
        if self.journal is None:
            return
        try:
            self.journal.recover(self._spool_recovered)
        except SpoolError as exc:
            log.warning("audit: a dead process's crash journal in %s cannot be spooled yet (%s); tried again "
                        "in %ds", self.spool_dir, exc.reason, int(self.journal_scan_interval))
        except Exception:
            log.exception("audit: could not recover a crash journal in %s; it is left in place and tried again",
                          self.spool_dir)

    def _spool_recovered(self, events: list[AuditEvent]) -> None:
        for sink in self.sinks:
            sink.spool.append(events)

    def emit(self, event_type: str, **fields: Any) -> AuditEvent | None:
        """Record an event directly (same allow-list as signals). Returns it, or ``None`` if not recorded."""
        if self._closed or not self.settings.records(event_type):
            return None
        event = self._build(event_type, fields, _request_tuple())
        self._submit(event)
        return event

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event so far is delivered, or spooled for a sink that is down."""
        deadline = time.monotonic() + timeout
        ok = True
        for sink in self.sinks:
            ok = sink.flush(max(deadline - time.monotonic(), 0.0)) and ok
        if ok and not self._closed:
            self._trim_journal(force=True)  # what is now delivered or spooled needs no journal copy
        return ok

    def close(self, timeout: float = 5.0) -> bool:
        """Stop listening, deliver or spool what is queued, stop the threads. Idempotent."""
        if self._closed:
            return True
        self._closed = True
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        self._receivers.clear()
        atexit.unregister(self._atexit)
        deadline = time.monotonic() + timeout
        ok = True
        for sink in self.sinks:
            ok = sink.stop(max(deadline - time.monotonic(), 0.1)) and ok
        if self.journal is not None:
            # every event reached a sink or a spool, unless one was counted lost: then the journal
            # stays, and the next start spools its events again (duplicates rather than a gap)
            lost = any(sink.stats.lost for sink in self.sinks)
            self.journal.close(keep_files=lost)
            if lost:
                log.error("audit: events were lost at shutdown; the crash journal in %s is kept so the next "
                          "start can recover them", self.spool_dir)
        return ok

    def _atexit(self) -> None:
        self.close(timeout=5.0)

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink: written, spooled, replayed, dead_lettered, dropped, overflow_spooled, failures, lost,
        quarantined, backlogged, spool_errors (see :class:`~flask_ccsso.audit.sinks.base.SinkStats`)."""
        return {sink.name: sink.stats.as_dict() for sink in self.sinks}

    def health(self) -> dict[str, Any]:
        """The pipeline's state for a health check or monitoring job.

        ``status`` is ``"ok"`` (every sink up, every spool usable, nothing lost),
        ``"degraded"`` (a sink is down, a spool or dead-letter file failing, events
        wait in memory or bad spool rows wait for the dead-letter file, but nothing
        was lost) or ``"losing"`` (this process lost events since it
        started: see each sink's ``lost``). ``sinks`` holds each sink's state and
        counters (:meth:`~flask_ccsso.audit.sinks.base.Sink.health`).
        """
        sinks = {sink.name: sink.health() for sink in self.sinks}
        if any(s["lost"] for s in sinks.values()):
            status = "losing"
        elif any(not s["up"] or not s["spool_ok"] or not s["dead_letter_ok"] or s["backlog"]
                 or s["quarantine_pending"] for s in sinks.values()):
            status = "degraded"
        else:
            status = "ok"
        journal_error = self.journal.error if self.journal is not None else None
        if journal_error is not None and status == "ok":
            status = "degraded"
        return {"status": status, "enabled": self.settings.enabled, "sinks": sinks,
                "journal_ok": journal_error is None, "journal_error": journal_error}

    def __repr__(self) -> str:
        return f"<AuditPipeline level={self.settings.level!r} sinks={[s.name for s in self.sinks]}>"


def init_audit(app: Flask, settings: AuditSettings, *, clock: Callable[[], float] = time.time,
               store: SharedStore | None = None) -> AuditPipeline:
    """Start the audit pipeline for ``app`` and return it.

    Also kept in ``app.extensions["ccsso_audit"]`` (one per app; a second call
    for the same app is refused). Logs each settings notice (such as the
    fallback of ``destination: "azure-log-analytics"`` without
    ``azureMonitor``, a WARNING) once per process, and one start-up line
    (INFO on ``flask_ccsso.audit``) naming where the events go, every
    destination (:func:`where_events_go`).
    """
    if EXTENSION_KEY in app.extensions:
        raise RuntimeError("The audit pipeline is already set up for this app; init_audit() runs once per app "
                           "(CCSSO.init_app calls it).")
    settings = settings.resolved(app.instance_path)  # SQLite files and the spool: under the instance folder
    for notice in settings.notices:
        with _notices_lock:
            first = notice not in _notices_logged
            _notices_logged.add(notice)
        if first:
            log.warning(notice)
    log.info("flask-ccsso: audit events (level %s) go to %s", settings.level, where_events_go(settings))
    pipeline = AuditPipeline(app, settings, clock=clock, store=store).start()
    app.extensions[EXTENSION_KEY] = pipeline
    return pipeline


def where_events_go(settings: AuditSettings) -> str:
    """Every destination in words (credentials masked): the start-up line's and check-config's."""
    return "; ".join(sink.describe() for sink in settings.destinations)


def get_pipeline(app: Flask) -> AuditPipeline | None:
    return app.extensions.get(EXTENSION_KEY)


__all__ = ["AuditPipeline", "FailureCounter", "SharedFailureCounter", "get_pipeline", "init_audit", "request_id", "where_events_go"]
