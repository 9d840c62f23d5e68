"""The one store interface every worker and host shares.

Session records, pending sign-ins (OIDC state/nonce/PKCE verifier, SAML
outstanding request ids), replay caches (seen assertion ids, used logout
tokens), the per-user index of sessions (for revocation) and single-flight
locks all live behind :class:`SharedStore`; one module per backend:

* :class:`~flask_ccsso.stores.redis.RedisStore` -- many workers, many hosts.
* :class:`~flask_ccsso.stores.sql.SQLStore` -- SQLAlchemy Core on PostgreSQL
  or SQLite; the embedded default is a SQLite file in the instance folder
  (one machine, any number of processes).
* :class:`~flask_ccsso.stores.memory.MemoryStore` -- one process; for tests.

Atomicity is what matters: :meth:`SharedStore.add` (set-if-absent) backs the
replay caches, :meth:`SharedStore.pop` (read-and-delete) consumes a pending
sign-in exactly once, :meth:`SharedStore.update` (read-decide-write as
one step) is what a session save, a revocation tombstone and a refresh's
write-back use, so no write lands between another's read and write, and
:meth:`SharedStore.write_many` lands a sign-in's record and index entries
together (one round trip), so no revocation sees one without the other.

Backend errors are mapped to :class:`~flask_ccsso.exceptions.StoreUnavailable`
here, at this one boundary, so the request path fails closed with a 503.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

#: what an :meth:`SharedStore.update` decision returns: the new value and its
#: time to live in seconds, or ``None`` to leave the key as it is
Change = tuple[str, float] | None

from .._validate import mask_url
from ..exceptions import StoreUnavailable
from .breaker import Breaker, BreakerOpen


@dataclass(frozen=True)
class Write:
    """One write of a :class:`Batch`: ``op`` is the :class:`SharedStore`
    method it stands for (``set``, ``delete``, ``set_add``, ``set_remove``),
    ``values`` its value / members, ``ttl`` its lifetime (``set``, ``set_add``)."""

    op: str
    key: str
    values: tuple[str, ...] = ()
    ttl: float = 0.0


class Batch:
    """Writes for :meth:`SharedStore.write_many`, in order; each method
    returns the batch, so ``Batch().delete(old).set(key, value, ttl)`` reads
    as what it does."""

    def __init__(self) -> None:
        self.writes: list[Write] = []

    def set(self, key: str, value: str, ttl: float) -> Batch:
        self.writes.append(Write("set", key, (value,), ttl))
        return self

    def delete(self, *keys: str) -> Batch:
        self.writes.extend(Write("delete", k) for k in keys)
        return self

    def set_add(self, key: str, member: str, ttl: float) -> Batch:
        self.writes.append(Write("set_add", key, (member,), ttl))
        return self

    def set_remove(self, key: str, *members: str) -> Batch:
        if members:
            self.writes.append(Write("set_remove", key, members))
        return self

    def __len__(self) -> int:
        return len(self.writes)


class SharedStore(ABC):
    """A tiny key-value store with TTLs, atomic add/pop and sets."""

    @abstractmethod
    def get(self, key: str) -> str | None: ...

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values of ``keys``, in order (``None`` for an absent one), in
        one round trip where the backend can: Redis ``MGET`` (split by slot
        on a cluster), one SQL ``SELECT ... IN``. For a check that must read
        several keys on the request path (the deprovision markers of a bearer
        token) without a round trip per key. This fallback reads them one by one."""
        return [self.get(key) for key in keys]

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
    def update(self, key: str, decide: Callable[[str | None], Change]) -> bool:
        """Read ``key``, let ``decide`` look at its value (``None`` if absent)
        and write what it returns -- as one atomic step: no other write to
        ``key`` lands between the read and the write. ``decide`` may be called
        more than once (a backend retries when it lost a race) and must not
        use the store itself. ``True`` if a value was written."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Keys (and set keys) starting with ``prefix`` (admin tools only, not the request path)."""

    def write_many(self, batch: Batch) -> None:
        """Apply ``batch``'s writes, in order, as one step: Redis sends them
        in one ``MULTI``/``EXEC`` round trip, SQL in one transaction, the
        memory store under its lock -- another client sees all of them or
        none (a sign-in's session record and its index entries land
        together, so a revocation never finds one without the other).

        This fallback, for a backend that does not override it, applies
        them one by one (correct order, not atomic)."""
        calls: dict[str, Callable[[Write], None]] = {
            "set": lambda w: self.set(w.key, w.values[0], w.ttl),
            "delete": lambda w: self.delete(w.key),
            "set_add": lambda w: self.set_add(w.key, w.values[0], w.ttl),
            "set_remove": lambda w: self.set_remove(w.key, *w.values),
        }
        for write in batch.writes:
            calls[write.op](write)

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
    #: where the store lives (a backend's ``from_url`` sets it): named, password
    #: masked, in the operator's messages -- never on a page
    url: str | None = None

    #: the backend's errors that mean "no answer in time" (what a breaker counts)
    _timeouts: tuple[type[BaseException], ...] = ()
    #: a circuit breaker (:class:`~.breaker.Breaker`) the backend opts into:
    #: while it is open, calls fail at once instead of waiting on the backend
    breaker: Breaker | None = None

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """The one boundary where backend errors become a 503 (fail closed).
        The error carries the store's URL, masked (``store_url``), for the log
        and the CLI; the page shows only the generic description.

        With a :attr:`breaker`, every call is counted here: a backend that did
        not answer in time (one of :attr:`_timeouts`) is a failure, anything
        else a success -- a reply, an error reply, and a connection refused
        at once too: the breaker cuts waits short, and a refusal costs none
        (so a restarted server is used again on the very next call). An open
        breaker fails the call before the backend is touched."""
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise self._unavailable(BreakerOpen(breaker))
        try:
            yield
        except self._errors as exc:
            if breaker is not None:
                breaker.failure() if isinstance(exc, self._timeouts) else breaker.success()
            raise self._unavailable(exc) from exc
        except BaseException:
            if breaker is not None:
                breaker.success()
            raise
        if breaker is not None:
            breaker.success()

    def _unavailable(self, cause: BaseException) -> StoreUnavailable:
        """The 503 for a failed call (the cause is chained for the log)."""
        retry = cause.retry_after if isinstance(cause, BreakerOpen) else None
        err = StoreUnavailable(store_url=mask_url(self.url) if self.url else None, retry_after=retry)
        err.__cause__ = cause
        return err

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
