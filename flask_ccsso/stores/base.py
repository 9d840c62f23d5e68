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
sign-in exactly once, and :meth:`SharedStore.update` (read-decide-write as
one step) is what a session save, a revocation tombstone and a refresh's
write-back use, so no write lands between another's read and write.

Backend errors are mapped to :class:`~flask_ccsso.exceptions.StoreUnavailable`
here, at this one boundary, so the request path fails closed with a 503.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

#: what an :meth:`SharedStore.update` decision returns: the new value and its
#: time to live in seconds, or ``None`` to leave the key as it is
Change = tuple[str, float] | None

from .._validate import mask_url
from ..exceptions import StoreUnavailable


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
    def update(self, key: str, decide: Callable[[str | None], Change]) -> bool:
        """Read ``key``, let ``decide`` look at its value (``None`` if absent)
        and write what it returns -- as one atomic step: no other write to
        ``key`` lands between the read and the write. ``decide`` may be called
        more than once (a backend retries when it lost a race) and must not
        use the store itself. ``True`` if a value was written."""

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
    #: where the store lives (a backend's ``from_url`` sets it): named, password
    #: masked, in the operator's messages -- never on a page
    url: str | None = None

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """The one boundary where backend errors become a 503 (fail closed).
        The error carries the store's URL, masked (``store_url``), for the log
        and the CLI; the page shows only the generic description."""
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable(store_url=mask_url(self.url) if self.url else None) from exc

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
