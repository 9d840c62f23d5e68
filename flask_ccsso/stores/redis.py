"""The Redis backend: what many workers and hosts share.

One server (``redis://``, ``rediss://`` for TLS, ``unix://``), a
Sentinel-managed master (``redis+sentinel://``) or a Redis Cluster
(``redis+cluster://``), all through redis-py (Valkey speaks the same
protocol). Every command the store sends names a single key, except
``DEL`` of several keys (redis-py's cluster client splits it by slot) and
:meth:`RedisStore.write_many` (a plain pipeline on a cluster), so nothing
here needs the keys of one session or user to share a hash slot.

A stalled server costs a request at most ``socketTimeout`` (1 s by default,
no retry on a timeout), and the circuit breaker (:mod:`.breaker`) makes the
calls after ``breakerFailures`` consecutive timeouts answer 503 at once.
"""

from __future__ import annotations

import builtins
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from .._validate import mask_url
from ..config import split_redis_url
from ..exceptions import StoreUnavailable
from .base import Batch, Change, SharedStore
from .breaker import Breaker, BreakerOpen

#: optimistic transactions tried before a busy key answers 503
WATCH_ATTEMPTS = 8

#: compare-and-set for :meth:`RedisStore.update` on a cluster: write ARGV[3] (for ARGV[4]
#: ms) only if the key still holds ARGV[2] (ARGV[1] == "1") or is still
#: absent (ARGV[1] == "0"). One key, so it runs as it is on a cluster.
_CAS = ("local v = redis.call('get', KEYS[1]) "
        "if (ARGV[1] == '1' and v == ARGV[2]) or (ARGV[1] == '0' and not v) then "
        "redis.call('set', KEYS[1], ARGV[3], 'PX', ARGV[4]) return 1 end "
        "return 0")

#: stores whose own idle connections a forked child must not reuse
_LEAN_STORES: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    # the parent's sockets are the parent's: drop them (without a shutdown,
    # which would cut the parent's connections too); the child opens its own
    for store in list(_LEAN_STORES):
        store._idle = []


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget_connections_after_fork)


def connect(url: str, *, connect_timeout: float = 1.0, socket_timeout: float = 1.0,
            ssl_ca_certs: str | None = None, ssl_certfile: str | None = None,
            ssl_keyfile: str | None = None) -> Any:
    """A redis-py client for a store URL (see :func:`~flask_ccsso.config.split_redis_url`).

    Fail fast: a stalled server costs ``socket_timeout`` once, never twice
    (a timeout is not retried: the server is there but not answering, and a
    retry would only double the wait); a dropped connection is retried once
    on a new one (a server restart, an idle connection closed by the server).
    Options in the URL's query (``?socket_timeout=0.5``) win over these.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    mode, nodes, service, server_url = split_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout, "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    }
    tls = {"ssl_ca_certs": ssl_ca_certs, "ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    options.update((k, v) for k, v in tls.items() if v)
    if mode == "server":
        return redis.Redis.from_url(url, **options)

    from redis.connection import parse_url

    parse: Callable[[str], dict[str, Any]] = parse_url  # redis leaves these unannotated
    options.update(parse(server_url))  # the URL's credentials, db and options win, as in from_url
    options.pop("host", None)
    options.pop("port", None)
    if isinstance(options.pop("connection_class", None), type):  # rediss+...: TLS to every node
        options["ssl"] = True
    if mode == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        node: Any = ClusterNode
        options.pop("db", None)
        return RedisCluster(startup_nodes=[node(h, p) for h, p in nodes], **options)
    from redis import sentinel

    watchers: Any = sentinel.Sentinel

    # the sentinels are asked over the same transport (timeouts, TLS), without the data nodes' password
    sentinel_options = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl"))}
    return watchers(nodes, sentinel_kwargs=sentinel_options, **options).master_for(service)


def _lean_capable(client: Any) -> bool:
    """Is ``client`` one whose GET :meth:`RedisStore.get` may send itself?

    Only a plain :class:`redis.Redis` on a plain connection pool speaking
    RESP2 without a client-side cache: Sentinel and Cluster clients pick
    their node per command, and a subclass may hook ``execute_command``
    (tracing, counting) -- those keep redis-py's own path."""
    import redis

    pool = getattr(client, "connection_pool", None)
    return (type(client) is redis.Redis and type(pool) is redis.ConnectionPool
            and getattr(client, "connection", None) is None and getattr(pool, "cache", None) is None
            and str(pool.connection_kwargs.get("protocol") or 2) == "2")


