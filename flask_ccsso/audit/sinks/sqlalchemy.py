"""The SQLAlchemy sink: a hash-chained table in SQLite or PostgreSQL (SQLAlchemy Core).

Table ``ccsso_audit_events`` (name configurable)::

    seq          integer, primary key, increasing      -- the chain order
    event_id     text, UNIQUE                           -- re-delivery is ignored
    time, type, outcome, actor_subject, actor_email, provider, skill, reason,
    request_id, client_ip                               -- copies of event fields, for queries
    event        text                                   -- the canonical JSON of the whole event
    prev_hash    text                                   -- hash of the row before (64 zeros first)
    hash         text                                   -- sha256(prev_hash + "\\n" + event)

Writers take a lock for the length of a batch (``pg_advisory_xact_lock`` on
PostgreSQL; SQLite's own write lock), read the last hash, skip event ids that
are already stored and insert the rest in one ``executemany``. So any number of
processes can share the table and the chain stays one line.

Indexes: ``time``, and (:data:`QUERY_INDEXES`) one ``(column, seq)`` per column the
operator console's audit explorer filters on, so a filtered page newest-first is one index
range read from its keyset (``seq < last seen``), never a scan of the table. A page of a time
range alone goes in ``(time, seq)`` order down the ``time`` index (SQLite keeps ``seq``, the
rowid, in every index; PostgreSQL sorts only events of the same microsecond, an incremental
sort). ``(type, time)`` serves the console's charts (counts per type and time bucket).
:func:`create_table` adds any that an existing table lacks (``flask ccsso audit
init-db`` after an upgrade); the sink itself never indexes an existing table (on a
large table that takes longer than its statement timeout).

:func:`verify_chain` recomputes every hash in ``seq`` order and checks the
query columns against the stored JSON: an edited, inserted or deleted row is
found and named. (Deleting the newest rows cannot be seen from the table alone:
keep the last hash somewhere else, e.g. ``flask ccsso audit tail`` in a
monitoring job.)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc

from ...stores.database import database_error_line, multi_host_url
from ..events import GENESIS_HASH, AuditEvent, chain_hash
from ..settings import DEFAULT_TABLE
from .base import PoisonBatchError, Sink, TransientSinkError

_COPIED = ("time", "type", "outcome", "provider", "skill", "reason", "request_id", "client_ip")


#: the query indexes besides ``time``: (index suffix, columns). A ``(column, seq)`` index
#: answers "newest events where column = x, older than seq n" (the console's keyset pages)
#: as one backward range read; ``(type, time)`` answers the charts' per-type counts in a
#: time range without reading the events themselves.
QUERY_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("type_seq", ("type", "seq")),
    ("type_time", ("type", "time")),
    ("outcome_seq", ("outcome", "seq")),
    ("actor_email_seq", ("actor_email", "seq")),
    ("actor_subject_seq", ("actor_subject", "seq")),
    ("provider_seq", ("provider", "seq")),
    ("skill_seq", ("skill", "seq")),
)

#: PostgreSQL's identifier limit (longer names are cut, and then never found again by name)
_MAX_NAME = 63


def index_name(table: str, suffix: str) -> str:
    """``ix_<table>_<suffix>``, or, when that exceeds 63 characters, a name that keeps the
    suffix and a hash of the table name (stable, so create-if-missing finds it again)."""
    name = f"ix_{table}_{suffix}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:10]
    return f"ix_{table[:_MAX_NAME - len(suffix) - 15]}_{digest}_{suffix}"


def audit_table(name: str = DEFAULT_TABLE, metadata: sa.MetaData | None = None) -> sa.Table:
    """The :class:`sqlalchemy.Table` for the audit events, with its indexes (:data:`QUERY_INDEXES`)."""
    metadata = metadata if metadata is not None else sa.MetaData()
    t = sa.Table(
        name, metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor_subject", sa.Text()),
        sa.Column("actor_email", sa.Text()),
        sa.Column("provider", sa.Text()),
        sa.Column("skill", sa.Text()),
        sa.Column("reason", sa.Text()),
        sa.Column("request_id", sa.Text()),
        sa.Column("client_ip", sa.Text()),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    # named here, not by SQLAlchemy's index=True (the same name for any table name that fits, but
    # SQLAlchemy shortens a long one at DDL time only, and then "create if missing" never finds it)
    sa.Index(index_name(name, "time"), t.c.time)
    for suffix, columns in QUERY_INDEXES:
        sa.Index(index_name(name, suffix), *(t.c[c] for c in columns))
    return t


def missing_indexes(engine: sa.Engine, table: str = DEFAULT_TABLE) -> list[str]:
    """The names of :func:`audit_table`'s indexes the table in the database lacks
    (an existing table from before they were added: ``flask ccsso audit init-db`` adds them)."""
    present = {ix["name"] for ix in sa.inspect(engine).get_indexes(table)}
    return sorted(str(ix.name) for ix in audit_table(table).indexes if ix.name not in present)


#: URL schemes whose driver takes libpq's ``connect_timeout`` (seconds)
_LIBPQ = ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://")


#: PostgreSQL timeouts, all below the 5 s shutdown budget (``AuditPipeline.close``), so a
#: write to a database that stopped answering fails in time to be spooled: connecting
#: (libpq ``connect_timeout``, seconds), waiting for a lock -- a ``LOCK TABLE`` held
#: elsewhere, the chain's advisory lock -- (``lock_timeout``) and any one statement
#: (``statement_timeout``), both milliseconds, and waiting for a pooled connection (seconds).
PG_CONNECT_TIMEOUT = 3
PG_LOCK_TIMEOUT_MS = 3000
PG_STATEMENT_TIMEOUT_MS = 4000
POOL_TIMEOUT = 3.0


def make_engine(url: str, *, writer: bool = False, statement_timeout_ms: int | None = None) -> sa.Engine:
    """An engine for the audit database.

    On PostgreSQL connections give up after ``PG_CONNECT_TIMEOUT`` (libpq's default is to
    wait forever); the sink's own engine (``writer``) also gets the lock and statement
    timeouts above, a reader may ask for a ``statement_timeout_ms`` of its own (the console:
    nothing an operator runs holds a connection for long; not the CLI's ``audit verify``).
    The URL's own ``options=`` win. Multi-host URLs work
    (:func:`~flask_ccsso.stores.database.multi_host_url`).

    A SQLite database is put in WAL mode on connect (:func:`_sqlite_wal`): readers then
    read a snapshot and never block the writer, nor it them -- in the default rollback
    journal a long read (an export, the chain verification) held off every audit write
    ("database is locked").
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa_event.listen(engine, "connect", _sqlite_wal)
        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith(_LIBPQ):
        url = multi_host_url(url)
        connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT}
        if "options=" not in url:  # the URL's own server options win
            if writer:
                connect_args["options"] = (f"-c lock_timeout={PG_LOCK_TIMEOUT_MS} "
                                           f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}")
            elif statement_timeout_ms is not None:
                connect_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, pool_timeout=POOL_TIMEOUT,
                            connect_args=connect_args)


