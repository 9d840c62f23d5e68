"""The console's audit explorer: the SQL audit table, filtered, paged on the database, exported.

Pages (reading changes nothing; what reads the whole table, or writes the
audit trail, is a POST with the CSRF token, so no other site can start it):

* ``GET /audit`` -- filters (time range, person, event type, skill, outcome,
  provider), 50 events a page newest first with an "older" link carrying the
  last ``seq`` (keyset: :mod:`.audit_query`), the audit pipeline's health in
  this process (sink backlog, spool size, lost counters);
* ``POST /audit`` (the "Verify chain" button, filters in the query string) --
  the same page with the hash chain's verification (it reads the whole table);
* ``GET /audit/events/<seq>`` -- one stored event, every field, and its hashes;
* ``POST /audit/export.csv`` and ``/audit/export.ndjson`` (the export
  buttons: the filters as form fields) -- the filtered events, newest first,
  streamed as a download, at most :data:`~.audit_query.EXPORT_LIMIT`; each
  export is audited (``console.action``, action ``audit_export``, ``count``
  the rows sent) when the download ends, or is abandoned.

Bad filter input is answered with the page, a 400 and the reason, and audited
(``console.action``, action ``audit_filter_refused``: a record of what was
tried, e.g. an injection attempt in a filter -- the console's guard refuses a
request another site started, so it is the operator's own); no SQL
destination with a page saying how to add one; a database that cannot be read
with a 503 naming the database (password masked) and the fix. Never a 500.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, request, stream_with_context, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import exc as sa_exc

from .._context import current_flask_app
from ..audit.sinks.sqlalchemy import audit_table, missing_indexes, verify_chain
from ..state import get_state
from ..stores.database import database_error_line
from . import operator, page, record_action, settings
from .audit_query import (
    EVENT_TYPES,
    EXPORT_LIMIT,
    MAX_SEQ,
    OUTCOME_VALUES,
    PAGE_SIZE,
    AuditFilters,
    FilterError,
    csv_lines,
    fetch_event,
    fetch_page,
    ndjson_lines,
    parse_before,
    parse_filters,
    stream_rows,
)
from .audit_source import AuditSource, SourceUnavailable, find_source, reading

#: export format -> (mimetype, line writer)
EXPORTS = {"csv": ("text/csv", csv_lines), "ndjson": ("application/x-ndjson", ndjson_lines)}


def pipeline_health() -> dict[str, Any] | None:
    """The running audit pipeline's health in this process (``None``: ``logging.level`` is off)."""
    pipeline = get_state().audit
    return pipeline.health() if pipeline is not None else None


def _source() -> AuditSource:
    return find_source(get_state().audit_settings, settings().audit_destination)


def _common(**context: Any) -> dict[str, Any]:
    """What every explorer page shows besides its events: the choices of the filter form and the health."""
    state = get_state()
    context.setdefault("form", request.values)  # a GET's query string; an export's form fields
    context.setdefault("event_types", EVENT_TYPES)
    context.setdefault("outcomes", OUTCOME_VALUES)
    context.setdefault("known_providers", sorted(state.providers))
    context.setdefault("known_skills", sorted(state.config.skills))
    context.setdefault("health", pipeline_health())
    context.setdefault("page_size", PAGE_SIZE)
    context.setdefault("export_limit", EXPORT_LIMIT)
    filters: AuditFilters = context.get("filters") or AuditFilters()
    form = context["form"]
    # a datetime-local input takes YYYY-MM-DDTHH:MM:SS (no zone: the console's times are UTC)
    context.setdefault("time_values", {
        "from": filters.start[:19] if filters.start else form.get("from", ""),
        "to": filters.end[:19] if filters.end else form.get("to", ""),
    })
    return context


def _refused(source: AuditSource, exc: FilterError) -> tuple[str, int]:
    """A filter the explorer cannot use: audited, and the page with the reason (400)."""
    record_action("audit_filter_refused", f"{exc.field}: {exc.message}")
    return page("audit.html", **_common(title="Audit", source=source, filters=AuditFilters(), rows=[],
                                        error=exc)), 400


def _unavailable(exc: SourceUnavailable) -> str:
    return page("audit_unavailable.html", title="Audit", problem=exc.problem, fix=exc.fix,
                configured=exc.configured, health=pipeline_health())


def _database_error(source: AuditSource, exc: sa_exc.SQLAlchemyError, **context: Any) -> tuple[str, int]:
    line = database_error_line(exc, source.url, what="audit database", table=source.table)
    return page("audit.html", **_common(title="Audit", source=source, filters=AuditFilters(), rows=[],
                                        database_error=line, **context)), 503