class RedisStore(SharedStore):
    """Redis backend: what many workers and hosts share.

    The request path's one command, the session read (:meth:`get`), skips
    redis-py's per-command machinery when the client allows it
    (:func:`_lean_capable`): it keeps a few connections of its own and sends
    ``GET`` / reads the reply on one, with the same socket timeouts, the same
    one retry on a dropped connection and the breaker's accounting. A
    connection goes back to the idle list only after its reply was read in
    full, so none ever holds a stale reply (what redis-py's ``can_read`` poll
    on every checkout guards against).
    """

    def __init__(self, client: Any, prefix: str = "ccsso:", *, breaker: Breaker | None = None) -> None:
        import redis
        from redis.cluster import RedisCluster

        self.client = client
        self.prefix = prefix
        self.breaker = breaker
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError, OSError)
        self._timeouts = (redis.exceptions.TimeoutError, TimeoutError)
        self._reply_error = redis.exceptions.ResponseError
        self._retry_on = redis.exceptions.ConnectionError
        self._release = client.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end")
        self._extend = client.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
        # INCR, and PEXPIRE only when this call created the key: one atomic step
        self._incr = client.register_script(
            "local n = redis.call('incr', KEYS[1]) "
            "if n == 1 or redis.call('pttl', KEYS[1]) < 0 then redis.call('pexpire', KEYS[1], ARGV[1]) end "
            "return n")
        self._cas = client.register_script(_CAS)
        self._cluster = isinstance(client, RedisCluster)
        #: the client whose GETs :meth:`get` sends itself (None: redis-py's path)
        self._lean_client = client if _lean_capable(client) else None
        self._idle: list[Any] = []
        if self._lean_client is not None:
            _LEAN_STORES.add(self)

    @classmethod
    def from_url(cls, url: str, prefix: str = "ccsso:", *, connect_timeout: float = 1.0, socket_timeout: float = 1.0,
                 breaker_failures: int = 3, breaker_cooldown: float = 5.0, ssl_ca_certs: str | None = None,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> RedisStore:
        """The store at ``url`` (``redis://``, ``rediss://``, ``unix://``,
        ``redis[s]+sentinel://``, ``redis[s]+cluster://``); see :func:`connect`.
        ``breaker_failures=0`` turns the circuit breaker off."""
        client = connect(url, connect_timeout=connect_timeout, socket_timeout=socket_timeout,
                         ssl_ca_certs=ssl_ca_certs, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        breaker = (Breaker(breaker_failures, breaker_cooldown, name=f"the Redis store {mask_url(url)}")
                   if breaker_failures > 0 else None)
        store = cls(client, prefix, breaker=breaker)
        store.url = url
        return store

    @staticmethod
    def _ms(ttl: float) -> int:
        return max(1, int(ttl * 1000))

    @staticmethod
    def _s(v: Any) -> str | None:
        # bytes that are not UTF-8 (written by someone else) decode to
        # something no reader accepts, never to an exception on the request path
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else v

    def get(self, key: str) -> str | None:
        if self.client is not self._lean_client:
            with self._guard():
                return self._s(self.client.get(self.prefix + key))
        return self._s(self._lean_get(self.prefix + key))

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """``MGET`` (one round trip); on a cluster redis-py's ``mget_nonatomic``
        sends one ``MGET`` per slot, in one pipeline."""
        if not keys:
            return []
        names = [self.prefix + key for key in keys]
        with self._guard():
            values = self.client.mget_nonatomic(names) if self._cluster else self.client.mget(names)
        return [self._s(v) for v in values]

    def _lean_get(self, name: str) -> Any:
        """``GET name`` on a connection of our own; the accounting of
        :meth:`_guard`, inline (this is the request path's one command)."""
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise self._unavailable(BreakerOpen(breaker))
        idle = self._idle
        for attempt in (0, 1):
            try:
                conn = idle.pop()
                reused = True
            except IndexError:
                pool = self._lean_client.connection_pool  # type: ignore[union-attr]
                conn = pool.connection_class(**pool.connection_kwargs)
                reused = False
            try:
                conn.send_command("GET", name)
                value = conn.read_response()
            except self._reply_error:  # the reply was read in full: the connection is fine
                idle.append(conn)
                if breaker is not None:
                    breaker.success()
                raise
            except self._errors as exc:
                conn.disconnect()
                if reused and attempt == 0 and isinstance(exc, self._retry_on):
                    continue  # a dropped idle connection: once more, on a new one
                if breaker is not None:
                    breaker.failure() if isinstance(exc, self._timeouts) else breaker.success()
                raise self._unavailable(exc) from exc
            except BaseException:
                conn.disconnect()  # a reply may be on its way: never reuse this connection
                if breaker is not None:
                    # as in _guard: only a timeout is a failure. Accounted either way, or a
                    # half-open probe cut short here (a protocol error, a worker timeout)
                    # would stay "under way" and the breaker refuse every call for good
                    breaker.success()
                raise
            idle.append(conn)
            if breaker is not None and (breaker.failures or breaker.opened_at is not None):
                breaker.success()
            return value
        raise AssertionError("unreachable")  # pragma: no cover

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
            return {m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(self.prefix + key)}

    def set_remove(self, key: str, *members: str) -> None:
        if members:
            with self._guard():
                self.client.srem(self.prefix + key, *members)

    def update(self, key: str, decide: Callable[[str | None], Change]) -> bool:
        """An optimistic transaction: ``WATCH`` the key, read, decide, and
        ``MULTI``/``SET``/``EXEC`` -- which fails (and is retried) when
        another client wrote the key in between. On a cluster (where redis-py
        before 6 has no transactions) the write is a compare-and-set script
        instead, with the same effect: refused, and retried, when the key
        changed since the read."""
        from redis.exceptions import WatchError

        name = self.prefix + key
        with self._guard():
            for _ in range(WATCH_ATTEMPTS):
                if self._cluster:
                    raw = self.client.get(name)
                    change = decide(self._s(raw))
                    if change is None:
                        return False
                    seen = ["0", ""] if raw is None else ["1", raw]
                    if self._cas(keys=[name], args=[*seen, change[0], self._ms(change[1])]):
                        return True
                    continue
                with self.client.pipeline() as pipe:
                    try:
                        pipe.watch(name)
                        change = decide(self._s(pipe.get(name)))
                        if change is None:
                            return False
                        pipe.multi()
                        pipe.set(name, change[0], px=self._ms(change[1]))
                        pipe.execute()
                        return True
                    except WatchError:
                        continue
        raise StoreUnavailable("The session store is too busy right now. Try again in a moment.")

    def write_many(self, batch: Batch) -> None:
        """``batch`` in one round trip: a ``MULTI``/``EXEC`` pipeline, so other
        clients see all of its writes or none. (On Redis Cluster the keys
        live in different slots, which one transaction cannot span: there it
        is a plain pipeline, one round trip per node, not atomic.)"""
        from redis.cluster import RedisCluster

        if not batch.writes:
            return
        p = self.prefix
        with self._guard(), self.client.pipeline(transaction=not isinstance(self.client, RedisCluster)) as pipe:
            for w in batch.writes:
                if w.op == "set":
                    pipe.set(p + w.key, w.values[0], px=self._ms(w.ttl))
                elif w.op == "delete":
                    pipe.delete(p + w.key)
                elif w.op == "set_add":
                    pipe.sadd(p + w.key, *w.values)
                    pipe.pexpire(p + w.key, self._ms(w.ttl))
                elif w.op == "set_remove":
                    pipe.srem(p + w.key, *w.values)
                else:  # pragma: no cover - Batch makes no other
                    raise ValueError(f"unknown write {w.op!r}")
            pipe.execute()

    def keys(self, prefix: str) -> list[str]:
        with self._guard():
            n = len(self.prefix)
            return [(k.decode() if isinstance(k, bytes) else str(k))[n:]
                    for k in self.client.scan_iter(match=self.prefix + prefix + "*", count=500)]

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
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()
        self.client.close()
