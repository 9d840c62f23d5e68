"""The audit explorer's queries: filters from a query string, keyset pages, exports.

Every query runs on the database and reads through an index
(:data:`~flask_ccsso.audit.sinks.sqlalchemy.QUERY_INDEXES`):

* a page is ``WHERE <filters> AND seq < :before ORDER BY seq DESC LIMIT 51``
  (keyset pagination: the "older" link carries the last ``seq`` shown). With an
  equality filter that is one backward range read of its ``(column, seq)``
  index, whatever the page number; an ``OFFSET`` would read every row before
  the page instead. ``seq`` is assigned inside the writers' lock, so a row that
  commits later always has a higher ``seq`` than every row already read: new
  events appear on the newest page and never shift or repeat the older ones.
* the time range compares the ``time`` column as text: every stored time has
  the one fixed-width form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
  (:func:`~flask_ccsso.audit.events.iso_time`), so text order is time order,
  on SQLite and PostgreSQL alike. A range with no other filter is paged in
  ``(time, seq)`` order instead, ``WHERE time in range AND (time, seq) <
  (time of :before, :before)``: one backward read of the ``time`` index
  however wide the range (SQLite's index holds ``seq``, the rowid, after
  ``time``; PostgreSQL orders the few events of one microsecond by ``seq``
  with an incremental sort). (In ``seq`` order the database would read the whole
  range through the time index and sort it, for every page. ``time`` follows
  ``seq`` except when writers' clocks disagree, so the range cannot be turned
  into a ``seq`` range exactly.) With another filter too, its ``(column, seq)``
  index serves the page and the range is checked on the rows it reads.
* an export reads the same pages, 1000 rows at a time (:func:`stream_rows`),
  each on a connection of its own that is returned before the rows are sent:
  no statement or read transaction stays open while a slow client downloads.

Bad input (an unparseable date, an over-long or unknown value) is a
:class:`FilterError` naming the field; the page answers 400 with it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ..audit.events import OUTCOMES

#: rows on one page
PAGE_SIZE = 50
#: the most rows one export holds (newest first); narrow the filters for more
EXPORT_LIMIT = 100_000
#: longest accepted value of a text filter (a subject, an email, a skill or provider name)
MAX_VALUE = 256
#: the outcomes an event can have
OUTCOME_VALUES = tuple(sorted(set(OUTCOMES.values())))
#: the event types this version records (other well-formed types are accepted: older or newer writers)
EVENT_TYPES = tuple(sorted(OUTCOMES))

_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SEQ = re.compile(r"^[0-9]{1,18}$")
#: the largest ``seq`` the column holds (a signed 64-bit integer on SQLite and PostgreSQL)
MAX_SEQ = 2**63 - 1
#: rows an export reads at a time, each batch in a short read of its own
EXPORT_CHUNK = 1000
_STORED_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class FilterError(ValueError):
    """A filter the explorer cannot use; ``field`` is its query parameter, ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class AuditFilters:
    """What the operator asked for. Times are in the stored form (UTC), ``end`` exclusive."""

    start: str | None = field(default=None, metadata={"param": "from"})
    end: str | None = field(default=None, metadata={"param": "to"})
    person: str | None = field(default=None, metadata={"param": "person"})
    type: str | None = field(default=None, metadata={"param": "type"})
    skill: str | None = field(default=None, metadata={"param": "skill"})
    outcome: str | None = field(default=None, metadata={"param": "outcome"})
    provider: str | None = field(default=None, metadata={"param": "provider"})

    def params(self) -> dict[str, str]:
        """The filters as query parameters (for "older", the exports, "verify"): only those set."""
        return {f.metadata["param"]: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    @property
    def active(self) -> bool:
        return bool(self.params())


#: query parameter -> field name
PARAMS = {f.metadata["param"]: f.name for f in fields(AuditFilters)}


_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)")


def _for_fromisoformat(value: str) -> str:
    """What Python 3.10's ``datetime.fromisoformat`` reads too: a ``Z`` offset
    as ``+00:00``, and seconds' fractions of any length as six digits (3.11
    reads both itself)."""
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    return _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value, count=1)


