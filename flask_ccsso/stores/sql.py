"""The SQL backend: SQLAlchemy Core on PostgreSQL or SQLite.

Two tables (``<prefix>kv`` and ``<prefix>kv_set``), created on first use.
Expired rows are ignored on read and swept now and then on write, so no cron
job is needed. The embedded default (:meth:`SQLStore.embedded`) is a SQLite
file in WAL mode: any number of processes on one machine share it, and
SQLite's database write lock (a file lock the SQLite library takes, on every
platform) makes :meth:`SQLStore.update` atomic across them.
"""

from __future__ import annotations

import builtins
import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..exceptions import StoreUnavailable
from .base import Batch, Change, SharedStore
from .database import multi_host_url

#: the embedded default's file, in the instance folder (or ``session.store.path``)
EMBEDDED_FILE = "ccsso-state.sqlite"


#: a pooled connection unused for longer than this is pinged before it is handed out
PING_AFTER_IDLE = 10.0


def _ping_when_idle(engine: Any) -> None:
    """Ping a pooled connection before use only when it sat idle for more than
    :data:`PING_AFTER_IDLE` seconds (a database restart or a firewall may
    have dropped it meanwhile); a dead one is replaced by the pool
    (SQLAlchemy's "pessimistic disconnect handling", without its round trip
    on every checkout -- a busy connection is not pinged: the request path
    stays one round trip)."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "checkin")
    def _idle_since(dbapi_conn: Any, record: Any) -> None:
        record.info["ccsso_idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("ccsso_idle_since")
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            dbapi_conn.rollback()  # leave no transaction open (autocommit is set after checkout)
        except Exception as exc:
            raise sa.exc.DisconnectionError() from exc


_T = TypeVar("_T")

class SQLStore(SharedStore):
    """SQLAlchemy Core backend (PostgreSQL, SQLite). Expired rows are ignored
    on read and swept now and then on write, so no cron job is needed."""

    def __init__(self, engine: Any, clock: Callable[[], float] = time.time, table_prefix: str = "ccsso_",
                 key_prefix: str = "", url: str | None = None) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.url = url if url is not None else engine.url.render_as_string(hide_password=False)
        self.prefix = key_prefix
        self.engine = engine
        self._clock = clock
        md = sa.MetaData()
        self.kv = sa.Table(f"{table_prefix}kv", md,
                           sa.Column("key", sa.String(255), primary_key=True),
                           sa.Column("value", sa.Text, nullable=False),
                           sa.Column("expires_at", sa.Float, nullable=False, index=True))
        self.members = sa.Table(f"{table_prefix}kv_set", md,
                                sa.Column("key", sa.String(255), primary_key=True),
                                sa.Column("member", sa.String(255), primary_key=True),
                                sa.Column("expires_at", sa.Float, nullable=False, index=True))
        self._errors = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, sa.exc.TimeoutError)
        self._writes = 0
        # An app has no "closed" event: when the store goes, its pooled connections
        # are closed, not left to the garbage collector (Python 3.13 warns, and a
        # SQLite file stays open until then).
        weakref.finalize(self, engine.dispose)
        self._reader = self._read_path()
        with self._guard():
            md.create_all(engine)

    @classmethod
    def embedded(cls, directory: str, clock: Callable[[], float] = time.time, key_prefix: str = "") -> SQLStore:
        """The embedded default: a SQLite file in ``directory`` (created 0700)."""
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return cls.from_url(f"sqlite:///{os.path.join(directory, EMBEDDED_FILE)}", clock, key_prefix=key_prefix)

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float] = time.time, key_prefix: str = "") -> SQLStore:
        import sqlalchemy as sa

        # no pool_pre_ping: it costs a round trip on every checkout, i.e. on
        # every request; _ping_when_idle pings only a connection that sat idle
        # (the case pre-ping is for), and get() retries once on a connection
        # that turned out dead (the pool then replaces all of its old ones)
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 15, "check_same_thread": False}
        elif url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": 3}  # a down database answers 503 soon
        engine = sa.create_engine(multi_host_url(url), **kwargs)  # postgresql://h1,h2/db works too
        _ping_when_idle(engine)
        if url.startswith("sqlite"):
            @sa.event.listens_for(engine, "connect")
            def _wal(dbapi_conn: Any, _: Any) -> None:  # several processes, one file
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=15000")
                cur.close()
        return cls(engine, clock, key_prefix=key_prefix, url=url)

    def _sweep(self, conn: Any) -> None:
        self._writes += 1
        if self._writes % 200 == 0:
            now = self._clock()
            conn.execute(self.kv.delete().where(self.kv.c.expires_at <= now))
            conn.execute(self.members.delete().where(self.members.c.expires_at <= now))

    def _read_path(self) -> tuple[Any, str | None]:
        """What :meth:`get` runs on: the engine in autocommit (a lone SELECT
        needs no transaction: no ``BEGIN`` before it, no ``ROLLBACK`` after it,
        and never a commit), and the SELECT as the driver's own SQL text when
        its parameter style is known (no statement is built or compiled per
        call; ``None``: build it with SQLAlchemy Core)."""
        reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        dialect = self.engine.dialect
        table = dialect.identifier_preparer.format_table(self.kv)
        marks = {"qmark": ("?", "?"), "pyformat": ("%(key)s", "%(now)s"), "format": ("%s", "%s"),
                 "named": (":key", ":now")}.get(dialect.paramstyle)
        sql = None
        if marks is not None:
            sql = f"SELECT value FROM {table} WHERE key = {marks[0]} AND expires_at > {marks[1]}"
        if dialect.name == "sqlite" and sql is not None:
            # the pooled DBAPI connection itself (see _raw_get): no reader
            return None, sql
        return reader, sql

    def _raw_get(self, sql: str, key: str, now: float) -> str | None:
        """SQLite's read on the pooled DBAPI connection itself: ``sqlite3``
        opens no transaction for a SELECT, and a SQLAlchemy ``Connection``
        (with its isolation-level bookkeeping on every checkout) costs
        several times the read. Driver errors fail closed like every other
        store error (:meth:`_guard`)."""
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, (key, now))
                row = cur.fetchone()
            finally:
                cur.close()
        except self.engine.dialect.dbapi.Error as exc:
            raise self.sa.exc.OperationalError(sql, (key, now), exc) from exc
        finally:
            conn.close()  # back to the pool
        return str(row[0]) if row else None

    def get(self, key: str) -> str | None:
        """The request path's one read (see :meth:`_read_path`): one round
        trip. A pooled connection found dead (the database restarted) is
        retried once on a new one -- a read can be repeated safely."""
        key = self.prefix + key
        reader, sql = self._reader
        now = self._clock()
        with self._guard():
            if reader is None:
                assert sql is not None
                return self._raw_get(sql, key, now)

            def read(conn: Any) -> str | None:
                if sql is None:
                    row = conn.execute(self.sa.select(self.kv.c.value).where(
                        self.kv.c.key == key, self.kv.c.expires_at > now)).first()
                elif self.engine.dialect.paramstyle in ("qmark", "format"):
                    row = conn.exec_driver_sql(sql, (key, now)).first()
                else:
                    row = conn.exec_driver_sql(sql, {"key": key, "now": now}).first()
                return row[0] if row else None

            return self._on_reader(reader, read)

    def _on_reader(self, reader: Any, read: Callable[[Any], _T]) -> _T:
        """``read(connection)`` on the autocommit reader: a pooled connection
        found dead (the database restarted, a failover) is retried once on a
        new one -- a read can be repeated safely. Call inside :meth:`_guard`."""
        for attempt in (1, 2):
            try:
                with reader.connect() as conn:
                    return read(conn)
            except self.sa.exc.DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """One ``SELECT ... WHERE key IN (...)`` (one round trip, on :meth:`get`'s reader)."""
        if not keys:
            return []
        names = [self.prefix + key for key in keys]
        now = self._clock()
        query = self.sa.select(self.kv.c.key, self.kv.c.value).where(self.kv.c.key.in_(names),
                                                                     self.kv.c.expires_at > now)
        # the reader of get(): autocommit (no BEGIN/ROLLBACK round trips), a dead connection retried once
        with self._guard():
            rows = self._on_reader(self._reader[0] or self.engine, lambda conn: conn.execute(query).all())
        found = {str(k): str(v) for k, v in rows}
        return [found.get(name) for name in names]

    def set(self, key: str, value: str, ttl: float) -> None:
        key = self.prefix + key
        with self._guard(), self.engine.begin() as conn:
            conn.execute(self.kv.delete().where(self.kv.c.key == key))
            conn.execute(self.kv.insert().values(key=key, value=value, expires_at=self._clock() + ttl))
            self._sweep(conn)

    def add(self, key: str, value: str, ttl: float) -> bool:
        key = self.prefix + key
        sa = self.sa
        now = self._clock()
        with self._guard():
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.kv.delete().where(self.kv.c.key == key, self.kv.c.expires_at <= now))
                    conn.execute(self.kv.insert().values(key=key, value=value, expires_at=now + ttl))
                    self._sweep(conn)
                return True
            except sa.exc.IntegrityError:
                return False

    def pop(self, key: str) -> str | None:
        key = self.prefix + key
        with self._guard(), self.engine.begin() as conn:
            # DELETE ... RETURNING makes read-and-delete one atomic statement
            row = conn.execute(self.kv.delete().where(self.kv.c.key == key).returning(
                self.kv.c.value, self.kv.c.expires_at)).first()
            if row is None or row[1] <= self._clock():
                return None
            return str(row[0])

    def delete(self, *keys: str) -> None:
        keys = tuple(self.prefix + k for k in keys)
        if keys:
            with self._guard(), self.engine.begin() as conn:
                conn.execute(self.kv.delete().where(self.kv.c.key.in_(keys)))
                conn.execute(self.members.delete().where(self.members.c.key.in_(keys)))

    def set_add(self, key: str, member: str, ttl: float) -> None:
        key = self.prefix + key
        exp = self._clock() + ttl
        with self._guard(), self.engine.begin() as conn:
            conn.execute(self.members.delete().where(self.members.c.key == key, self.members.c.member == member))
            conn.execute(self.members.insert().values(key=key, member=member, expires_at=exp))
            conn.execute(self.members.update().where(self.members.c.key == key).values(expires_at=exp))

    def set_members(self, key: str) -> builtins.set[str]:
        key = self.prefix + key
        sa = self.sa
        with self._guard(), self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.members.c.member).where(
                self.members.c.key == key, self.members.c.expires_at > self._clock()))
            return {r[0] for r in rows}

    def set_remove(self, key: str, *members: str) -> None:
        key = self.prefix + key
        if members:
            with self._guard(), self.engine.begin() as conn:
                conn.execute(self.members.delete().where(self.members.c.key == key,
                                                         self.members.c.member.in_(members)))

    def update(self, key: str, decide: Callable[[str | None], Change]) -> bool:
        """One transaction that holds the row's write lock (PostgreSQL: the
        row lock; SQLite: the database write lock) from the read to the
        commit: a no-op ``UPDATE`` takes it before the ``SELECT``, so a writer
        in another worker waits for us and can never land in between."""
        key = self.prefix + key
        sa, kv = self.sa, self.kv
        lock = kv.update().where(kv.c.key == key).values(expires_at=kv.c.expires_at)
        with self._guard():
            for _ in range(3):  # a concurrent first write wins the INSERT: decide again on top of it
                try:
                    with self.engine.begin() as conn:
                        locked = conn.execute(lock).rowcount
                        now = self._clock()
                        row = conn.execute(sa.select(kv.c.value, kv.c.expires_at).where(kv.c.key == key)).first()
                        change = decide(row[0] if row is not None and row[1] > now else None)
                        if change is None:
                            return False
                        value, ttl = change
                        if locked:
                            conn.execute(kv.update().where(kv.c.key == key).values(value=value, expires_at=now + ttl))
                        else:
                            conn.execute(kv.insert().values(key=key, value=value, expires_at=now + ttl))
                        self._sweep(conn)
                        return True
                except sa.exc.IntegrityError:
                    continue
        raise StoreUnavailable()

    def write_many(self, batch: Batch) -> None:
        """``batch`` in one transaction: other connections see all of its
        writes or none. The statements are those of :meth:`set`,
        :meth:`delete`, :meth:`set_add` and :meth:`set_remove`."""
        if not batch.writes:
            return
        kv, members = self.kv, self.members
        with self._guard(), self.engine.begin() as conn:
            now = self._clock()
            for w in batch.writes:
                key = self.prefix + w.key
                if w.op == "set":
                    conn.execute(kv.delete().where(kv.c.key == key))
                    conn.execute(kv.insert().values(key=key, value=w.values[0], expires_at=now + w.ttl))
                elif w.op == "delete":
                    conn.execute(kv.delete().where(kv.c.key == key))
                    conn.execute(members.delete().where(members.c.key == key))
                elif w.op == "set_add":
                    conn.execute(members.delete().where(members.c.key == key, members.c.member.in_(w.values)))
                    conn.execute(members.insert(), [{"key": key, "member": m, "expires_at": now + w.ttl}
                                                    for m in w.values])
                    conn.execute(members.update().where(members.c.key == key).values(expires_at=now + w.ttl))
                elif w.op == "set_remove":
                    conn.execute(members.delete().where(members.c.key == key, members.c.member.in_(w.values)))
                else:  # pragma: no cover - Batch makes no other
                    raise ValueError(f"unknown write {w.op!r}")
            self._sweep(conn)

    def keys(self, prefix: str) -> list[str]:
        sa = self.sa
        n = len(self.prefix)
        prefix = self.prefix + prefix
        now = self._clock()
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._guard(), self.engine.connect() as conn:
            a = [r[0] for r in conn.execute(sa.select(self.kv.c.key).where(
                self.kv.c.key.like(like, escape="\\"), self.kv.c.expires_at > now))]
            b = [r[0] for r in conn.execute(sa.select(self.members.c.key).distinct().where(
                self.members.c.key.like(like, escape="\\"), self.members.c.expires_at > now))]
        return sorted({k[n:] for k in set(a) | set(b)})

    def incr(self, key: str, ttl: float) -> int:
        key = self.prefix + key
        sa = self.sa
        now = self._clock()
        bumped = self.kv.update().where(self.kv.c.key == key, self.kv.c.expires_at > now).values(
            value=sa.cast(sa.cast(self.kv.c.value, sa.Integer) + 1, sa.Text))
        with self._guard():
            for _ in range(3):  # a concurrent first increment wins the INSERT: count on top of it
                try:
                    with self.engine.begin() as conn:
                        # the UPDATE takes the row (PostgreSQL) or database (SQLite) write lock first
                        if conn.execute(bumped).rowcount:
                            row = conn.execute(sa.select(self.kv.c.value).where(self.kv.c.key == key)).first()
                            return int(row[0]) if row else 1
                        conn.execute(self.kv.delete().where(self.kv.c.key == key, self.kv.c.expires_at <= now))
                        conn.execute(self.kv.insert().values(key=key, value="1", expires_at=now + ttl))
                        self._sweep(conn)
                        return 1
                except sa.exc.IntegrityError:
                    continue
        raise StoreUnavailable()

    def close(self) -> None:
        self.engine.dispose()