def _sqlite_wal(dbapi_conn: Any, _record: Any) -> None:
    """``PRAGMA journal_mode=WAL`` on a new SQLite connection (the mode is kept in the file, so
    this changes it once per database; an in-memory database stays as it is). Should another
    connection hold the file just then, the mode stays, and the next connection tries again."""
    try:
        dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchall()
    except sqlite3.OperationalError:  # busy: reading and writing work in any mode
        pass


def create_table(engine: sa.Engine, table: str = DEFAULT_TABLE, *, add_indexes: bool = True) -> sa.Table:
    """Create the audit table (and its indexes) if it does not exist yet; with ``add_indexes``
    also create each index an existing table lacks (``CREATE INDEX`` only for those missing).

    ``flask ccsso audit init-db`` adds them (so it is the upgrade step when a release adds
    an index); the sink passes ``add_indexes=False``: indexing a large existing table takes
    longer than its statement timeout, and writers would wait on it.

    Every worker process creates the table on its first write, often at the same moment
    (the first requests after a deploy, or the shutdown flush). "Check, then CREATE" is not
    atomic across sessions: the losers got ``UniqueViolation`` / ``DuplicateTable`` and
    spooled their events as if the database were down. On PostgreSQL the check and the
    CREATE run under the chain's advisory lock in one transaction (DDL is transactional
    there); elsewhere a failed CREATE is retried once the table is seen to exist.
    """
    t = audit_table(table)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(table)})
            t.metadata.create_all(conn, checkfirst=True)
            if add_indexes:
                _add_missing_indexes(conn, t)
        return t
    for attempt in range(3):
        try:
            t.metadata.create_all(engine, checkfirst=True)
            break
        except sa_exc.SQLAlchemyError:
            if attempt == 2 or not sa.inspect(engine).has_table(table):
                raise  # a real failure, not another process creating the same table
    if add_indexes:
        with engine.begin() as conn:
            _add_missing_indexes(conn, t)
    return t