def _verification(engine: sa.Engine, source: AuditSource) -> dict[str, Any]:
    """Run :func:`verify_chain` (a full read of the table, in ``seq`` order) and say when and how long."""
    started = time.monotonic()
    ok, broken = verify_chain(engine, source.table)
    took = time.monotonic() - started
    broken_seq = None
    if broken is not None:
        with engine.connect() as conn:
            row = fetch_event(conn, audit_table(source.table), event_id=broken)
        broken_seq = row["seq"] if row is not None else None
    ran_at = datetime.fromtimestamp(get_state().clock(), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {"ok": ok, "broken": broken, "broken_seq": broken_seq, "ran_at": ran_at, "seconds": took}


def explorer() -> ResponseReturnValue:
    try:
        source = _source()
    except SourceUnavailable as exc:
        return _unavailable(exc)
    try:
        filters = parse_filters(request.args)
        before = parse_before(request.args.get("before"))
    except FilterError as exc:
        return _refused(source, exc)
    verify = request.method == "POST"  # the "Verify chain" form (its CSRF token checked by the guard)
    try:
        with reading(source) as engine:
            with engine.connect() as conn:
                result = fetch_page(conn, audit_table(source.table), filters, before)
            missing = missing_indexes(engine, source.table)
            verification = _verification(engine, source) if verify else None
    except SourceUnavailable as exc:
        return _unavailable(exc)
    except sa_exc.SQLAlchemyError as exc:
        return _database_error(source, exc)
    params: dict[str, Any] = filters.params()
    return page("audit.html", **_common(
        title="Audit", source=source, filters=filters, rows=result.rows, before=before,
        older_url=url_for(".audit", **params, before=result.older) if result.older is not None else None,
        newest_url=url_for(".audit", **params) if before is not None else None,
        verify_url=url_for(".audit", **params),
        export_urls={fmt: url_for(".audit_export", fmt=fmt) for fmt in EXPORTS}, export_fields=params,
        missing_indexes=missing, verification=verification))


def event_detail(seq: int) -> ResponseReturnValue:
    try:
        source = _source()
    except SourceUnavailable as exc:
        return _unavailable(exc)
    try:
        with reading(source) as engine, engine.connect() as conn:
            row = fetch_event(conn, audit_table(source.table), seq=seq)
    except SourceUnavailable as exc:
        return _unavailable(exc)
    except sa_exc.SQLAlchemyError as exc:
        return _database_error(source, exc)
    status = 200 if row is not None else 404
    return page("audit_event.html", title=f"Audit event {seq}", seq=seq, row=row, source=source), status


def export(fmt: str) -> ResponseReturnValue:
    if fmt not in EXPORTS:
        return page("audit_unavailable.html", title="Audit", problem=f"There is no {fmt!r} export.",
                    fix="use export.csv or export.ndjson.", configured=True, health=None), 404
    try:
        source = _source()
    except SourceUnavailable as exc:
        return _unavailable(exc)
    try:
        filters = parse_filters(request.form)
    except FilterError as exc:
        return _refused(source, exc)
    mimetype, lines = EXPORTS[fmt]
    # the first rows are read here, so a database that cannot be read is a 503 page, not a
    # download cut short; the engine is disposed of when the response is done (or abandoned)
    stack = ExitStack()
    try:
        engine = stack.enter_context(reading(source))
        rows = stream_rows(engine, audit_table(source.table), filters)
        stack.callback(rows.close)  # before the engine is disposed of (callbacks run last-in, first-out)
        first = next(rows, None)
    except SourceUnavailable as exc:
        stack.close()
        return _unavailable(exc)
    except sa_exc.SQLAlchemyError as exc:
        stack.close()
        return _database_error(source, exc)
    except BaseException:
        stack.close()
        raise
    record = _ExportRecord(" ".join(f"{k}={v}" for k, v in filters.params().items()) or "all events")
    stack.callback(record.emit)  # a response closed before its first line: recorded all the same
    body = record.body(lines, itertools.chain([first], rows) if first is not None else iter(()))
    stamp = datetime.fromtimestamp(get_state().clock(), timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.call_on_close(stack.close)
    response.headers["Content-Disposition"] = f'attachment; filename="audit-events-{stamp}.{fmt}"'
    response.headers["X-Export-Limit"] = str(EXPORT_LIMIT)
    return response


class _ExportRecord:
    """The export's ``console.action``, with the number of rows handed to the server (``count``).

    That number is known only when the download ends, so the event is recorded
    then: at the end of the body (in the request's context, kept by
    ``stream_with_context``), or, when the client goes away, as the body is
    closed -- with the rows sent until then. Once, either way.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.app = current_flask_app()
        self.identity = operator()
        self.sent = 0
        self.recorded = False

    def body(self, lines: Callable[[Iterable[dict[str, Any]]], Iterator[str]],
             rows: Iterator[dict[str, Any]]) -> Iterator[str]:
        def counted() -> Iterator[dict[str, Any]]:
            for row in rows:
                self.sent += 1  # each writer turns a row into its line at once, and hands that on
                yield row

        try:
            yield from lines(counted())
        finally:
            self.emit()

    def emit(self) -> None:
        if not self.recorded:
            self.recorded = True
            record_action("audit_export", self.target, count=self.sent, app=self.app, identity=self.identity)


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""
    bp.add_url_rule("/audit", endpoint="audit", view_func=explorer, methods=["GET", "POST"])
    # a seq the column cannot hold (above 2**63 - 1) matches no route: a 404, never an OverflowError
    bp.add_url_rule(f"/audit/events/<int(max={MAX_SEQ}):seq>", endpoint="audit_event", view_func=event_detail,
                    methods=["GET"])
    bp.add_url_rule("/audit/export.<fmt>", endpoint="audit_export", view_func=export, methods=["POST"])


__all__ = ["EXPORTS", "pipeline_health", "register"]
