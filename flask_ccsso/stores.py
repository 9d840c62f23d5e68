"""Shared state that every worker and host must see the same way.

Pending sign-ins (OIDC state/nonce/PKCE verifier, SAML outstanding request
ids), replay caches (seen assertion ids, used logout tokens), the per-user
index of sessions (for revocation) and single-flight locks live here.

Three backends share one small interface:

* :class:`RedisStore` -- many workers, many hosts.
* :class:`SQLStore` -- SQLAlchemy Core on PostgreSQL or SQLite; the embedded
  default is a SQLite file in the instance folder (one machine, any number
  of processes).
* :class:`MemoryStore` -- one process; for tests.

Atomicity is what matters: :meth:`SharedStore.add` (set-if-absent) backs the
replay caches and :meth:`SharedStore.pop` (read-and-delete) consumes a
pending sign-in exactly once, even when two workers race.

Backend errors are mapped to :class:`~flask_ccsso.exceptions.StoreUnavailable`
here, at this one boundary, so the request path fails closed with a 503.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from .exceptions import StoreUnavailable


class SharedStore(ABC):
    """A tiny key-value store with TTLs, atomic add/pop and sets."""

    @abstractmethod
    def get(self, key: str) -> str | None: ...

    @abstractmethod
    def set(self, key: str, value: str, ttl: float) -> None: ...

    @abstractmethod
    def add(self, key: str, value: str, ttl: float) -> bool:
        """Set ``key`` only if absent. ``True`` if this call created it."""

    @abstractmethod
    def pop(self, key: str) -> str | None:
        """Return and delete ``key`` atomically (``None`` if absent)."""

    @abstractmethod
    def delete(self, *keys: str) -> None: ...

    @abstractmethod
    def set_add(self, key: str, member: str, ttl: float) -> None:
        """Add ``member`` to the set at ``key``; the set lives ``ttl`` more seconds."""

    @abstractmethod
    def set_members(self, key: str) -> builtins.set[str]: ...

    @abstractmethod
    def set_remove(self, key: str, *members: str) -> None: ...

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Keys (and set keys) starting with ``prefix`` (admin tools only, not the request path)."""

    def incr(self, key: str, ttl: float) -> int:
        """Add one to the counter at ``key`` and return the new count.

        The first increment starts the counter's life of ``ttl`` seconds;
        later ones do not extend it (a fixed window, so a steady trickle
        cannot keep a counter alive forever). Backends override this with an
        atomic version; this fallback is only as atomic as get-then-set.
        """
        value = self.get(key)
        count = (int(value) if value and value.isdigit() else 0) + 1
        self.set(key, str(count), ttl)
        return count

    #: the backend's connection errors, mapped to StoreUnavailable by _guard
    _errors: tuple[type[BaseException], ...] = ()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """The one boundary where backend errors become a 503 (fail closed)."""
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable() from exc

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` if the backend cannot be reached."""
        self.get("__ping__")

    # -- locks ---------------------------------------------------------------
    def acquire_lock(self, name: str, ttl: float) -> str | None:
        """Take lock ``name`` for ``ttl`` seconds; the token releases it."""
        token = secrets.token_hex(16)
        return token if self.add("lock:" + name, token, ttl) else None

    def release_lock(self, name: str, token: str) -> None:
        if self.get("lock:" + name) == token:
            self.delete("lock:" + name)

    def extend_lock(self, name: str, token: str, ttl: float) -> bool:
        if self.get("lock:" + name) == token:
            self.set("lock:" + name, token, ttl)
            return True
        return False

    @contextlib.contextmanager
    def lock(self, name: str, ttl: float, wait: float = 0.0, poll: float = 0.05) -> Iterator[bool]:
        """Context manager yielding whether the lock was taken within ``wait``."""
        deadline = time.monotonic() + wait
        token = self.acquire_lock(name, ttl)
        while token is None and time.monotonic() < deadline:
            time.sleep(poll)
            token = self.acquire_lock(name, ttl)
        try:
            yield token is not None
        finally:
            if token is not None:
                self.release_lock(name, token)

    def close(self) -> None:  # pragma: no cover - optional
        pass


# --------------------------------------------------------------------------- memory

class MemoryStore(SharedStore):
    """In-process store for tests and single-process tools."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._data: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _live(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            self._data.pop(key, None)
            return None
        return item[0]

    def get(self, key: str) -> str | None:
        with self._lock:
            v = self._live(key)
            return v if isinstance(v, str) else None

    def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._data[key] = (value, self._clock() + ttl)

    def add(self, key: str, value: str, ttl: float) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._data[key] = (value, self._clock() + ttl)
            return True

    def pop(self, key: str) -> str | None:
        with self._lock:
            v = self._live(key)
            self._data.pop(key, None)
            return v if isinstance(v, str) else None

    def delete(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._data.pop(k, None)

    def set_add(self, key: str, member: str, ttl: float) -> None:
        with self._lock:
            s = self._live(key)
            s = set(s) if isinstance(s, set) else set()
            s.add(member)
            self._data[key] = (s, self._clock() + ttl)

    def set_members(self, key: str) -> builtins.set[str]:
        with self._lock:
            s = self._live(key)
            return set(s) if isinstance(s, set) else set()

    def set_remove(self, key: str, *members: str) -> None:
        with self._lock:
            s = self._live(key)
            if isinstance(s, set):
                s.difference_update(members)

    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            return [k for k in list(self._data) if k.startswith(prefix) and self._live(k) is not None]

    def incr(self, key: str, ttl: float) -> int:
        with self._lock:
            v = self._live(key)
            if isinstance(v, str) and v.isdigit():
                count = int(v) + 1
                self._data[key] = (str(count), self._data[key][1])
                return count
            self._data[key] = ("1", self._clock() + ttl)
            return 1


# --------------------------------------------------------------------------- redis

class RedisStore(SharedStore):
    """Redis backend: what many workers and hosts share."""

    def __init__(self, client: Any, prefix: str = "ccsso:") -> None:
        import redis

        self.client = client
        self.prefix = prefix
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError, OSError)
        self._release = client.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end")
        self._extend = client.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
        # INCR, and PEXPIRE only when this call created the key: one atomic step
        self._incr = client.register_script(
            "local n = redis.call('incr', KEYS[1]) "
            "if n == 1 or redis.call('pttl', KEYS[1]) < 0 then redis.call('pexpire', KEYS[1], ARGV[1]) end "
            "return n")

    @classmethod
    def from_url(cls, url: str, prefix: str = "ccsso:") -> RedisStore:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # fail fast: a down store must answer 503 now, not after a retry storm
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30,
                                      retry=Retry(NoBackoff(), 1))
        return cls(client, prefix)

    @staticmethod
    def _ms(ttl: float) -> int:
        return max(1, int(ttl * 1000))

    def _s(self, v: Any) -> str | None:
        return v.decode() if isinstance(v, bytes) else v

    def get(self, key: str) -> str | None:
        with self._guard():
            return self._s(self.client.get(self.prefix + key))

    def set(self, key: str, value: str, ttl: float) -> None:
        with self._guard():
            self.client.set(self.prefix + key, value, px=self._ms(ttl))

    def add(self, key: str, value: str, ttl: float) -> bool:
        with self._guard():
            return bool(self.client.set(self.prefix + key, value, px=self._ms(ttl), nx=True))

    def pop(self, key: str) -> str | None:
        with self._guard():
            return self._s(self.client.getdel(self.prefix + key))

    def delete(self, *keys: str) -> None:
        if keys:
            with self._guard():
                self.client.delete(*(self.prefix + k for k in keys))

    def set_add(self, key: str, member: str, ttl: float) -> None:
        with self._guard():
            pipe = self.client.pipeline()
            pipe.sadd(self.prefix + key, member)
            pipe.pexpire(self.prefix + key, self._ms(ttl))
            pipe.execute()

    def set_members(self, key: str) -> builtins.set[str]:
        with self._guard():
            return {self._s(m) for m in self.client.smembers(self.prefix + key)}  # type: ignore[misc]

    def set_remove(self, key: str, *members: str) -> None:
        if members:
            with self._guard():
                self.client.srem(self.prefix + key, *members)

    def keys(self, prefix: str) -> list[str]:
        with self._guard():
            n = len(self.prefix)
            return [self._s(k)[n:] for k in self.client.scan_iter(match=self.prefix + prefix + "*", count=500)]  # type: ignore[index]

    def incr(self, key: str, ttl: float) -> int:
        with self._guard():
            return int(self._incr(keys=[self.prefix + key], args=[self._ms(ttl)]))

    def release_lock(self, name: str, token: str) -> None:
        with self._guard():
            self._release(keys=[self.prefix + "lock:" + name], args=[token])

    def extend_lock(self, name: str, token: str, ttl: float) -> bool:
        with self._guard():
            return bool(self._extend(keys=[self.prefix + "lock:" + name], args=[token, self._ms(ttl)]))

    def ping(self) -> None:
        with self._guard():
            self.client.ping()

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- SQL

class SQLStore(SharedStore):
    """SQLAlchemy Core backend (PostgreSQL, SQLite). Expired rows are ignored
    on read and swept now and then on write, so no cron job is needed."""

    def __init__(self, engine: Any, clock: Callable[[], float] = time.time, table_prefix: str = "ccsso_",
                 key_prefix: str = "") -> None:
        import sqlalchemy as sa

        self.sa = sa
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
        with self._guard():
            md.create_all(engine)

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float] = time.time, key_prefix: str = "") -> SQLStore:
        import sqlalchemy as sa

        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 15, "check_same_thread": False}
        engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @sa.event.listens_for(engine, "connect")
            def _wal(dbapi_conn: Any, _: Any) -> None:  # several processes, one file
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=15000")
                cur.close()
        return cls(engine, clock, key_prefix=key_prefix)

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
            return row[0]

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