def _add_missing_indexes(conn: sa.Connection, t: sa.Table) -> None:
    """``create_all(checkfirst=True)`` skips an existing table together with its indexes:
    create each index the table lacks, one by one (each checked first)."""
    for index in sorted(t.indexes, key=lambda ix: str(ix.name)):
        index.create(conn, checkfirst=True)


def _lock_key(table: str) -> int:
    return int.from_bytes(hashlib.sha256(f"ccsso-audit:{table}".encode()).digest()[:8], "big", signed=True)


def _row(event: dict[str, Any], event_json: str, prev: str) -> dict[str, Any]:
    actor = event.get("actor") or {}
    row = {name: event.get(name) for name in _COPIED}
    row.update(event_id=event["id"], actor_subject=actor.get("subject"), actor_email=actor.get("email"),
               event=event_json, prev_hash=prev, hash=chain_hash(event_json, prev))
    return row


#: the columns written, in COPY order (``seq`` comes from its sequence, in row order)
_COLUMNS = ("event_id", *_COPIED, "actor_subject", "actor_email", "event", "prev_hash", "hash")


def _chain_rows(events: Sequence[AuditEvent], prev: str, skip: set[str] | None) -> list[tuple[Any, ...]]:
    """The batch's rows in :data:`_COLUMNS` order, hash-chained from ``prev`` (one pass, one
    ``sha256`` per event over the canonical JSON bytes the event already holds)."""
    rows = []
    sha256 = hashlib.sha256
    for event in events:
        eid = event.id
        if skip is not None:
            if eid in skip:
                continue
            skip.add(eid)
        raw = event.to_json_bytes()
        digest = sha256(prev.encode() + b"\n" + raw).hexdigest()
        actor = event.actor
        rows.append((eid, event.time, event.type, event.outcome, event.provider, event.skill, event.reason,
                     event.request_id, event.client_ip,
                     actor.get("subject") if actor else None, actor.get("email") if actor else None,
                     event.to_json(), prev, digest))
        prev = digest
    return rows


def _copy_field(value: Any) -> str:
    """One field in COPY's text format."""
    if value is None:
        return "\\N"
    text = str(value)
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\t" in text or "\n" in text or "\r" in text:
        text = text.translate(_COPY_ESCAPES)
    return text


_COPY_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})
_TABS = len(_COLUMNS) - 1