def parse_time(value: str, param: str) -> str:
    """An ISO 8601 time (``2025-01-31T09:15``, ``...:02.5Z``, ``...+01:00``, or a date) in the stored form.

    A time without an offset is UTC: that is what the console shows, and what a
    ``datetime-local`` input (which has no zone) sends back.
    """
    if len(value) > 40:
        raise FilterError(param, "is too long to be a date and time.")
    try:
        parsed = datetime.fromisoformat(_for_fromisoformat(value.strip()))
    except ValueError:
        raise FilterError(param, f"{value!r} is not a date and time; use e.g. 2025-01-31T09:15 (UTC) "
                                 "or 2025-01-31T09:15:00+01:00.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc).strftime(_STORED_TIME)
    except (OverflowError, ValueError):
        raise FilterError(param, f"{value!r} is out of range.") from None


def _text(value: str, param: str) -> str:
    if len(value) > MAX_VALUE:
        raise FilterError(param, f"is longer than {MAX_VALUE} characters.")
    if _CONTROL.search(value):
        raise FilterError(param, "holds control characters.")
    return value.strip()


def parse_filters(args: Mapping[str, str]) -> AuditFilters:
    """The filters of a query string (empty values are "any").

    :raises FilterError: a value the explorer cannot use.
    """
    values: dict[str, str | None] = {}
    for param, name in PARAMS.items():
        raw = args.get(param, "")
        if not raw or not raw.strip():
            continue
        if param in ("from", "to"):
            values[name] = parse_time(raw, param)
            continue
        value = _text(raw, param)
        if not value:
            continue
        if param == "outcome" and value not in OUTCOME_VALUES:
            raise FilterError(param, f"{value!r} is not an outcome; use one of: {', '.join(OUTCOME_VALUES)}.")
        if param == "type" and not _EVENT_TYPE.match(value):
            raise FilterError(param, f"{value!r} is not an event type (e.g. auth.login).")
        values[name] = value
    filters = AuditFilters(**values)
    if filters.start and filters.end and filters.start >= filters.end:
        raise FilterError("to", "must be later than 'from'.")
    return filters


def parse_before(value: str | None) -> int | None:
    """The keyset of an "older" link: the ``seq`` the previous page ended at."""
    if not value:
        return None
    if not _SEQ.match(value):
        raise FilterError("before", "must be an event's sequence number.")
    return int(value)


def person_conditions(t: sa.Table, person: str) -> list[sa.ColumnElement[bool]]:
    """One person: the email as given or lower-cased (IdPs differ), or the subject -- each alternative
    answered by its own ``(column, seq)`` index."""
    emails = sorted({person, person.lower()})
    return [t.c.actor_email.in_(emails), t.c.actor_subject == person]


def conditions(t: sa.Table, filters: AuditFilters, *, person: bool = True) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses of ``filters`` (each one an indexed column); ``person=False`` leaves the
    person out (:func:`page_query` reads each of its alternatives apart)."""
    where: list[sa.ColumnElement[bool]] = []
    if filters.start:
        where.append(t.c.time >= filters.start)
    if filters.end:
        where.append(t.c.time < filters.end)
    if filters.person and person:
        where.append(sa.or_(*person_conditions(t, filters.person)))
    for name in ("type", "skill", "outcome", "provider"):
        value = getattr(filters, name)
        if value:
            where.append(t.c[name] == value)
    return where


def time_ordered(filters: AuditFilters) -> bool:
    """A time range and nothing else: pages go in ``(time, seq)`` order, read down the ``time`` index."""
    return bool(filters.start or filters.end) and not filters.person and \
        not any(getattr(filters, name) for name in ("type", "skill", "outcome", "provider"))


def newest_query(t: sa.Table, filters: AuditFilters, before: int | None, limit: int) -> sa.Select[Any]:
    """The newest ``limit`` events matching ``filters`` older than the event ``before`` (keyset), each
    kind of filter read through its index.

    A person is an email *or* a subject: an ``OR`` would make the database collect every event of
    both and sort them, however many there are. Instead each alternative takes its newest
    ``limit`` by its own index, and the result is the newest of those (at most twice ``limit`` read).
    A time range alone is read in ``(time, seq)`` order (:func:`time_ordered`); "older than
    ``before``" is then older in that order, the event's time looked up by its primary key.
    """
    where = conditions(t, filters, person=False)
    if time_ordered(filters):
        if before is not None:
            before_time = sa.select(t.c.time).where(t.c.seq == before).scalar_subquery()
            where.append(sa.tuple_(t.c.time, t.c.seq) < sa.tuple_(before_time, sa.literal(before)))
        return sa.select(t).where(*where).order_by(t.c.time.desc(), t.c.seq.desc()).limit(limit)
    if before is not None:
        where.append(t.c.seq < before)
    if not filters.person:
        return sa.select(t).where(*where).order_by(t.c.seq.desc()).limit(limit)
    newest = [sa.select(t.c.seq).where(*where, alternative).order_by(t.c.seq.desc()).limit(limit).subquery()
              for alternative in person_conditions(t, filters.person)]
    seqs = sa.union(*(sa.select(sub.c.seq) for sub in newest))
    return sa.select(t).where(t.c.seq.in_(seqs)).order_by(t.c.seq.desc()).limit(limit)


def page_query(t: sa.Table, filters: AuditFilters, before: int | None, size: int = PAGE_SIZE) -> sa.Select[Any]:
    """One page, newest first: ``size + 1`` rows (the extra one says whether there is an older page)."""
    return newest_query(t, filters, before, size + 1)


@dataclass(frozen=True)
class Page:
    """The rows of one page (newest first) and the keyset of the next, older one (``None``: no more)."""

    rows: list[dict[str, Any]]
    older: int | None


def fetch_page(conn: sa.Connection, t: sa.Table, filters: AuditFilters, before: int | None,
               size: int = PAGE_SIZE) -> Page:
    rows = [dict(r) for r in conn.execute(page_query(t, filters, before, size)).mappings()]
    older = rows[size - 1]["seq"] if len(rows) > size else None
    return Page(rows=[_with_event(r) for r in rows[:size]], older=older)


def fetch_event(conn: sa.Connection, t: sa.Table, *, seq: int | None = None,
                event_id: str | None = None) -> dict[str, Any] | None:
    """One stored row by ``seq`` (primary key) or ``event_id`` (unique), with its event parsed."""
    where = t.c.seq == seq if seq is not None else t.c.event_id == event_id
    row = conn.execute(sa.select(t).where(where)).mappings().first()
    return _with_event(dict(row)) if row is not None else None


def _with_event(row: dict[str, Any]) -> dict[str, Any]:
    """The row with ``data`` (the stored JSON, parsed) and ``pretty`` (it, indented, for the detail view)."""
    try:
        data = json.loads(row["event"])
    except (TypeError, ValueError):
        data = None  # a damaged row: the raw text is shown, and "Verify chain" names it
    row["data"] = data if isinstance(data, dict) else {}
    row["pretty"] = json.dumps(data, indent=2, ensure_ascii=False) if data is not None else row["event"]
    return row


def stream_rows(engine: sa.Engine, t: sa.Table, filters: AuditFilters, limit: int | None = None,
                chunk: int = EXPORT_CHUNK) -> Generator[dict[str, Any], None, None]:
    """The filtered rows, newest first, at most ``limit`` (default :data:`EXPORT_LIMIT`).

    Read ``chunk`` rows at a time with the pages' keyset query (:func:`newest_query`), each
    chunk on a connection of its own, returned to the pool before its rows are handed on: a
    download that takes minutes never holds a statement, a read transaction or (SQLite) a read
    lock while the client reads. Never more than one chunk in memory.
    """
    remaining = EXPORT_LIMIT if limit is None else limit
    before: int | None = None
    while remaining > 0:
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(newest_query(t, filters, before, min(chunk, remaining))).mappings()]
        yield from rows
        if len(rows) < min(chunk, remaining):
            return
        remaining -= len(rows)
        before = rows[-1]["seq"]


# -- export formats -------------------------------------------------------------------------

#: the CSV columns: the stored query columns, then fields read from the event JSON
CSV_COLUMNS = ("seq", "time", "type", "outcome", "reason", "actor_subject", "actor_email", "provider", "skill",
               "via", "client_ip", "user_agent", "request_id", "detail", "event_id", "hash")
_FROM_EVENT = ("via", "user_agent", "detail")
#: a spreadsheet reads a cell starting with one of these as a formula (CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One CSV cell: ``None`` empty, a text that a spreadsheet would run as a formula prefixed with ``'``."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The header line, then one line per row (RFC 4180 quoting, ``\\r\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf)

    def line(values: Iterable[Any]) -> str:
        buf.seek(0)
        buf.truncate()
        writer.writerow([csv_cell(v) for v in values])
        return buf.getvalue()

    yield line(CSV_COLUMNS)
    for row in rows:
        try:
            event = json.loads(row["event"])
        except (TypeError, ValueError):
            event = {}
        if not isinstance(event, dict):
            event = {}
        yield line(event.get(c) if c in _FROM_EVENT else row.get(c) for c in CSV_COLUMNS)


def ndjson_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object per line: ``seq``, ``prev_hash``, ``hash`` and the stored ``event`` byte for byte
    (so the export can be checked against the chain: ``hash = sha256(prev_hash + "\\n" + event)``)."""
    for row in rows:
        event = row["event"]
        try:
            json.loads(event)
        except (TypeError, ValueError):
            event = json.dumps(event)  # a damaged row: its text, as a JSON string
        yield (f'{{"seq":{int(row["seq"])},"prev_hash":{json.dumps(row["prev_hash"])},'
               f'"hash":{json.dumps(row["hash"])},"event":{event}}}\n')


__all__ = ["CSV_COLUMNS", "EVENT_TYPES", "EXPORT_CHUNK", "EXPORT_LIMIT", "MAX_SEQ", "OUTCOME_VALUES", "PAGE_SIZE",
           "AuditFilters", "FilterError", "Page", "csv_cell", "csv_lines", "fetch_event", "fetch_page",
           "ndjson_lines", "newest_query", "page_query", "parse_before", "parse_filters", "parse_time",
           "stream_rows", "time_ordered"]
