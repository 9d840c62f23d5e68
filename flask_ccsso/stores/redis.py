"""The Redis backend: what many workers and hosts share."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from ..exceptions import StoreUnavailable
from .base import Change, SharedStore

#: optimistic transactions tried before a busy key answers 503
WATCH_ATTEMPTS = 8


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
        store = cls(client, prefix)
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
            return {m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(self.prefix + key)}

    def set_remove(self, key: str, *members: str) -> None:
        if members:
            with self._guard():
                self.client.srem(self.prefix + key, *members)

    def update(self, key: str, decide: Callable[[str | None], Change]) -> bool:
        """An optimistic transaction: ``WATCH`` the key, read, decide, and
        ``MULTI``/``SET``/``EXEC`` -- which fails (and is retried) when
        another client wrote the key in between."""
        from redis.exceptions import WatchError

        name = self.prefix + key
        with self._guard():
            for _ in range(WATCH_ATTEMPTS):
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
        self.client.close()
