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

:func:`verify_chain` recomputes every hash in ``seq`` order and checks the
query columns against the stored JSON: an edited, inserted or deleted row is
found and named. (Deleting the newest rows cannot be seen from the table alone:
keep the last hash somewhere else, e.g. ``flask ccsso audit tail`` in a
monitoring job.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ...stores.database import database_error_line
from ..events import GENESIS_HASH, AuditEvent, canonical_json, chain_hash
from ..settings import DEFAULT_TABLE
from .base import PoisonBatchError, Sink, TransientSinkError

_COPIED = ("time", "type", "outcome", "provider", "skill", "reason", "request_id", "client_ip")


def audit_table(name: str = DEFAULT_TABLE, metadata: sa.MetaData | None = None) -> sa.Table:
    """The :class:`sqlalchemy.Table` for the audit events."""
    metadata = metadata if metadata is not None else sa.MetaData()
    return sa.Table(
        name, metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
        sa.Column("time", sa.String(40), nullable=False, index=True),
        sa.Column("type", sa.Text(), nullable=False, index=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor_subject", sa.Text()),
        sa.Column("actor_email", sa.Text(), index=True),
        sa.Column("provider", sa.Text()),
        sa.Column("skill", sa.Text()),
        sa.Column("reason", sa.Text()),
        sa.Column("request_id", sa.Text()),
        sa.Column("client_ip", sa.Text()),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


#: URL schemes whose driver takes libpq's ``connect_timeout`` (seconds)
_LIBPQ = ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://")


def make_engine(url: str) -> sa.Engine:
    """An engine for the audit database. A server that does not answer fails
    the connection after 10 s (libpq's default is to wait forever)."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 30})
    connect_args = {"connect_timeout": 10} if url.startswith(_LIBPQ) else {}
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=connect_args)


def create_table(engine: sa.Engine, table: str = DEFAULT_TABLE) -> sa.Table:
    """Create the audit table (and its indexes) if it does not exist yet.

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
        return t
    for attempt in range(3):
        try:
            t.metadata.create_all(engine, checkfirst=True)
            return t
        except sa_exc.SQLAlchemyError:
            if attempt == 2 or not sa.inspect(engine).has_table(table):
                raise  # a real failure, not another process creating the same table
    return t


def _lock_key(table: str) -> int:
    return int.from_bytes(hashlib.sha256(f"ccsso-audit:{table}".encode()).digest()[:8], "big", signed=True)


def _row(event: dict[str, Any], event_json: str, prev: str) -> dict[str, Any]:
    actor = event.get("actor") or {}
    row = {name: event.get(name) for name in _COPIED}
    row.update(event_id=event["id"], actor_subject=actor.get("subject"), actor_email=actor.get("email"),
               event=event_json, prev_hash=prev, hash=chain_hash(event_json, prev))
    return row


def write_events(engine: sa.Engine, table: sa.Table, events: Sequence[AuditEvent]) -> int:
    """Append events to the chain, skipping ids already stored. Returns the number inserted."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(table.name)})
        ids = [e.id for e in events]
        stored = set(conn.execute(sa.select(table.c.event_id).where(table.c.event_id.in_(ids))).scalars())
        last = conn.execute(sa.select(table.c.hash).order_by(table.c.seq.desc()).limit(1)).scalar()
        prev = last or GENESIS_HASH
        rows = []
        for event in events:
            if event.id in stored:
                continue
            stored.add(event.id)
            data = event.to_dict()
            event_json = event.to_json()
            row = _row(data, event_json, prev)
            prev = row["hash"]
            rows.append(row)
        if rows:
            conn.execute(table.insert(), rows)
        return len(rows)


def verify_chain(engine: sa.Engine, table: str = DEFAULT_TABLE) -> tuple[bool, str | None]:
    """Check the whole chain. Returns ``(True, None)`` or ``(False, first_broken_event_id)``.

    A row is broken when its ``prev_hash`` is not the previous row's hash (a
    row was removed or inserted before it), its ``hash`` does not match its
    content, or a query column disagrees with the stored JSON (an edit).
    """
    t = audit_table(table)
    prev = GENESIS_HASH
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=1000).execute(sa.select(t).order_by(t.c.seq))
        try:
            for row in result.mappings():
                if not _row_ok(row, prev):
                    return False, row["event_id"]
                prev = row["hash"]
        finally:
            result.close()
    return True, None


def _row_ok(row: Any, prev: str) -> bool:
    try:
        data = json.loads(row["event"])
        expected = _row(data, canonical_json(data), row["prev_hash"])
    except (ValueError, KeyError, TypeError, AttributeError):
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
            self.engine = make_engine(self.settings.url)
        try:
            if self.settings.create_table:
                self.table = create_table(self.engine, self.settings.table)
            else:
                self.table = audit_table(self.settings.table)
        except sa_exc.SQLAlchemyError as exc:
            raise TransientSinkError(f"cannot prepare table: {self._problem(exc)}") from exc

    def create_table(self) -> None:
        if self.engine is None:
            assert self.settings.url is not None
            self.engine = make_engine(self.settings.url)
        self.table = create_table(self.engine, self.settings.table)

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        assert self.engine is not None
        try:
            write_events(self.engine, self.table, events)
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


__all__ = ["SQLAlchemySink", "audit_table", "create_table", "tail", "verify_chain", "write_events"]