def _copy_text(rows: list[tuple[Any, ...]]) -> str:
    """The rows in COPY's text format. A row of strings holding no tab, newline, CR or NUL
    (every row but one rebuilt from a hand-edited spool row) is joined in one step, ``NULL``
    as a NUL placeholder, and escaped as a whole; any other row field by field."""
    lines = []
    for row in rows:
        try:
            line = "\t".join([v if v is not None else "\x00" for v in row])
        except TypeError:
            line = ""
        nulls = row.count(None)
        if (line and line.count("\t") == _TABS and "\n" not in line and "\r" not in line
                and line.count("\x00") == nulls):
            if "\\" in line:
                line = line.replace("\\", "\\\\")
            lines.append(line.replace("\x00", "\\N") if nulls else line)
        else:
            lines.append("\t".join([_copy_field(v) for v in row]))
    lines.append("")
    return "\n".join(lines)


def _copy_rows(dbapi_conn: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    """``COPY table (columns) FROM STDIN`` on a psycopg 3 connection: the rows as one text buffer."""
    import psycopg
    from psycopg import sql

    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS))
    buf = _copy_text(rows).encode()
    try:
        with dbapi_conn.cursor() as cur, cur.copy(stmt) as copy:
            copy.write(buf)
    except psycopg.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, DataError, OperationalError...)
        raise sa_exc.DBAPIError.instance(f"COPY {table}", None, exc, psycopg.Error) from exc


def _uses_copy(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def write_events(engine: sa.Engine, table: sa.Table, events: Sequence[AuditEvent], *, dedupe: bool = True) -> int:
    """Append events to the chain in one transaction. Returns the number inserted.

    ``dedupe`` (for a batch that may have been written before: a retry, a spool or
    backlog replay) skips event ids already stored; a fresh batch skips that query.
    Should a fresh batch hold a stored id after all (a write whose answer was lost),
    the table's UNIQUE constraint refuses it and the batch is written again with
    ``dedupe``. On PostgreSQL with psycopg 3 the rows go in with one ``COPY``;
    elsewhere in one multi-row insert (``executemany``).
    """
    try:
        return _write_events(engine, table, events, dedupe)
    except sa_exc.IntegrityError:
        if dedupe:
            raise
        return _write_events(engine, table, events, True)


def _write_events(engine: sa.Engine, table: sa.Table, events: Sequence[AuditEvent], dedupe: bool) -> int:
    with engine.begin() as conn:
        # the chain's lock, taken before the last hash is read (two writers reading the same
        # last hash would fork the chain): PostgreSQL's advisory lock; on SQLite the write lock
        # itself, now -- pysqlite would only begin the transaction at the INSERT, after the read
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(table.name)})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        skip: set[str] | None = None
        if dedupe:
            ids = list({e.id for e in events})
            skip = set()
            for i in range(0, len(ids), 1000):
                skip.update(conn.execute(sa.select(table.c.event_id).where(
                    table.c.event_id.in_(ids[i:i + 1000]))).scalars())
        last = conn.execute(sa.select(table.c.hash).order_by(table.c.seq.desc()).limit(1)).scalar()
        rows = _chain_rows(events, last or GENESIS_HASH, skip)
        if not rows:
            return 0
        if _uses_copy(conn):
            _copy_rows(conn.connection.driver_connection, table.name, rows)
        else:
            conn.execute(table.insert(), [dict(zip(_COLUMNS, row)) for row in rows])
        return len(rows)


#: rows :func:`verify_chain` reads at a time, each batch in a short read of its own
VERIFY_CHUNK = 1000


