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
from collections.abc import Callable
from typing import Any

from ..exceptions import StoreUnavailable
from .base import Change, SharedStore

#: the embedded default's file, in the instance folder (or ``session.store.path``)
EMBEDDED_FILE = "ccsso-state.sqlite"


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

        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 15, "check_same_thread": False}
        elif url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": 3}  # a down database answers 503 soon
        engine = sa.create_engine(url, **kwargs)
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

    def get(self, key: str) -> str | None:
        key = self.prefix + key
        sa = self.sa
        with self._guard(), self.engine.connect() as conn:
            row = conn.execute(sa.select(self.kv.c.value).where(self.kv.c.key == key,
                                                               self.kv.c.expires_at > self._clock())).first()
            return row[0] if row else None

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