def verify_chain(engine: sa.Engine, table: str = DEFAULT_TABLE) -> tuple[bool, str | None]:
    """Check the whole chain. Returns ``(True, None)`` or ``(False, first_broken_event_id)``.

    A row is broken when its ``prev_hash`` is not the previous row's hash (a
    row was removed or inserted before it), its ``hash`` does not match its
    content, or a query column disagrees with the stored JSON (an edit).
    The hash is recomputed over the stored JSON text as it is: the bytes the
    writer hashed, whichever JSON encoder made them. The table is read in
    ``seq`` order :data:`VERIFY_CHUNK` rows at a time, each chunk a short read
    of its own: no statement stays open for the whole table (a PostgreSQL
    ``statement_timeout`` holds for each chunk), and writers append meanwhile.
    """
    t = audit_table(table)
    prev = GENESIS_HASH
    last: int | None = None
    while True:  # VERIFY_CHUNK rows at a time, each read short (no statement open for the whole table)
        query = sa.select(t).order_by(t.c.seq).limit(VERIFY_CHUNK)
        with engine.connect() as conn:
            rows = conn.execute(query.where(t.c.seq > last) if last is not None else query).mappings().all()
        for row in rows:
            if not _row_ok(row, prev):
                return False, row["event_id"]
            prev = row["hash"]
        if len(rows) < VERIFY_CHUNK:
            return True, None
        last = rows[-1]["seq"]


def _row_ok(row: Any, prev: str) -> bool:
    try:
        text = row["event"]
        data = json.loads(text)
        expected = _row(data, text, row["prev_hash"])
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError):
        return False
    if row["prev_hash"] != prev or row["hash"] != expected["hash"]:
        return False
    return all(row[name] == expected[name] for name in _COPIED + ("event_id", "actor_subject", "actor_email"))


def tail(engine: sa.Engine, table: str = DEFAULT_TABLE, n: int = 20) -> list[dict[str, Any]]:
    """The last ``n`` events, oldest first, each with its ``seq`` and ``hash``."""
    t = audit_table(table)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.seq, t.c.event, t.c.hash).order_by(t.c.seq.desc()).limit(n)).all()
    out = []
    for seq, event, digest in reversed(rows):
        data = json.loads(event)
        data["_seq"] = seq
        data["_hash"] = digest
        out.append(data)
    return out


class SQLAlchemySink(Sink):
    """Writes to ``settings.table`` at ``settings.url``; creates the table unless ``createTable`` is false."""

    engine: sa.Engine | None = None

    def after_fork(self) -> None:
        if self.engine is not None:
            self.engine.dispose(close=False)  # the pooled connections are the parent's

    def open(self) -> None:
        if self.engine is None:
            assert self.settings.url is not None
            self.engine = make_engine(self.settings.url, writer=True)
        try:
            if self.settings.create_table:
                self.table = create_table(self.engine, self.settings.table, add_indexes=False)
            else:
                self.table = audit_table(self.settings.table)
        except sa_exc.SQLAlchemyError as exc:
            raise TransientSinkError(f"cannot prepare table: {self._problem(exc)}") from exc

    def create_table(self) -> None:
        if self.engine is None:
            assert self.settings.url is not None
            self.engine = make_engine(self.settings.url, writer=True)
        self.table = create_table(self.engine, self.settings.table, add_indexes=False)

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        assert self.engine is not None
        # only a batch that may have been written before is checked for stored ids: events read
        # back from the spool (built from their JSON) or recovered; a fresh batch's retry is
        # caught by the UNIQUE constraint instead (see write_events)
        dedupe = any(e.captured is None for e in events)
        try:
            write_events(self.engine, self.table, events, dedupe=dedupe)
        except sa_exc.DataError as exc:
            raise PoisonBatchError(f"database refused the data ({type(exc.orig).__name__})") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise TransientSinkError(f"database error: {self._problem(exc)}") from exc

    def _problem(self, exc: BaseException) -> str:
        """What failed and the fix, with the URL (password masked): the sink's log lines say it."""
        return database_error_line(exc, self.settings.url or "", table=self.settings.table,
                                   missing_table_fix="set 'createTable' to true, or run `flask ccsso audit init-db`.")

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


__all__ = ["QUERY_INDEXES", "SQLAlchemySink", "audit_table", "create_table", "index_name", "missing_indexes", "tail",
           "verify_chain", "write_events"]
